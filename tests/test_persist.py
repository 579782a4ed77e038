"""Model files: save/load round trip for every registered model and a small model of our own,
each corrupt-file case, the pickle-free guarantee and atomic writes."""
import inspect
import json
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

import mfrec
from mfrec import FactorModel, Ratings
from mfrec.models import MODELS, get_model_class
from mfrec.persist import FORMAT_VERSION, HEADER, ModelFileError, read_header


class Tiny(FactorModel):
    """Biases plus a rank-k SVD of the dense residual: small, exact, no Numba."""

    def __init__(self, *, n_factors=2, regularization=1.0, random_state=None, tags=("a", 1)):
        self.n_factors = n_factors
        self.regularization = regularization
        self.random_state = random_state
        self.tags = tags

    def fit(self, data):
        r = self._prepare(data)
        mu = float(r.values.mean())
        resid = r.values - mu
        bu = np.bincount(r.user_index, resid, r.n_users) / (r.user_counts() + self.regularization)
        bi = np.bincount(r.item_index, resid - bu[r.user_index], r.n_items) / (
            r.item_counts() + self.regularization)
        dense = np.zeros(r.shape)
        dense[r.user_index, r.item_index] = resid - bu[r.user_index] - bi[r.item_index]
        U, S, Vt = np.linalg.svd(dense, full_matrices=False)
        k = self.n_factors
        self._set_data_state(r)
        self._set_factor_state((U[:, :k] * S[:k]).astype(np.float32),
                               Vt[:k].T.astype(np.float32), bu, bi, mu)
        self.loss_history_ = [float(np.mean(dense ** 2))]
        self.extra_ = {"note": "dict", "pair": (1, 2.5)}
        self.n_seen_ = np.int64(r.nnz)
        return self


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n = 150
    users = np.array([f"user{k}" for k in rng.integers(0, 20, n)], dtype=object)
    items = np.array([f"item-{k}" for k in rng.integers(0, 30, n)], dtype=object)
    return Ratings.from_ids(users, items, rng.integers(1, 6, n).astype(float), duplicates="last")


def assert_same_model(a, b, data):
    assert type(a) is type(b)
    assert a.get_params() == b.get_params()
    users = np.r_[data.user_vocab.ids, ["nobody"]]
    items = np.r_[data.item_vocab.ids, ["nothing"]]
    uu, ii = np.repeat(users, items.size), np.tile(items, users.size)
    assert np.array_equal(a.predict(uu, ii), b.predict(uu, ii))
    known = data.user_vocab.ids[:7]
    ra, rb = a.recommend(known, n=5), b.recommend(known, n=5)
    assert np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1])
    sa, sb = a.similar_items(data.item_vocab.ids[:3], n=4), b.similar_items(data.item_vocab.ids[:3],
                                                                           n=4)
    assert np.array_equal(sa[0], sb[0]) and np.array_equal(sa[1], sb[1])
    for name, value in vars(a).items():
        if name.endswith("_") and not name.startswith("_"):
            other = getattr(b, name)
            if isinstance(value, np.ndarray):
                assert value.dtype == other.dtype and np.array_equal(value, other), name
            elif sp.issparse(value):
                assert (value != other).nnz == 0 and value.format == other.format, name
            else:
                assert value == other and type(value) is type(other), name


def test_round_trip_own_model(tmp_path, data):
    # a loaded model predicts, recommends and looks exactly as the saved one
    m = Tiny(n_factors=3, random_state=4).fit(data)
    path = m.save(tmp_path / "tiny.mfrec")
    assert path.exists() and not list(tmp_path.glob(".*tmp"))
    back = mfrec.load(path, classes=[Tiny])
    assert_same_model(m, back, data)
    assert back.tags == ("a", 1) and back.extra_["pair"] == (1, 2.5)
    assert isinstance(back.n_seen_, np.int64)
    assert back.user_vocab_.ids.dtype == object and back.user_vocab_.ids[0] == "user0"
    # the file is an ordinary npz with a JSON header
    with np.load(path, allow_pickle=False) as z:
        assert "attr.user_factors_" in z.files
    head = read_header(path)
    assert head["class"] == "Tiny" and head["format_version"] == FORMAT_VERSION
    assert head["params"]["n_factors"] == 3 and head["mfrec_version"] == mfrec.__version__


def test_round_trip_int_and_float_ids(tmp_path):
    for ids in (np.array([3, 9, 12]), np.array([0.5, 1.5, 2.5])):
        r = Ratings.from_ids(np.repeat(ids, 3), np.tile(ids, 3), np.arange(1, 10.0))
        m = Tiny(n_factors=1).fit(r)
        back = mfrec.load(m.save(tmp_path / "m.bin"), classes=[Tiny])
        assert back.user_vocab_.ids.dtype == ids.dtype
        assert np.array_equal(back.predict(ids, ids[::-1]), m.predict(ids, ids[::-1]))


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_every_registered_model(tmp_path, data, name):
    try:
        cls = get_model_class(name)
    except ImportError:
        pytest.skip(f"model {name} is not in this installation yet")
    defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()}
    params = {"random_state": 0} if "random_state" in defaults else {}
    if isinstance(defaults.get("n_epochs"), int):  # a few epochs: the state is what matters
        params["n_epochs"] = 6
    if "burn_in" in defaults:
        params["burn_in"] = 2
    m = cls(**params).fit(data)
    back = mfrec.load(m.save(tmp_path / f"{name}.mfrec"))
    assert_same_model(m, back, data)


