"""Ratings: every input form gives the same object; every bad input gives a clear error."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import mfrec
from mfrec import Ratings, Vocabulary, as_ratings


def test_dense_zero_means_missing(seed_matrix):
    r = as_ratings(seed_matrix)
    assert (r.n_users, r.n_items, r.nnz) == (4, 5, 14)
    assert r.csr.indices.dtype == np.int32 and r.csr.data.dtype == np.float32
    np.testing.assert_array_equal(r.to_dense(missing_value=0), seed_matrix)


def test_dense_nan_means_missing_and_zero_is_a_rating():
    X = np.array([[0.0, np.nan], [np.nan, 3.0]])
    r = Ratings.from_dense(X, missing_value=np.nan)
    assert r.nnz == 2
    np.testing.assert_array_equal(r.to_dense(missing_value=-1), [[0, -1], [-1, 3]])


def test_all_input_forms_agree(seed_matrix, tmp_path):
    ref = as_ratings(seed_matrix)
    frame = ref.to_frame()
    assert as_ratings(sp.csr_matrix(seed_matrix)) == ref
    assert as_ratings(sp.coo_matrix(seed_matrix)) == ref
    assert as_ratings(frame) == ref
    assert as_ratings((frame.user.to_numpy(), frame.item.to_numpy(), frame.rating.to_numpy())) == ref
    assert Ratings.from_indices(frame.user, frame.item, frame.rating, shape=(4, 5)) == ref
    csv = tmp_path / "r.csv"
    frame.to_csv(csv, index=False)
    assert as_ratings(str(csv)) == ref
    tsv = tmp_path / "r.tsv"
    frame.to_csv(tsv, sep="\t", index=False, header=False)
    assert as_ratings(tsv) == ref
    pq = tmp_path / "r.parquet"
    frame.to_parquet(pq)
    assert as_ratings(pq) == ref
    assert as_ratings(ref) is ref


def test_string_ids_round_trip():
    df = pd.DataFrame({"user": ["bob", "alice", "bob"], "item": ["x", "y", "y"],
                       "rating": [4.0, 5.0, 1.0]})
    r = as_ratings(df)
    assert list(r.user_vocab.ids) == ["alice", "bob"]  # sorted, deterministic
    back = r.to_frame().sort_values(["user", "item"]).reset_index(drop=True)
    expected = df.sort_values(["user", "item"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    np.testing.assert_array_equal(r.user_vocab.lookup(["bob", "alice"]), [1, 0])


def test_timestamps_follow_their_ratings():
    df = pd.DataFrame({"user": [2, 1, 1], "item": [1, 2, 1], "rating": [3, 4, 5],
                       "timestamp": [30, 20, 10]})
    r = as_ratings(df)
    out = r.to_frame()
    assert out.set_index(["user", "item"]).loc[(1, 1), "timestamp"] == 10
    assert out.set_index(["user", "item"]).loc[(2, 1), "timestamp"] == 30


@pytest.mark.parametrize("policy, expected", [("mean", 3.0), ("last", 2.0), ("sum", 6.0)])
def test_duplicate_policies(policy, expected):
    r = Ratings.from_ids(["a", "a", "b"], ["x", "x", "x"], [4.0, 2.0, 1.0], duplicates=policy)
    assert r.nnz == 2
    assert r.to_dense()[0, 0] == expected


def test_duplicates_error_shows_pairs():
    with pytest.raises(ValueError, match=r"duplicate \(user, item\) pairs: 1 repeated, first \[\('a', 'x'\)\]"):
        Ratings.from_ids(["a", "a", "b"], ["x", "x", "x"], [4.0, 2.0, 1.0])


def test_sparse_coo_duplicates_are_caught():
    coo = sp.coo_matrix(([1.0, 2.0], ([0, 0], [1, 1])), shape=(2, 2))
    with pytest.raises(ValueError, match="duplicate"):
        as_ratings(coo)
    assert Ratings.from_sparse(coo, duplicates="sum").to_dense()[0, 1] == 3.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_ratings(bad):
    with pytest.raises(ValueError, match="ratings must be finite"):
        Ratings.from_ids([1, 2], [1, 2], [3.0, bad])


def test_nan_in_dense_with_zero_missing():
    with pytest.raises(ValueError, match="missing_value=np.nan"):
        as_ratings(np.array([[1.0, np.nan]]))


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        as_ratings(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        as_ratings(pd.DataFrame({"user": [], "item": [], "rating": []}))


def test_bad_indices():
    with pytest.raises(ValueError, match="users must be non-negative indices, got \\[-1\\]"):
        Ratings.from_indices([0, -1], [0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-integer"):
        Ratings.from_indices([0, 1.5], [0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="out of range"):
        Ratings.from_indices([0, 5], [0, 1], [1.0, 2.0], shape=(3, 3))


def test_shape_mismatch():
    with pytest.raises(ValueError, match="same length, got 2, 2 and 3"):
        Ratings.from_ids([1, 2], [1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="must be 2-D"):
        as_ratings(np.ones(4))


def test_bad_frame_columns():
    df = pd.DataFrame({"u": [1], "i": [2], "r": [3.0]})
    with pytest.raises(ValueError, match=r"cannot tell which columns of the frame hold the users "
                                         r"and items: columns \['u', 'i', 'r'\].*user_col="):
        as_ratings(df)
    with pytest.raises(ValueError, match="user_col='user' is not a column"):
        as_ratings(df, user_col="user")
    r = as_ratings(df, user_col="u", item_col="i", rating_col="r")
    assert r.nnz == 1 and r.source_columns == {"user": "u", "item": "i", "rating": "r",
                                               "timestamp": None}


def test_frame_columns_are_recognised():
    df = pd.DataFrame({"movieId": [5, 6], "title": ["a", "b"], "userId": [1, 1],
                       "rating": [4.0, 2.0], "timestamp": [10, 20]})
    r = as_ratings(df)
    assert r.source_columns == {"user": "userId", "item": "movieId", "rating": "rating",
                                "timestamp": "timestamp"}
    assert r.to_dense().tolist() == [[4.0, 2.0]] and r.timestamps.tolist() == [10, 20]
    # exactly "rating" wins over another rating-like name; no rating at all: strength 1
    both = pd.DataFrame({"user": [1], "item": [2], "count": [7], "rating": [3.0]})
    assert as_ratings(both).values.tolist() == [3.0]
    assert as_ratings(pd.DataFrame({"user_id": [1], "item_id": [2]})).values.tolist() == [1.0]
    with pytest.raises(ValueError, match=r"no rating column recognised .* \['title'\]"):
        as_ratings(df.drop(columns="rating"))


def test_mixed_id_types_are_refused():
    # [1, "a"] would become ["1", "a"] in NumPy: user 1 would silently stop matching
    with pytest.raises(TypeError, match=r"user ids mix types \(int 1, str 'a'\)"):
        Ratings.from_ids([1, "a"], [1, 2], [1.0, 2.0])
    with pytest.raises(TypeError, match="item ids mix types"):
        Ratings.from_ids([1, 2], np.array([1, "x"], dtype=object), [1.0, 2.0])
    with pytest.raises(TypeError, match="user ids mix types"):
        as_ratings(pd.DataFrame({"user": [1, "b"], "item": [1, 2], "rating": [1.0, 2.0]}))
    # ints and floats are numbers alike
    assert Ratings.from_ids([1, 2.0], [1, 2], [1.0, 2.0]).n_users == 2


def test_lookup_refuses_ids_of_the_wrong_type():
    ints = Ratings.from_ids([1, 2], [10, 20], [1.0, 2.0]).user_vocab
    for q in ([1], np.array([1], np.int32), np.array([1], np.int64), np.uint8(1), 1.0):
        assert ints.lookup(q).tolist() == [0]
    with pytest.raises(TypeError, match=r"user ids given are str .*\['1'\].* holds int ids"):
        ints.lookup(["1"], unknown="mask")
    strs = Ratings.from_ids(["a", "b"], ["x", "y"], [1.0, 2.0]).user_vocab
    with pytest.raises(TypeError, match=r"holds str ids .* convert them \(str\(x\)\)"):
        strs.lookup([1])
    with pytest.raises(TypeError, match="mix types"):
        strs.lookup(["a", 1])


def test_model_predict_with_ids_of_the_wrong_type():
    # unknown ids fall back to the mean; ids of the wrong type are an error, not unknown
    model = mfrec.Baseline().fit(([1, 1, 2], [1, 2, 1], [5.0, 3.0, 4.0]))
    assert model.predict([1], [1])[0] != model.global_mean_
    np.testing.assert_allclose(model.predict(np.array([1], np.int32), [np.int64(1)]),
                               model.predict([1], [1]))
    with pytest.raises(TypeError, match="user ids given are str"):
        model.predict(["1"], [1])
    with pytest.raises(TypeError, match="item ids given are str"):
        model.recommend([1], items=["1", "2"])
    with pytest.raises(TypeError, match="user ids given are str"):
        model.recommend(["2"])


@pytest.mark.parametrize("value", [1e39, -1e39, 2e6, np.float64(np.inf)])
def test_ratings_checked_after_the_float32_cast(value):
    with pytest.raises(ValueError,
                       match=r"must be finite and at most 1e\+06 .* position\(s\) \[1\]"):
        Ratings.from_ids([1, 2], [1, 2], [3.0, value])
    with pytest.raises(ValueError, match="must be finite"):
        as_ratings(np.array([[1.0, value]]))
    assert Ratings.from_ids([1], [1], [mfrec.data.MAX_ABS_RATING]).values.tolist() == [1e6]


def test_merged_duplicates_are_checked_too():
    with pytest.raises(ValueError, match=r"ratings merged by duplicates='sum' must be finite"):
        Ratings.from_ids([1, 1], [1, 1], [6e5, 6e5], duplicates="sum")


@pytest.mark.parametrize("policy", ["error", "mean", "last", "sum"])
@pytest.mark.parametrize("with_ts", [False, True])
@pytest.mark.parametrize("bucketed", [True, False])
def test_kernel_layout_matches_reference(monkeypatch, policy, with_ts, bucketed):
    # the in-place Numba layouts (buckets of rows sorted in cache, or the per-row scatter and a
    # stable row sort) against the NumPy argsort path
    import mfrec.kernels.ratings as kr
    if not bucketed:
        monkeypatch.setattr(kr, "bucket_layout", lambda n_rows, n_cols, nnz: None)
    else:  # tiny buckets of 16 rows: many buckets, rows split across them
        monkeypatch.setattr(kr, "bucket_layout", lambda n_rows, n_cols, nnz: (4, 27))
    rng = np.random.default_rng(3)
    n = 4000
    u, i = rng.integers(0, 50, n), rng.integers(0, 400, n)
    if policy == "error":  # distinct pairs
        key = rng.permutation(50 * 400)[:n]
        u, i = key // 400, key % 400
    v = rng.integers(1, 6, n).astype(np.float32)
    ts = rng.permutation(n) if with_ts else None
    monkeypatch.setattr(mfrec.data, "_KERNEL_MIN_NNZ", 0)
    fast = Ratings.from_ids(u, i, v, timestamps=ts, duplicates=policy)
    monkeypatch.setattr(mfrec.data, "_KERNEL_MIN_NNZ", 1 << 60)
    ref = Ratings.from_ids(u, i, v, timestamps=ts, duplicates=policy)
    assert fast == ref
    if with_ts:
        np.testing.assert_array_equal(fast.timestamps, ref.timestamps)


def test_kernel_duplicates_error_lists_pairs(monkeypatch):
    monkeypatch.setattr(mfrec.data, "_KERNEL_MIN_NNZ", 0)
    with pytest.raises(ValueError, match=r"1 repeated, first \[\('a', 'x'\)\]"):
        Ratings.from_ids(["a", "b", "a"], ["x", "x", "x"], [4.0, 2.0, 1.0])


def test_kernels_against_numpy_reference():
    from mfrec.kernels.ratings import build_csr_ref, scatter, sort_rows
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 30, 2000)
    cols = rng.integers(0, 100, 2000).astype(np.int32)
    vals = rng.random(2000).astype(np.float32)
    indptr, c_ref, v_ref, _, dup_ref = build_csr_ref(rows, cols, vals, None, 30)
    out_c, out_v = np.empty_like(cols), np.empty_like(vals)
    cursor = indptr[:-1].copy()
    for s in range(0, 2000, 300):  # in chunks, as the file reader gives them
        assert scatter(cursor, indptr, rows[s:s + 300], cols[s:s + 300], vals[s:s + 300], None,
                       out_c, out_v, None) == -1
    dup = sort_rows(indptr, out_c, out_v, None)
    np.testing.assert_array_equal(out_c, c_ref)
    np.testing.assert_array_equal(out_v, v_ref)
    np.testing.assert_array_equal(dup, dup_ref)
    full = indptr[:-1].copy()
    full[0] = indptr[1]  # row 0 already full: the next entry of row 0 is refused
    assert scatter(full, indptr, np.array([1, 0]), cols[:2], vals[:2], None, out_c, out_v,
                   None) == (1 if indptr[1] > indptr[0] else 0)


def test_bad_types():
    with pytest.raises(TypeError, match="cannot make ratings from dict"):
        as_ratings({"a": 1})
    with pytest.raises(TypeError, match="must be numeric"):
        Ratings.from_ids([1], [1], ["five"])


def test_vocabulary_unknown_ids():
    v = Vocabulary(np.array(["a", "b"]), name="user")
    with pytest.raises(KeyError, match=r"unknown user id\(s\) \['zz'\]"):
        v.lookup(["a", "zz"])
    np.testing.assert_array_equal(v.lookup(["a", "zz"], unknown="mask"), [0, -1])
    ident = Vocabulary.identity(3, name="item")
    np.testing.assert_array_equal(ident.lookup([2, 7], unknown="mask"), [2, -1])


@pytest.mark.parametrize("ids", [
    [40, 3, 40, 7, 3],                       # small: presence table
    [10**12, 5, 10**12, -3, 5],              # wide or negative: sorted unique
    np.array([9, 2, 9, 2, 4], dtype=np.uint16),
])
def test_integer_ids_are_encoded_like_pandas(ids):
    # integer ids skip pandas; the codes and vocabulary are those pandas.factorize(sort=True) gives
    r = Ratings.from_ids(ids, [0, 1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0, 5.0])
    codes, uniques = pd.factorize(np.asarray(ids), sort=True)
    np.testing.assert_array_equal(r.user_vocab.ids, uniques)
    np.testing.assert_array_equal(r.user_vocab.to_ids(r.user_index), np.asarray(ids)[
        np.lexsort((np.arange(5), codes))])
    v = r.user_vocab
    np.testing.assert_array_equal(v.lookup(np.asarray(uniques)[::-1]), np.arange(3)[::-1])
    np.testing.assert_array_equal(v.lookup([1, 6], unknown="mask"), [-1, -1])
    with pytest.raises(KeyError, match=r"unknown user id\(s\) \[6\]"):
        v.lookup([6])


def test_integer_vocabulary_checks_duplicates_and_unsorted_ids():
    with pytest.raises(ValueError, match="item ids must be unique"):
        Vocabulary(np.array([5, 1, 5]), name="item")
    v = Vocabulary(np.array([30, 10, 20]))  # unsorted but unique: hashed lookup
    np.testing.assert_array_equal(v.lookup([20, 30, 99], unknown="mask"), [2, 0, -1])


def test_fitting_integer_ids_does_not_import_pandas():
    # pandas costs ~80 MB of memory: a fit from integer arrays must not load it
    import subprocess
    import sys
    code = ("import sys, mfrec; m = mfrec.ImplicitALS(n_factors=2, n_epochs=1).fit("
            "([3, 1, 2, 1], [0, 10, 10, 5], [1.0, 1.0, 2.0, 1.0])); "
            "m.recommend([1, 3], n=2); print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_csc_matches_csr(seed_matrix):
    r = as_ratings(seed_matrix)
    np.testing.assert_array_equal(r.csc.toarray(), r.csr.toarray())
    assert r.csc.indices.dtype == np.int32


def test_subset_keeps_vocabularies(seed_matrix):
    r = as_ratings(seed_matrix)
    part = r.subset(r.values > 2)
    assert part.user_vocab is r.user_vocab and part.nnz == int((seed_matrix > 2).sum())


def test_version():
    assert isinstance(mfrec.__version__, str)
