"""Model files: save/load round trip for every registered model and a small model of our own,
files in mfrec 0.1's layout, each corrupt-file case, the pickle-free guarantee, and issue 13: the
file as untrusted input (out-of-range user_items_, memory bombs, silently wrong states, malformed
headers, all ModelFileError) and saving (regular files only, symlinks followed, umask modes,
stale temporary files, kill -9)."""
import inspect
import io
import json
import os
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import mfrec
from mfrec import FactorModel, Ratings
from mfrec.models import MODELS, get_model_class
from mfrec.data import Vocabulary
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
    m = Tiny().fit(Ratings.from_ids(np.array(["1", "2"], dtype=object), [0, 1], [1.0, 2.0]))
    # Ratings refuses mixed ids now; a vocabulary set by hand is still refused at save
    m.user_vocab_ = Vocabulary(np.array([1, "1"], dtype=object), name="user")
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
    load_error(tmp_path / "c", "corrupted: entry 'attr.user_factors_.npy'.*(checksum|CRC)")


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
    load_error(p, "array 'attr.item_bias_' has dtype object, which a model file never holds")


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
    load_error(p, "user_bias_ must be an array")
    p = rewrite(saved, tmp_path / "s2", replace={"attr.user_bias_.npy": npy(np.zeros(1))})
    load_error(p, r"inconsistent: user_bias_ has shape \(1,\); the factors give 20 \(users\)")


# ---------------------------------------------------------------------- helpers for crafted files
def npy(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def raw_zip(path, members, *, tail=b""):
    """A zip written byte by byte, so that sizes, methods and offsets can lie.

    ``members``: list of dicts with ``name``, ``data`` (the stored bytes) and optional
    ``method`` (0 stored, 8 deflated), ``size`` (declared uncompressed size), ``crc`` and
    ``offset`` (the local header offset the directory declares)."""
    out = bytearray()
    central = bytearray()
    for m in members:
        name = m["name"].encode()
        data = m["data"]
        crc = m.get("crc", zlib.crc32(data))
        size = m.get("size", len(data))
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, m.get("method", 0), 0, 0, crc,
                           len(data), size & 0xFFFFFFFF, len(name), 0) + name + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, m.get("method", 0), 0,
                               0, crc, len(data), size & 0xFFFFFFFF, len(name), 0, 0, 0, 0, 0,
                               m.get("offset", offset)) + name
    start = len(out)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                                 len(central), start, 0) + tail
    Path(path).write_bytes(bytes(out))
    return Path(path)


def write_v01(model, path):
    """A model file exactly as mfrec 0.1 wrote it (zip of .npy members, JSON header), built
    here from the format's description so that the test does not depend on today's save."""
    def enc(v):
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x) for x in v]}
        if isinstance(v, dict):
            return {"__dict__": {k: enc(x) for k, x in v.items()}}
        if isinstance(v, list):
            return [enc(x) for x in v]
        return v.item() if isinstance(v, np.generic) else v

    arrays, attrs = {}, {}
    for name, v in vars(model).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        key = f"attr.{name}"
        if isinstance(v, np.ndarray):
            arrays[key], attrs[name] = v, {"kind": "array", "key": key}
        elif isinstance(v, np.generic):
            arrays[key], attrs[name] = np.asarray(v), {"kind": "scalar", "key": key}
        elif isinstance(v, Vocabulary):
            strs = v.ids.dtype.kind == "O"
            arrays[key] = v.ids.astype(str) if strs else v.ids
            attrs[name] = {"kind": "vocabulary", "key": key, "name": v.name,
                           "ids": "object-str" if strs else "native"}
        elif sp.issparse(v):
            for part in ("data", "indices", "indptr"):
                arrays[f"{key}.{part}"] = getattr(v, part)
            attrs[name] = {"kind": "sparse", "key": key, "format": v.format,
                           "shape": list(v.shape), "array_api": False}
        else:
            attrs[name] = {"kind": "json", "value": enc(v)}
    header = {"format": "mfrec-model", "format_version": 1, "mfrec_version": "0.1.0",
              "class": type(model).__name__, "module": type(model).__module__,
              "params": {k: enc(v) for k, v in model.get_params().items()},
              "attributes": attrs, "private": {}, "notes": [],
              "created": "2026-01-01T00:00:00+00:00"}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(HEADER, json.dumps(header, indent=1))
        for key, arr in arrays.items():
            with zf.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    return Path(path)


