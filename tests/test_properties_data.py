"""Property-based tests of the data boundary: whatever frame, arrays, ids or file header comes
in, the result is either a Ratings that gives the input back, or a ValueError/TypeError that
names what is wrong. Never a crash, a silent cast or a wrong answer."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mfrec
from mfrec import Ratings, as_ratings
from mfrec.data import COLUMN_ALIASES, MAX_ABS_RATING, _normal_name
from mfrec.io import read_ratings

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

int_ids = st.integers(min_value=-2**40, max_value=2**40)
str_ids = st.text(alphabet="abcxyz019_", min_size=1, max_size=4)
ratings = st.one_of(st.integers(-10, 10).map(float),
                    st.floats(allow_nan=True, allow_infinity=True, width=64))


def _id_column(kind):
    return st.sampled_from([0, 1, 2, 7]) if kind == "small" else int_ids if kind == "int" \
        else str_ids


@st.composite
def frames(draw):
    n = draw(st.integers(1, 25))
    ukind, ikind = draw(st.sampled_from(["small", "int", "str"])), draw(
        st.sampled_from(["small", "int", "str"]))
    users = draw(st.lists(_id_column(ukind), min_size=n, max_size=n))
    items = draw(st.lists(_id_column(ikind), min_size=n, max_size=n))
    values = draw(st.lists(ratings, min_size=n, max_size=n))
    return pd.DataFrame({"user": users, "item": items, "rating": values})


def _valid_rating(x):
    with np.errstate(over="ignore"):
        x32 = np.float32(x)
    return bool(np.isfinite(x32) and abs(x32) <= MAX_ABS_RATING)


@SETTINGS
@given(frames(), st.sampled_from(["error", "last", "mean", "sum"]))
def test_frame_round_trip_or_named_error(df, policy):
    try:
        r = as_ratings(df, duplicates=policy)
    except ValueError as exc:
        msg = str(exc)
        bad_value = not all(_valid_rating(x) for x in df.rating)
        dup = df.duplicated(["user", "item"]).any()
        assert (bad_value and "ratings" in msg and "must be finite" in msg) or (
            dup and ("duplicate (user, item) pairs" in msg or "ratings merged by" in msg)), msg
        return
    assert all(_valid_rating(x) for x in df.rating)
    # what comes back is the input, merged by the policy, sorted by (user, item)
    grouped = df.groupby(["user", "item"], sort=True)["rating"]
    expected = {"error": grouped.last, "last": grouped.last, "mean": grouped.mean,
                "sum": grouped.sum}[policy]().astype(np.float32)
    back = r.to_frame()
    assert list(zip(back.user, back.item)) == list(expected.index)
    scale = max(1.0, float(np.abs(df.rating).max()))
    np.testing.assert_allclose(back.rating.to_numpy(), expected.to_numpy(), rtol=1e-5,
                               atol=1e-5 * scale)
    assert back.rating.dtype == np.float32 and r.csr.indices.dtype == np.int32
    # integer ids stay integers, strings strings
    for col in ("user", "item"):
        kind = r.user_vocab.kind if col == "user" else r.item_vocab.kind
        assert kind == ("int" if pd.api.types.is_integer_dtype(df[col]) else "str")


@SETTINGS
@given(st.lists(st.one_of(st.integers(0, 5), str_ids), min_size=1, max_size=12))
def test_id_lists_of_one_type_or_a_type_error(ids):
    kinds = {type(x) for x in ids}
    try:
        r = Ratings.from_ids(ids, list(range(len(ids))), [1.0] * len(ids), duplicates="sum")
    except TypeError as exc:
        assert len(kinds) > 1 and "user ids mix types" in str(exc)
        return
    assert len(kinds) == 1
    # every id looks itself up, and the other type is refused, not "unknown"
    np.testing.assert_array_equal(r.user_vocab.to_ids(r.user_vocab.lookup(ids)),
                                  np.asarray(ids))
    other = ["1"] if kinds == {int} else [1]
    with pytest.raises(TypeError, match="user ids given are"):
        r.user_vocab.lookup(other, unknown="mask")


@SETTINGS
@given(st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=30, unique=True),
       st.sampled_from([np.int32, np.int64, int]))
def test_integer_vocabularies_take_any_integer_width(ids, width):
    r = Ratings.from_ids(np.array(ids, dtype=np.int64), [0] * len(ids), [1.0] * len(ids))
    query = [width(x) for x in ids] if width is int else np.array(ids, dtype=width)
    np.testing.assert_array_equal(r.user_vocab.to_ids(r.user_vocab.lookup(query)), ids)


def _spelled(alias, upper, sep, at):
    word = "".join(c.upper() if up else c for c, up in zip(alias, upper))
    return word[:at] + sep + word[at:] if 0 < at < len(word) else word


def _spellings(role):
    # an alias written with random case and a separator: userId, USER_ID, User-Id ...
    return st.sampled_from(COLUMN_ALIASES[role]).flatmap(lambda a: st.builds(
        _spelled, st.just(a), st.lists(st.booleans(), min_size=len(a), max_size=len(a)),
        st.sampled_from(["", "_", "-", " "]), st.integers(0, len(a))))


@st.composite
def clean_frames(draw):
    """Valid ratings data: one id type per column, finite ratings within the bound, no
    repeated pairs (string ids start with a letter, or a file would read them as numbers)."""
    n = draw(st.integers(1, 25))
    cols = {}
    for col in ("user", "item"):
        ids = int_ids if draw(st.booleans()) else str_ids.map(lambda x: "k" + x)
        cols[col] = draw(st.lists(ids, min_size=n, max_size=n))
    cols["rating"] = draw(st.lists(st.floats(-MAX_ABS_RATING, MAX_ABS_RATING), min_size=n,
                                   max_size=n))
    return pd.DataFrame(cols).drop_duplicates(["user", "item"]).reset_index(drop=True)


@SETTINGS
@given(_spellings("user"), _spellings("item"), _spellings("rating"),
       st.permutations([0, 1, 2]), clean_frames())
def test_files_with_any_known_header_read_back(tmp_path_factory, u, i, r, order, df):
    names = [u, i, r]
    assume(len({_normal_name(n) for n in names}) == 3)
    cols = [names[k] for k in order]
    file_df = pd.DataFrame({n: df[c] for n, c in zip(names, ("user", "item", "rating"))})[cols]
    path = tmp_path_factory.mktemp("h") / "r.csv"
    file_df.to_csv(path, index=False, float_format="%.17g")
    got = read_ratings(path)
    assert got.source_columns == {"user": u, "item": i, "rating": r, "timestamp": None}
    assert got == as_ratings(df)


@SETTINGS
@given(st.lists(st.text(alphabet="qwjkv", min_size=1, max_size=6), min_size=3, max_size=3,
                unique=True))
def test_unknown_headers_are_refused_with_the_columns(tmp_path_factory, header):
    assume(not any(_normal_name(h) in {a for v in COLUMN_ALIASES.values() for a in v}
                   for h in header))
    path = tmp_path_factory.mktemp("w") / "r.csv"
    path.write_text(",".join(header) + "\n1,2,3\n")
    with pytest.raises(ValueError, match="cannot tell which columns") as info:
        read_ratings(path)
    assert all(repr(h) in str(info.value) for h in header)


@SETTINGS
@given(st.integers(0, 2000), st.integers(1, 30), st.integers(1, 30),
       st.sampled_from(["mean", "last", "sum"]), st.booleans())
def test_kernel_layout_equals_numpy_reference(seed, n_users, n_items, policy, with_ts):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    u, i = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    v = rng.integers(1, 6, n).astype(np.float32)
    ts = rng.permutation(n) if with_ts else None
    old = mfrec.data._KERNEL_MIN_NNZ
    try:
        mfrec.data._KERNEL_MIN_NNZ = 0
        fast = Ratings.from_ids(u, i, v, timestamps=ts, duplicates=policy)
    finally:
        mfrec.data._KERNEL_MIN_NNZ = old
    ref = Ratings.from_ids(u, i, v, timestamps=ts, duplicates=policy)
    assert fast == ref
    if with_ts:
        np.testing.assert_array_equal(fast.timestamps, ref.timestamps)