def test_generator_random_state_is_noted(tmp_path, data):
    m = Tiny(random_state=np.random.default_rng(1)).fit(data)
    path = m.save(tmp_path / "g.mfrec")
    assert read_header(path)["notes"] == [
        "random_state was a numpy random generator; saved as None"]
    assert mfrec.load(path, classes=[Tiny]).random_state is None


def test_unsavable_things_are_named(tmp_path, data):
    m = Tiny(tags=lambda x: x).fit(data)
    with pytest.raises(TypeError, match="hyperparameter tags is a function"):
        m.save(tmp_path / "x")
    m = Tiny().fit(data)
    m.weird_ = object()
    with pytest.raises(TypeError, match="attribute weird_ is a object"):
        m.save(tmp_path / "x")
    m = Tiny().fit(Ratings.from_ids(np.array([1, "1"], dtype=object), [0, 1], [1.0, 2.0]))
    with pytest.raises(TypeError, match="mixes id types"):
        m.save(tmp_path / "x")
    with pytest.raises(mfrec.NotFittedError):
        Tiny().save(tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_write_is_atomic(tmp_path, data, monkeypatch):
    # a failure half-way leaves the previous file intact and no temporary file behind
    m = Tiny().fit(data)
    path = m.save(tmp_path / "m.mfrec")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        Tiny(n_factors=1).fit(data).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.mfrec"]


# ---------------------------------------------------------------------- corrupt files
@pytest.fixture
def saved(tmp_path, data):
    return Tiny().fit(data).save(tmp_path / "good.mfrec")


def rewrite(src, dst, *, header=None, replace=None, drop=()):
    """Copy a model zip, editing the header dict and replacing or dropping entries."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            raw = zin.read(info.filename)
            if info.filename == HEADER and header is not None:
                h = json.loads(raw)
                header(h)
                raw = json.dumps(h).encode()
            if replace and info.filename in replace:
                raw = replace[info.filename]
            zout.writestr(info.filename, raw)
    return dst


def load_error(path, match, exc=ModelFileError):
    with pytest.raises(exc, match=match):
        mfrec.load(path, classes=[Tiny])


def test_missing_and_empty_files(tmp_path):
    load_error(tmp_path / "nope.mfrec", "no such model file", FileNotFoundError)
    (tmp_path / "empty").write_bytes(b"")
    load_error(tmp_path / "empty", "not an mfrec model file.*empty")
    load_error(tmp_path, "is a folder", IsADirectoryError)


def test_foreign_files(tmp_path):
    (tmp_path / "a.csv").write_text("user,item,rating\n1,2,3\n")
    load_error(tmp_path / "a.csv", "not a zip archive")
    np.save(tmp_path / "a.npy", np.arange(3))
    load_error(tmp_path / "a.npy", "not a zip archive")
    np.savez(tmp_path / "b.npz", x=np.arange(3))
    load_error(tmp_path / "b.npz", "not an mfrec model file \\(no mfrec.json header\\)")
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.writestr(HEADER, json.dumps({"format": "something-else"}))
    load_error(tmp_path / "c.zip", "not an mfrec model file \\(format 'something-else'\\)")


def test_truncated_file(saved, tmp_path):
    raw = saved.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 10, 100):
        (tmp_path / "t").write_bytes(raw[:cut])
        load_error(tmp_path / "t", "truncated or corrupted")


def test_flipped_byte_fails_checksum(saved, tmp_path):
    raw = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("attr.user_factors_.npy")
    pos = info.header_offset + 30 + len(info.filename) + 200  # inside the array data
    raw[pos] ^= 0xFF
    (tmp_path / "c").write_bytes(bytes(raw))
    load_error(tmp_path / "c", "corrupted: entry 'attr.user_factors_.npy' fails its checksum")


def test_newer_format_is_refused(saved, tmp_path):
    def newer(h):
        h["format_version"] = FORMAT_VERSION + 1
        h["mfrec_version"] = "9.0"
    p = rewrite(saved, tmp_path / "n", header=newer)
    load_error(p, f"written by mfrec 9.0 in model format {FORMAT_VERSION + 1}.*Upgrade mfrec")


def test_unknown_class_is_refused(saved, tmp_path):
    def evil(h):
        h["class"] = "Popen"
        h["module"] = "subprocess"
    p = rewrite(saved, tmp_path / "e", header=evil)
    load_error(p, "class 'Popen', which is not an mfrec model")
    # and our own class needs an explicit allowance
    with pytest.raises(ModelFileError, match="class 'Tiny'"):
        mfrec.load(saved)


def test_pickled_array_is_refused(saved, tmp_path):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    p = rewrite(saved, tmp_path / "p", replace={"attr.item_bias_.npy": buf.getvalue()})
    load_error(p, "array 'attr.item_bias_' is unreadable.*pickle")


def test_bad_header_and_missing_parts(saved, tmp_path):
    p = rewrite(saved, tmp_path / "h", replace={HEADER: b"{not json"})
    load_error(p, "unreadable header")
    p = rewrite(saved, tmp_path / "m", drop={"attr.item_factors_.npy"})
    load_error(p, "incomplete: array 'attr.item_factors_' is missing")

    def unknown_param(h):
        h["params"]["momentum"] = 0.9
    p = rewrite(saved, tmp_path / "u", header=unknown_param)
    load_error(p, "hyperparameters do not fit")

    def shadow(h):
        h["attributes"]["n_users_"] = {"kind": "json", "value": 3}
    p = rewrite(saved, tmp_path / "p2", header=shadow)
    load_error(p, "invalid attribute entry 'n_users_'")

    def shrink(h):
        h["attributes"]["user_bias_"] = {"kind": "json", "value": [0.0]}
    p = rewrite(saved, tmp_path / "s", header=shrink)
    load_error(p, "inconsistent: user_bias_ has 1 entries")