def test_files_written_by_mfrec_01_still_load(tmp_path, data):
    # the 0.1 layout, for our own model and a registered one, loads and predicts as saved
    m = Tiny(n_factors=3, random_state=4).fit(data)
    back = mfrec.load(write_v01(m, tmp_path / "old.mfrec"), classes=[Tiny])
    assert_same_model(m, back, data)
    als = mfrec.ALS(n_factors=2, n_epochs=2, random_state=0).fit(data)
    back = mfrec.load(write_v01(als, tmp_path / "als.mfrec"))
    assert_same_model(als, back, data)
    # and today's save writes the same members and header fields as 0.1
    with zipfile.ZipFile(write_v01(m, tmp_path / "a")) as za, \
            zipfile.ZipFile(m.save(tmp_path / "b")) as zb:
        assert za.namelist() == zb.namelist()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zb.infolist())
        ha, hb = json.loads(za.read(HEADER)), json.loads(zb.read(HEADER))
        assert set(ha) == set(hb) and ha["attributes"] == hb["attributes"]


# ---------------------------------------------------------------------- issue 13, items 1-4
def csr_parts(saved):
    with np.load(saved) as z:
        return {p: z[f"attr.user_items_.{p}.npy".removesuffix(".npy")]
                for p in ("data", "indices", "indptr")}


def user_items_cases(saved, tmp_path):
    """Files whose user_items_ would send the kernels out of bounds (they segfaulted)."""
    parts = csr_parts(saved)
    ptr, ind = parts["indptr"].astype(np.int64), parts["indices"].astype(np.int64)
    nnz = ind.size
    bad = {
        "indptr_2p40": ("indptr", np.r_[ptr[:-1], 2**40]),
        "indptr_big_middle": ("indptr", np.r_[ptr[:3], 2**40, ptr[4:]]),
        "indptr_negative": ("indptr", np.r_[ptr[:3], -5, ptr[4:]]),
        "indptr_not_monotone": ("indptr", np.r_[0, nnz, ptr[2:]]),
        "indptr_start": ("indptr", ptr + 1),
        "indptr_short": ("indptr", ptr[:-1]),
        "indices_big": ("indices", np.full(nnz, 10**9)),
        "indices_negative": ("indices", np.full(nnz, -10**9)),
        "indices_float": ("indices", ind.astype(float)),
        "data_nan": ("data", np.full(nnz, np.nan, np.float32)),
    }
    out = {}
    for label, (part, arr) in bad.items():
        out[label] = rewrite(saved, tmp_path / label,
                             replace={f"attr.user_items_.{part}.npy": npy(arr)})
    return out


EXPECTED_USER_ITEMS = {
    "indptr_2p40": "indptr from 0 to 1099511627776; expected 0 to",
    "indptr_big_middle": "decreasing indptr",
    "indptr_negative": "decreasing indptr",
    "indptr_not_monotone": "decreasing indptr",
    "indptr_start": "indptr from 1 to",
    "indptr_short": "array 'attr.user_items_.indptr' has 20 entries; expected 21",
    "indices_big": "indices from 1000000000 to 1000000000; expected 0 to 29",
    "indices_negative": "indices from -1000000000",
    "indices_float": "attr.user_items_.indices' has dtype float64; expected a signed integer",
    "data_nan": "user_items_ .*NaN or infinite",
}


def test_out_of_range_user_items_are_refused(saved, tmp_path):
    # issue 13.1: each of these crashed recommend/fold_in with a segfault after loading
    for label, p in user_items_cases(saved, tmp_path).items():
        load_error(p, EXPECTED_USER_ITEMS[label])


