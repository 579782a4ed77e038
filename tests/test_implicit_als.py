"""ImplicitALS: kernels against NumPy references, known answers, fold-in, errors, ML-100K."""
import numpy as np
import pytest
import scipy.sparse as sp

import mfrec
from mfrec import ImplicitALS
from mfrec.kernels import implicit_als as K

from conftest import read_ml100k_split, two_blocks


def _problem(seed=0, n_rows=40, n_cols=30, k=5):
    rng = np.random.default_rng(seed)
    C = sp.random(n_rows, n_cols, density=0.2, format="csr", random_state=seed,
                  data_rvs=lambda n: rng.integers(1, 6, n).astype(np.float32))
    C.sort_indices()
    Y = rng.standard_normal((n_cols, k)).astype(np.float32) * 0.3
    reg = rng.uniform(0.05, 0.5, n_rows).astype(np.float32)
    return C, Y, reg


@pytest.mark.parametrize("gather_cap", [0, 1000])
def test_cg_kernel_converges_to_exact_reference(gather_cap):
    # with k CG steps from zero CG is exact (up to rounding); both the gathered and the
    # in-place paths
    C, Y, reg = _problem()
    k = Y.shape[1]
    X = np.zeros((C.shape[0], k), np.float32)
    YtY = (Y.T @ Y).astype(np.float32)
    bounds = K.balanced_blocks(C.indptr.astype(np.int64), 4, k)
    for _ in range(3):  # a few warm-started rounds of k steps
        K.cg_solve(C.indptr.astype(np.int64), C.indices, C.data, X, Y, YtY, np.float32(2.0), reg,
                   k, bounds, gather_cap)
    want = K.solve_reference(C, Y, 2.0, reg)
    np.testing.assert_allclose(X, want, atol=2e-4)


def test_cholesky_kernel_matches_reference():
    C, Y, reg = _problem(1)
    X = np.zeros((C.shape[0], Y.shape[1]), np.float32)
    YtY = (Y.T @ Y).astype(np.float32)
    K.cholesky_solve(C.indptr.astype(np.int64), C.indices, C.data, X, Y, YtY,
                     np.float32(0.7), reg, K.balanced_blocks(C.indptr, 3, Y.shape[1]))
    np.testing.assert_allclose(X, K.solve_reference(C, Y, 0.7, reg), atol=1e-5)


def test_loss_kernel_matches_dense_reference():
    C, Y, reg = _problem(2)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((C.shape[0], Y.shape[1])).astype(np.float32) * 0.3
    got = K.loss(C.indptr.astype(np.int64), C.indices, C.data, X, Y, (Y.T @ Y).astype(np.float32),
                 np.float32(1.5), reg)
    want = K.loss_reference(C.toarray().astype(np.float64), X, Y, 1.5, reg)
    assert got == pytest.approx(want, rel=1e-4)


def test_transpose_kernel_matches_scipy():
    C, _, _ = _problem(3)
    ptr, idx, val = K.transpose(C.indptr.astype(np.int64), C.indices, C.data, C.shape[1])
    T = C.T.tocsr()
    T.sort_indices()
    np.testing.assert_array_equal(ptr, T.indptr)
    np.testing.assert_array_equal(idx, T.indices)
    np.testing.assert_array_equal(val, T.data)


def test_balanced_blocks_equalise_work():
    indptr = np.r_[0, np.cumsum([1000, 1, 1, 1, 1000, 1, 1, 1])].astype(np.int64)
    b = K.balanced_blocks(indptr, 2, 4)
    assert b.tolist() == [0, 4, 8] or b.tolist() == [0, 5, 8]
    many = K.balanced_blocks(indptr, 100, 4)  # never more blocks than rows, never empty ones
    assert many[0] == 0 and many[-1] == 8 and np.all(np.diff(many) > 0)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_block_diagonal_known_top_item(solver):
    model = ImplicitALS(n_factors=4, solver=solver, random_state=0).fit(two_blocks())
    ids, scores = model.recommend([0, 5], n=1)
    assert ids.tolist() == [[0], [6]]
    # the in-block items it has seen score close to 1, the other block close to 0
    s = model.reconstruct()
    assert s[1, :4].min() > 0.5 and np.abs(s[1, 4:]).max() < 0.1


