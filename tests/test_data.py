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
    with pytest.raises(ValueError, match="user_col='user' is not a column"):
        as_ratings(df)
    assert as_ratings(df, user_col="u", item_col="i", rating_col="r").nnz == 1


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