CRASH_PROBE = r"""
import resource, sys
import numpy as np
import mfrec
from mfrec.persist import ModelFileError
from mfrec.kernels import topn  # noqa: F401 - Numba and LLVM are mapped before the cap
import llvmlite.binding
llvmlite.binding.ffi.lib
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) << 10
lim = vm + (1536 << 20)  # from here the process may not grow by more than 1.5 GB
resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
for path in sys.argv[1:]:
    try:
        m = mfrec.load(path)
    except ModelFileError as exc:
        print("refused", path, flush=True)
        continue
    users = m.user_vocab_.ids[:3]
    m.recommend(users, n=5)
    m.recommend(users, n=5, items=m.item_vocab_.ids[:10])
    m.fold_in({m.item_vocab_.ids[0]: 1.0, m.item_vocab_.ids[1]: 0.0})
    print("loaded", path, flush=True)
"""


def test_crashing_files_fail_cleanly_in_a_subprocess(saved, tmp_path):
    # issue 13.1 and 13.2 run where a crash cannot take the test runner down: the segfault
    # cases (as a BPR model, whose fold_in read user_items_) and the memory bombs, under a
    # 1.5 GB address-space cap; every bad file must be refused, the good one must serve
    def as_bpr(h):
        h["class"], h["params"] = "BPR", {"n_epochs": 1, "random_state": 0}
    bpr = rewrite(saved, tmp_path / "bpr.mfrec", header=as_bpr)
    bad = list(user_items_cases(bpr, tmp_path).values()) + list(bombs(bpr, tmp_path).values())
    r = subprocess.run([sys.executable, "-c", CRASH_PROBE, str(bpr), *map(str, bad)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[0] == f"loaded {bpr}"
    assert lines[1:] == [f"refused {p}" for p in bad]


def bombs(saved, tmp_path):
    """Small files that promise huge members or headers (issue 13.2)."""
    with zipfile.ZipFile(saved) as z:
        members = [{"name": i.filename, "data": z.read(i.filename)} for i in z.infolist()]
    out = {}
    # a deflated member of 2 GiB zeros in a file of about 2 MB: a full flush makes each 64 MiB
    # block compress to the same bytes, so the stream is one block repeated
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 24)) + c.flush(zlib.Z_FULL_FLUSH)
    stream = block * 128 + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    head = np.lib.format.header_data_from_array_1_0(np.zeros((1 << 29, 1), np.float32))
    hbuf = io.BytesIO()
    np.lib.format.write_array_header_1_0(hbuf, head)
    zipped = [dict(m) for m in members]
    for m in zipped:
        if m["name"] == "attr.user_factors_.npy":
            m.update(data=stream, method=8, size=(1 << 31), crc=0)
    out["deflate_bomb_2gib"] = raw_zip(tmp_path / "bomb.zip", zipped)
    # a stored member declaring 4 GiB (the most a plain zip field holds) the file does not hold
    lying = [dict(m) for m in members]
    for m in lying:
        if m["name"] == "attr.user_factors_.npy":
            m.update(size=0xFFFFFFF0)
    out["stored_4gib"] = raw_zip(tmp_path / "lie.zip", lying)
    # an .npy header promising 1e12 elements in a small member
    big = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), np.float32))
    big["shape"] = (10**6, 10**6)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, big)
    out["npy_1e12"] = rewrite(saved, tmp_path / "npy.mfrec",
                              replace={"attr.user_factors_.npy": buf.getvalue() + bytes(64)})
    # a header member declaring 4 GiB
    hdr = [dict(m) for m in members]
    for m in hdr:
        if m["name"] == HEADER:
            m.update(size=0xFFFFFFF0)
    out["header_4gib"] = raw_zip(tmp_path / "hdr.zip", hdr)
    # two directory entries pointing at the same data: each read would allocate it again
    dup = members + [dict(next(m for m in members if m["name"] == "attr.user_factors_.npy"),
                          name="attr.extra_copy_.npy")]
    path = raw_zip(tmp_path / "dup.zip", dup)
    raw = bytearray(path.read_bytes())
    # point the copy's directory entry at the original's local header
    with zipfile.ZipFile(path) as z:
        orig = z.getinfo("attr.user_factors_.npy").header_offset
    cd = raw.rindex(b"PK\x01\x02")
    struct.pack_into("<L", raw, cd + 42, orig)
    path.write_bytes(bytes(raw))
    out["overlapping_members"] = path
    # a directory declaring a million entries
    tail_path = raw_zip(tmp_path / "many.zip", members)
    raw = bytearray(tail_path.read_bytes())
    struct.pack_into("<HH", raw, len(raw) - 22 + 8, 0xFFFF, 0xFFFF)
    tail_path.write_bytes(bytes(raw))
    out["huge_directory"] = tail_path
    return out