def test_cg_and_cholesky_agree_and_loss_decreases():
    rng = np.random.default_rng(0)
    R = sp.random(60, 40, density=0.15, format="csr", random_state=0,
                  data_rvs=lambda n: rng.integers(1, 4, n).astype(float))
    kw = dict(n_factors=6, n_epochs=10, random_state=0, compute_loss=True)
    cg = ImplicitALS(solver="cg", cg_steps=6, **kw).fit(R)
    ch = ImplicitALS(solver="cholesky", **kw).fit(R)
    np.testing.assert_allclose(cg.reconstruct(), ch.reconstruct(), atol=0.02)
    h = np.array(ch.loss_history_)
    assert len(h) == 10 and np.all(np.diff(h) <= 1e-7)
    assert cg.loss_history_[-1] == pytest.approx(h[-1], rel=0.02)


def test_same_seed_same_model_and_float32():
    X = two_blocks()
    a = ImplicitALS(n_factors=3, random_state=7).fit(X)
    b = ImplicitALS(n_factors=3, random_state=7).fit(X)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert a.user_factors_.dtype == np.float32 and a.item_factors_.shape == (8, 3)
    assert not a.user_bias_.any() and a.global_mean_ == 0.0


def test_fold_in_reproduces_training_user():
    # with the exact solver, the last half-step solved users against the final items before the
    # items moved; one more user solve gives exactly what fold-in computes
    rng = np.random.default_rng(1)
    R = sp.random(50, 30, density=0.2, format="csr", random_state=1,
                  data_rvs=lambda n: rng.integers(1, 6, n).astype(float))
    R.sort_indices()
    model = ImplicitALS(n_factors=5, solver="cholesky", n_epochs=30, random_state=0).fit(R)
    u = 3
    row = R[u]
    folded = model.fold_in((row.indices, row.data))
    trained = model.user_factors_[u]
    cos = folded.factors[0] @ trained / np.linalg.norm(folded.factors[0]) / np.linalg.norm(trained)
    assert cos > 0.999
    np.testing.assert_allclose(folded.factors[0], trained, atol=0.02)
    # and recommending for the folded user gives the trained user's list
    ids_f, _ = model.recommend(folded, n=5)
    ids_t, _ = model.recommend(u, n=5)
    assert ids_f.tolist() == ids_t.tolist()


def test_errors_name_argument_and_value():
    X = two_blocks()
    with pytest.raises(ValueError, match="n_factors must be an int >= 1, got 0"):
        ImplicitALS(n_factors=0).fit(X)
    with pytest.raises(ValueError, match="solver must be one of"):
        ImplicitALS(solver="qr").fit(X)
    with pytest.raises(ValueError, match="alpha must be a number >= 0.0, got -1"):
        ImplicitALS(alpha=-1).fit(X)
    with pytest.raises(TypeError, match="cg_steps must be an int"):
        ImplicitALS(cg_steps=2.5).fit(X)
    with pytest.raises(ValueError, match="non-negative interaction strengths"):
        ImplicitALS().fit(-X)
    with pytest.raises(ValueError, match="regularization must be > 0 with solver='cholesky'"):
        ImplicitALS(solver="cholesky", regularization=0).fit(X)


def test_exported_and_params():
    m = mfrec.ImplicitALS(n_factors=8)
    assert m.get_params()["n_factors"] == 8
    assert m.clone().get_params() == m.get_params()


def test_ml100k_u1_beats_popularity(ml100k_dir):
    # known values on the canonical split (seen items excluded, every test pair relevant)
    from mfrec.evaluation.ranking import evaluate_ranking
    train, test = read_ml100k_split(ml100k_dir, "u1")
    model = ImplicitALS(random_state=0, num_threads=1).fit(train)
    res = evaluate_ranking(model, test, metrics=["ndcg", "precision"])
    # popularity baseline: items by training count, same protocol
    pop = mfrec.FactorModel()
    ratings = mfrec.Ratings.from_frame(train)
    pop._set_data_state(ratings)
    n_items = ratings.n_items
    pop._set_factor_state(np.zeros((ratings.n_users, 1), np.float32),
                          np.zeros((n_items, 1), np.float32),
                          item_bias=ratings.item_counts().astype(np.float32))
    base = evaluate_ranking(pop, test, metrics=["ndcg"])
    assert res["ndcg@10"] > 0.55
    assert res["ndcg@10"] > base["ndcg@10"] + 0.1
