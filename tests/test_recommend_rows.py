"""The lean top-N path (``FactorModel._recommend_rows``, what ``recommend`` takes without
``items``/``exclude`` and what the service batches through) gives ``topn_numpy``'s answers: same
ids, same scores, same tie-breaking and padding, NaN and ``-inf`` never chosen, whether users are
scored one at a time or in one product; and what a model keeps between calls follows its arrays
when they are replaced."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import mfrec
from conftest import low_rank_ratings
from mfrec.kernels import topn_numpy as T
from mfrec.models import base
from mfrec.models.base import _topn_few


def _case(seed, m, c, k, n, levels, n_nan):
    """Integer-valued factors (exact products in any summation order, many ties), a seen matrix,
    some -inf biases and a few NaN biases."""
    rng = np.random.default_rng(seed)
    U = rng.integers(-levels, levels + 1, (m, k)).astype(np.float32)
    Q = rng.integers(-levels, levels + 1, (c, k)).astype(np.float32)
    bias = rng.integers(-2, 3, c).astype(np.float32)
    bias[rng.random(c) < 0.1] = -np.inf
    bias[rng.choice(c, min(n_nan, c), replace=False)] = np.nan
    seen = sp.random(m, c, density=0.3, random_state=seed, format="csr")
    rows = np.where(rng.random(m) < 0.8, np.arange(m), -1).astype(np.int64)
    return (U, Q, bias, seen.indptr.astype(np.int64), seen.indices.astype(np.int32), rows,
            min(n, c))


@pytest.mark.parametrize("mode", ["one by one", "one product", "sampled cut"])
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 6), c=st.integers(1, 40),
       k=st.integers(1, 4), n=st.integers(1, 45), levels=st.integers(0, 2),
       n_nan=st.sampled_from([0, 0, 1, 3]))
def test_lean_selection_equals_topn_numpy(mode, seed, m, c, k, n, levels, n_nan):
    # (integer-valued factors: the products are exact whatever the BLAS call)
    U, Q, bias, indptr, indices, rows, n = _case(seed, m, c, k, n, levels, n_nan)
    want = T.topn_numpy(U, Q, bias, indptr, indices, rows, np.empty(0, np.int64), n)
    with pytest.MonkeyPatch.context() as mp:
        if mode == "one product":  # every catalogue counts as large: one product from 4 users
            mp.setattr(base, "_ONE_BY_ONE_MAX_CELLS", 0)
        if mode == "sampled cut":  # short rows take the cut from a sample too
            mp.setattr(base, "_SAMPLE_MIN", 2)
            mp.setattr(base, "_SAMPLE_STEP", 1 + seed % 3)
        for QT in (np.ascontiguousarray(Q.T), Q.T):
            for compiled in (False, True):
                got = _topn_few(U, QT, bias, indptr, indices, rows, n, compiled=compiled)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
                assert got[0].dtype == np.int64 and got[1].dtype == np.float32


@pytest.mark.parametrize("n", [1, 10, 100])
def test_long_rows_equal_topn_numpy(n):
    # rows long enough for the sampled cut, at its real settings, with many ties
    U, Q, bias, indptr, indices, rows, n = _case(7, 6, 20_000, 3, n, 4, 5)
    want = T.topn_numpy(U, Q, bias, indptr, indices, rows, np.empty(0, np.int64), n)
    for compiled in (False, True):
        got = _topn_few(U, np.ascontiguousarray(Q.T), bias, indptr, indices, rows, n,
                        compiled=compiled)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_known_answer_nan_among_the_best_and_ties():
    # scores 5, NaN, 3, 3, 3, -inf: the best two skip NaN and take the lower of the tied 3s
    U = np.ones((1, 1), np.float32)
    Q = np.zeros((6, 1), np.float32)
    bias = np.array([5, np.nan, 3, 3, 3, -np.inf], np.float32)
    none = (np.zeros(1, np.int64), np.zeros(0, np.int32), np.full(1, -1, np.int64))
    for compiled in (False, True):
        idx, sc = _topn_few(U, Q.T, bias, *none, 2, compiled=compiled)
        assert idx.tolist() == [[0, 2]] and sc.tolist() == [[5, 3]]
        idx, sc = _topn_few(U, Q.T, bias, *none, 6, compiled=compiled)  # 4 finite, then padding
        assert idx.tolist() == [[0, 2, 3, 4, -1, -1]]
        assert sc[0, :4].tolist() == [5, 3, 3, 3] and np.all(np.isneginf(sc[0, 4:]))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 5), c=st.integers(1, 60),
       n=st.integers(1, 70), n_nan=st.sampled_from([0, 2]))
def test_select_topn_kernel_equals_its_reference(seed, m, c, n, n_nan):
    from mfrec.kernels.topn import select_topn, select_topn_reference

    rng = np.random.default_rng(seed)
    S = rng.integers(-3, 4, (m, c)).astype(np.float32)  # many ties
    S[rng.random((m, c)) < 0.1] = -np.inf
    S.flat[rng.choice(S.size, min(n_nan, S.size), replace=False)] = np.nan
    seen = sp.random(m, c, density=0.3, random_state=seed, format="csr")
    rows = np.where(rng.random(m) < 0.7, np.arange(m), -1).astype(np.int64)
    bias = rng.integers(-2, 3, c).astype(np.float32)
    bias[rng.random(c) < 0.1] = -np.inf
    args = (bias, rows, seen.indptr.astype(np.int64), seen.indices.astype(np.int32), n)
    want = select_topn_reference(S, *args)
    got = select_topn(S.copy(), *args)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def _data(seed):
    (u, i, r), _, _ = low_rank_ratings(n_users=50, n_items=70, seed=seed)
    return mfrec.Ratings.from_indices(u, i, r)


def _fitted(seed=0, dtype=np.float32):
    model = mfrec.BiasedMF(n_factors=3, n_epochs=30, random_state=seed,
                           num_threads=1).fit(_data(seed))
    if dtype != np.float32:
        for name in ("user_factors_", "item_factors_", "user_bias_", "item_bias_"):
            setattr(model, name, getattr(model, name).astype(dtype))
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_recommend_lean_path_equals_general_path(dtype):
    # the general path (taken with an exclusion list) with an empty exclusion gives the same
    # ids, and the same scores up to float32 rounding (the products have other shapes)
    model = _fitted(dtype=dtype)
    users = [0, 3, 7, 49]
    for kw in ({}, {"exclude_seen": False}, {"n": 70}):
        lean = model.recommend(users, **kw)
        general = model.recommend(users, exclude=np.empty(0, np.int64), **kw)
        np.testing.assert_array_equal(lean[0], general[0])
        np.testing.assert_allclose(lean[1], general[1], rtol=1e-6)


def test_a_small_catalogue_answers_each_user_as_alone_whoever_shares_the_call():
    # (what lets the service batch concurrent requests and still answer each exactly as a lone
    # recommend call; a large catalogue with 4+ users takes one product, tested above)
    model = _fitted()
    alone = model.recommend([7], n=10)
    for batch in ([7, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [7] * 9):
        ids, scores = model._recommend_rows(model.user_vocab_.lookup(batch), 10, True)
        row = batch.index(7)
        np.testing.assert_array_equal(ids[row], alone[0][0])
        np.testing.assert_array_equal(scores[row], alone[1][0])


def test_kept_arrays_follow_replaced_factors_and_refits():
    model = _fitted()
    before = model.similar_items([3], n=5)
    first = model._unit_factors_t(model.item_factors_)
    assert model._unit_factors_t(model.item_factors_) is first  # kept between calls
    # new factors (assigned, as fit and load do): the next call sees them
    model.item_factors_ = model.item_factors_[::-1].copy()
    flipped = model.similar_items([3], n=5)
    assert not np.array_equal(flipped[0], before[0])
    fresh = type(model)(**model.get_params())  # nothing kept: computes from scratch
    fresh.__dict__.update({k: v for k, v in vars(model).items() if k.endswith("_")})
    np.testing.assert_array_equal(flipped[0], fresh.similar_items([3], n=5)[0])
    # recommend's kept arrays follow a replaced bias too
    model.recommend([0], n=1)
    bias = np.full_like(model.item_bias_, -np.inf)
    bias[5] = 10.0
    model.item_bias_ = bias
    assert model.recommend([0], n=1, exclude_seen=False)[0][0, 0] == model.item_vocab_.ids[5]
    # a refit drops everything kept for the old arrays
    model.fit(_data(1))
    assert "_kept_arrays" not in vars(model)


def test_similar_on_the_lean_path_equals_brute_force_cosine():
    model = _fitted()
    model.item_factors_ = model.item_factors_.copy()
    model.item_factors_[4] = 0  # a zero vector: cosine 0 with everything
    for F, vocab, call in ((model.item_factors_, model.item_vocab_, model.similar_items),
                           (model.user_factors_, model.user_vocab_, model.similar_users)):
        F64 = F.astype(np.float64)
        norms = np.linalg.norm(F64, axis=1)
        unit = F64 / np.where(norms > 0, norms, 1)[:, None]
        queries = [0, 4, 9]
        ids, scores = call(vocab.ids[queries], n=6)
        for row, q in enumerate(queries):
            cos = unit @ unit[q]
            cos[q] = -np.inf  # never itself
            want = np.argsort(-cos, kind="stable")[:6]
            np.testing.assert_allclose(scores[row], cos[want], rtol=1e-5, atol=1e-6)
            # (for the zero vector every cosine is a tie at 0: the lowest positions come first)
            np.testing.assert_array_equal(ids[row], vocab.ids[want])