EXPECTED_BOMBS = {
    "deflate_bomb_2gib": "'attr.user_factors_.npy' is compressed \\(method 8\\)",
    "stored_4gib": "declares 4294967280 bytes but stores",
    "npy_1e12": "declares 1000000000000 elements of float32 \\(4000000000000 bytes\\) but the "
                "file stores 64 bytes",
    "header_4gib": "mfrec.json' declares 4294967280 bytes but stores",
    "overlapping_members": "overlapping another member",
    "huge_directory": "declares 65535 members",
}


def test_memory_bombs_are_refused_before_allocating(saved, tmp_path):
    # issue 13.2: every size is checked against the file before anything is allocated; the
    # subprocess test above runs the same files under a 1.5 GB address-space cap
    for label, p in bombs(saved, tmp_path).items():
        assert p.stat().st_size < 3 << 20, label
        load_error(p, EXPECTED_BOMBS[label])


def test_silently_wrong_states_are_refused(saved, tmp_path):
    # issue 13.3: each of these loaded and then served padding or NaN
    n_users, n_items = 20, 30
    cases = {
        "attr.item_factors_.npy": [
            (np.zeros((n_items, 1), np.float32), "user factors have 2 columns, item factors 1"),
            (np.zeros((n_items, 2, 1), np.float32), "expected 2 dimension"),
            (np.zeros(n_items, np.float32), "expected 2 dimension"),
            (np.zeros((n_items, 2), np.complex64), "has dtype complex64; expected a float"),
            (np.full((n_items, 2), "x"), "has dtype <U1; expected a float"),
            (np.zeros((n_items, 2), np.int64), "has dtype int64; expected a float"),
            (np.zeros((n_items, 2), np.float16), "expected float32 or float64"),
            (np.zeros((n_items + 1, 2), np.float32), "item_vocab_ has 30 ids for 31 factor"),
            (np.full((n_items, 2), np.nan, np.float32), "item_factors_ holds NaN or infinite"),
            (np.full((n_items, 2), np.inf, np.float32), "item_factors_ holds NaN or infinite"),
            # finite, but scores computed in float32 would overflow to inf (found by fuzzing)
            (np.full((n_items, 2), 3e38, np.float32), "make scores overflow float32"),
            (np.full((n_items, 2), 1e19, np.float32), "they reach 2e\+38; at most 1e\+37"),
        ],
        "attr.user_bias_.npy": [
            (np.r_[np.zeros(n_users - 1), np.nan], "user_bias_ holds NaN or infinite"),
            (np.zeros((n_users, 1)), "user_bias_ has shape \\(20, 1\\)"),
            (np.array(["a"] * n_users), "has dtype <U1; expected a float"),
        ],
        "attr.item_bias_.npy": [(np.full(n_items, -np.inf), "item_bias_ holds NaN")],
        "attr.user_vocab_.npy": [(np.array([f"u{k}" for k in range(n_users - 1)]),
                                  "user_vocab_ has 19 ids for 20 factor rows"),
                                 (np.array(["same"] * n_users), "user_vocab_ is invalid"),
                                 (np.zeros(n_users, np.complex128), "which the 'object-str'")],
        "attr.n_seen_.npy": [(np.float64(np.nan), "n_seen_ is nan"),
                             (np.zeros(2), "expected 0 dimension")],
    }
    k = 0
    for member, bad in cases.items():
        for arr, match in bad:
            k += 1
            load_error(rewrite(saved, tmp_path / f"w{k}", replace={member: npy(arr)}), match)

    def field(name, value):
        def edit(h):
            h["attributes"][name] = {"kind": "json", "value": value}
        return edit
    for name, value, match in [
            ("rating_range_", {"__tuple__": [5.0, 1.0]}, "low <= high, got \\(5.0, 1.0\\)"),
            ("rating_range_", {"__tuple__": [1.0, float("nan")]}, "rating_range_ must be two"),
            ("rating_range_", {"__tuple__": [1.0, "5"]}, "rating_range_ must be two"),
            ("rating_range_", {"__tuple__": [1.0]}, "rating_range_ must be two"),
            ("global_mean_", float("inf"), "global_mean_ must be a finite number"),
            ("global_mean_", "3.5", "global_mean_ must be a finite number"),
            ("global_mean_", True, "global_mean_ must be a finite number")]:
        k += 1
        load_error(rewrite(saved, tmp_path / f"w{k}", header=field(name, value)), match)


def test_malformed_headers_raise_model_file_error(saved, tmp_path):
    # issue 13.4: RecursionError, AttributeError and MemoryError became ModelFileError
    with zipfile.ZipFile(saved) as z:
        text = z.read(HEADER).decode()
    deep = text.replace('"params": {', '"params": {"x": ' + "[" * 100_000 + "]" * 100_000
                        + ", ", 1)
    assert '"notes": []' in text
    deep_obj = text.replace('"notes": []', '"notes": [' + '{"a": ' * 5000 + "1" + "}" * 5000
                            + "]", 1)
    strings = text.replace('"notes": []', '"notes": ["' + "[" * 100_000 + '"]', 1)
    for k, (raw, match) in enumerate([
            (deep, "nested 100002 levels deep; a model header nests at most 32"),
            (deep_obj, "nested 500[0-9] levels deep"),
            (text.replace('"notes": []', '"notes": ["' + "x" * (17 << 20) + '"]', 1),
             "has a 1782[0-9]{4}-byte header; a model header has at most 16777216 bytes"),
            ("[1, 2]", "not an mfrec model file \\(format None\\)"),
            ('{"format": "mfrec-model", "format_version": true}', "invalid format version"),
            ('{"format": "mfrec-model", "format_version": 1, "class": ["BPR"]}',
             "header field 'class' must be a JSON string, got list"),
            ("\xff\xfe", "unreadable header"),
            ('{"format": "mfrec-model", "format_version": 1, "x": ' + "1" * 5000 + "}",
             "unreadable header")]):
        load_error(rewrite(saved, tmp_path / f"h{k}", replace={HEADER: raw.encode(
            "utf-8", "surrogateescape") if isinstance(raw, str) else raw}), match)
    # brackets inside strings are not nesting
    assert mfrec.load(rewrite(saved, tmp_path / "s", replace={HEADER: strings.encode()}),
                      classes=[Tiny]).n_users_ == 20

    def put(path_, value):
        def edit(h):
            node = h
            for key in path_[:-1]:
                node = node[key]
            node[path_[-1]] = value
        return edit
    for k, (where, value, match) in enumerate([
            (["attributes"], [], "header field 'attributes' must be a JSON object, got list"),
            (["params"], [1, 2], "header field 'params' must be a JSON object, got list"),
            (["private"], "x", "header field 'private' must be a JSON object"),
            (["attributes", "user_factors_"], [1], "invalid attribute entry 'user_factors_'"),
            (["attributes", "extra_", "value"], {"__tuple__": 5}, "unexpected object"),
            (["attributes", "extra_", "value"], {"__dict__": [1]}, "unexpected object"),
            (["params", "tags"], {"a": 1}, "unexpected object"),
            (["attributes", "user_factors_", "key"], "attr.item_factors_",
             "has key 'attr.item_factors_'; expected 'attr.user_factors_'"),
            (["attributes", "user_factors_", "kind"], "pickle", "unknown kind 'pickle'"),
            (["attributes", "user_vocab_", "ids"], "eval", "invalid id encoding 'eval'"),
            (["attributes", "user_vocab_", "ids"], [], "invalid id encoding \\[\\]"),
            (["attributes", "user_items_", "shape"], [1e12, 3], "not a valid sparse matrix"),
            (["attributes", "user_items_", "shape"], [21, 30], "user_items_ has shape"),
            (["attributes", "user_items_", "format"], "coo", "not a valid sparse matrix"),
            (["attributes", "user_items_", "format"], "csc", "must be a CSR sparse matrix"),
            (["private", "_clip_predictions"], "yes", "must be true or false"),
            (["params", "n_factors"], None, None)]):
        if match is None:  # Tiny has no hyperparameter checks: a None n_factors loads
            continue
        load_error(rewrite(saved, tmp_path / f"p{k}", header=put(where, value)), match)
    p = rewrite(saved, tmp_path / "gone", header=lambda h: h["attributes"].pop("user_items_"))
    load_error(p, "incomplete: it has no user_items_")
    p = rewrite(saved, tmp_path / "noise", header=lambda h: h["attributes"].update(
        user_noise_scale_={"kind": "json", "value": [1.0]}))
    load_error(p, "user_noise_scale_ must be an array")


def test_clip_flag_only_where_the_model_stores_it(tmp_path, data):
    # SVD computes _clip_predictions from its `missing` parameter: a file cannot set it
    m = mfrec.SVD(n_factors=2).fit(data)
    p = rewrite(m.save(tmp_path / "s.mfrec"), tmp_path / "c",
                header=lambda h: h["private"].update(_clip_predictions=False))
    load_error(p, "'_clip_predictions' must be true or false, for a model that stores it; "
                  "got False for a SVD")


def test_hyperparameters_are_validated_at_load(tmp_path, data):
    # a file's hyperparameters reach fold_in and the thread pool: they get fit's checks
    m = mfrec.ALS(n_factors=2, n_epochs=2, random_state=0).fit(data)
    p = rewrite(m.save(tmp_path / "a.mfrec"), tmp_path / "b",
                header=lambda h: h["params"].update(num_threads="all"))
    load_error(p, "invalid ALS hyperparameters \\(.*num_threads")


def test_non_regular_files_are_not_opened_for_loading(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer: it must not
    load_error(fifo, "is a FIFO \\(named pipe\\), not a model file")
    load_error("/dev/null", "is a character device, not a model file")


# ---------------------------------------------------------------------- saving (issue 13.5)
def test_save_refuses_devices_fifos_and_folders(tmp_path, data):
    m = Tiny().fit(data)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="it is a FIFO \\(named pipe\\); mfrec's files are "
                                         "written only to regular files"):
        m.save(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(ValueError, match="'/dev/null'.*character device"):
        m.save("/dev/null")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)  # still the device, not a file
    link = tmp_path / "null-link"
    link.symlink_to("/dev/null")
    with pytest.raises(ValueError, match="a link to '/dev/null'.*character device"):
        m.save(link)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode) and link.is_symlink()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        m.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        m.save(tmp_path / "no" / "m.mfrec")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null-link", "pipe"]


def test_save_follows_symlinks(tmp_path, data):
    m = Tiny().fit(data)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.mfrec"
    target.write_bytes(b"old")
    link = tmp_path / "link.mfrec"
    link.symlink_to(Path("real") / "model.mfrec")  # a relative link
    assert m.save(link) == link
    assert link.is_symlink() and os.readlink(link) == str(Path("real") / "model.mfrec")
    assert mfrec.load(link, classes=[Tiny]).n_users_ == 20
    assert mfrec.load(target, classes=[Tiny]).n_users_ == 20
    # a dangling link gets its target created
    dangling = tmp_path / "dangling.mfrec"
    dangling.symlink_to(tmp_path / "real" / "new.mfrec")
    m.save(dangling)
    assert dangling.is_symlink() and (tmp_path / "real" / "new.mfrec").is_file()
    assert not [p for p in tmp_path.rglob(".*.tmp")]


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def test_saved_files_get_the_umask_mode(tmp_path, data, umask):
    m = Tiny().fit(data)
    umask(0o022)
    assert stat.S_IMODE(os.stat(m.save(tmp_path / "a")).st_mode) == 0o644
    umask(0o077)
    assert stat.S_IMODE(os.stat(m.save(tmp_path / "b")).st_mode) == 0o600
    umask(0o002)
    assert stat.S_IMODE(os.stat(m.save(tmp_path / "c")).st_mode) == 0o664
    # a replaced file keeps its own mode
    os.chmod(tmp_path / "a", 0o640)
    assert stat.S_IMODE(os.stat(m.save(tmp_path / "a")).st_mode) == 0o640


def test_stale_temporary_files_are_cleaned_up(tmp_path, data):
    import fcntl
    m = Tiny().fit(data)
    stale = [tmp_path / ".m.mfrec.k3x9_0ab.tmp", tmp_path / ".m.mfrec.zzzzzzzz.tmp"]
    keep = [tmp_path / ".m.mfrec.short.tmp", tmp_path / ".other.mfrec.k3x9_0ab.tmp",
            tmp_path / "m.mfrec.k3x9_0ab.tmp", tmp_path / ".m.mfrec.k3x9_0ab.tmp.bak",
            tmp_path / ".m.mfrec.ABCDEFGH.tmp"]
    for p in stale + keep:
        p.write_bytes(b"partial")
    live = tmp_path / ".m.mfrec.livesave.tmp"  # a concurrent saver holds its lock
    live.write_bytes(b"writing")
    link = tmp_path / ".m.mfrec.symlink1.tmp"  # not ours: a symbolic link is never removed
    link.symlink_to(tmp_path / "m.mfrec.k3x9_0ab.tmp")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        m.save(tmp_path / "m.mfrec")
        assert live.exists()
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep) and link.is_symlink()
    m.save(tmp_path / "m.mfrec")  # the lock is gone now: so is the file
    assert not live.exists()


KILL_PROBE = r"""
import sys, numpy as np, mfrec
from mfrec import ALS, Ratings
rng = np.random.default_rng(0)
n = 200_000
r = Ratings.from_ids(rng.integers(0, 20_000, n), rng.integers(0, 5_000, n), np.ones(n),
                     duplicates="last")
m = ALS(n_factors=32)
m._set_data_state(r)
m._set_factor_state(rng.random((r.n_users, 32), np.float32),
                    rng.random((r.n_items, 32), np.float32))
print("ready", flush=True)
while True:
    m.save(sys.argv[1])
"""


def test_kill_9_during_save_leaves_no_torn_file_and_no_lasting_temp(tmp_path):
    # a few kill -9s at random moments of a save loop: the file under the final name always
    # loads, and the next save removes the temporaries the killed savers left
    target = tmp_path / "m.mfrec"
    rng = np.random.default_rng(13)
    left = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_PROBE, str(target)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.4 * rng.random())
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        if target.exists():
            assert mfrec.load(target).n_users_ > 0
        left += len(list(tmp_path.glob(".m.mfrec.*.tmp")))
    print(f"temporary files left by the kills: {left}")
    back = mfrec.load(target)
    back.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mfrec"]


@pytest.mark.parametrize("text, depth", [
    ("1", 0), ("{}", 1), ("[[], {}]", 2), ('"[[["', 0), ('["\\\\", [1]]', 2),
    ('["\\"[", [[2]]]', 3), ('{"a": {"b": ["}}}"]}}', 3), ('["a\\\\\\"[[["]', 1),
    ('{"k": [[{"x": "]]]"}]]}', 4)])
def test_json_depth_ignores_brackets_in_strings(text, depth):
    from mfrec.persist import _json_depth
    json.loads(text)  # every case is valid JSON
    assert _json_depth(text.encode()) == depth
