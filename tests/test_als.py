"""Explicit ALS-WR: kernels against their NumPy references, recovery of a known low-rank matrix,
determinism, fallbacks and argument errors."""
import numpy as np
import pytest

from mfrec import ALS, Ratings
from mfrec.evaluation import rmse
from mfrec.io import read_ratings
from mfrec.kernels import als as k
from mfrec.models import als as als_module

from conftest import low_rank_ratings, random_csr


@pytest.mark.parametrize("fit_bias", [True, False])
def test_cholesky_kernel_matches_reference(fit_bias):
    # light rows (dual solve), heavy rows (primal solve) and empty rows, with and without biases
    m = random_csr(40, 30, 0.3, 1, empty_rows=(3, 17))
    kf = 6
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, kf)).astype(np.float32)
    xb = rng.normal(size=40).astype(np.float32)
    Y = rng.normal(size=(30, kf)).astype(np.float32)
    yb = rng.normal(size=30).astype(np.float32)
    counts = np.diff(m.indptr)
    assert (counts == 0).any() and (counts < kf + 1).any() and (counts >= kf + 1).any()
    Xr, xbr = X.astype(np.float64), xb.astype(np.float64)
    k.solve_rows_reference(m.indptr, m.indices, m.data, Xr, xbr, Y, yb, 3.0, 0.1, fit_bias)
    order = k.balanced_order(counts)
    k.solve_rows_cholesky(m.indptr.astype(np.int64), m.indices, m.data, X, xb, Y, yb, 3.0, 0.1,
                          fit_bias, order, 4)
    np.testing.assert_allclose(X, Xr, atol=2e-4)
    np.testing.assert_allclose(xb, xbr, atol=2e-4)
    assert np.all(X[[3, 17]] == 0)


@pytest.mark.parametrize("fit_bias", [True, False])
def test_cg_kernel_matches_reference(fit_bias):
    # the same CG iterates, from the same warm start
    m = random_csr(30, 25, 0.4, 3, empty_rows=(5,))
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 5)).astype(np.float32)
    xb = rng.normal(size=30).astype(np.float32)
    Y = rng.normal(size=(25, 5)).astype(np.float32)
    yb = rng.normal(size=25).astype(np.float32)
    Xr, xbr = X.astype(np.float64), xb.astype(np.float64)
    k.solve_rows_cg_reference(m.indptr, m.indices, m.data, Xr, xbr, Y, yb, 3.0, 0.05, fit_bias, 2)
    k.solve_rows_cg(m.indptr.astype(np.int64), m.indices, m.data, X, xb, Y, yb, 3.0, 0.05,
                    fit_bias, 2, k.balanced_order(np.diff(m.indptr)), 3)
    np.testing.assert_allclose(X, Xr, atol=1e-3)
    np.testing.assert_allclose(xb, xbr, atol=1e-3)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_row_kernels_do_not_depend_on_threads_or_blocks(solver):
    # every row is solved on its own, whichever block (and Python thread) takes it: one thread
    # and one block, three threads and seven blocks give the same bits
    m = random_csr(60, 30, 0.3, 7, empty_rows=(2,))
    rng = np.random.default_rng(8)
    X0 = rng.normal(size=(60, 5)).astype(np.float32)
    xb0 = rng.normal(size=60).astype(np.float32)
    Y = rng.normal(size=(30, 5)).astype(np.float32)
    yb = rng.normal(size=30).astype(np.float32)
    order = k.balanced_order(np.diff(m.indptr))
    out = []
    for n_blocks, n_threads in ((1, 1), (7, 3), (100, 2)):
        X, xb = X0.copy(), xb0.copy()
        args = (m.indptr.astype(np.int64), m.indices, m.data, X, xb, Y, yb, 3.0, 0.1, True)
        if solver == "cg":
            k.solve_rows_cg(*args, 3, order, n_blocks, n_threads)
        else:
            k.solve_rows_cholesky(*args, order, n_blocks, n_threads)
        errors = k.row_squared_errors(m.indptr.astype(np.int64), m.indices, m.data, X, xb, Y, yb,
                                      3.0, n_threads)
        out.append((X, xb, errors))
    for X, xb, errors in out[1:]:
        np.testing.assert_array_equal(X, out[0][0])
        np.testing.assert_array_equal(xb, out[0][1])
        np.testing.assert_array_equal(errors, out[0][2])
    assert not np.array_equal(out[0][0], X0)


def test_squared_error_matches_reference():
    m = random_csr(20, 15, 0.5, 5)
    rng = np.random.default_rng(6)
    P, Q = rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(15, 4)).astype(np.float32)
    bu, bi = rng.normal(size=20).astype(np.float32), rng.normal(size=15).astype(np.float32)
    got = k.row_squared_errors(m.indptr.astype(np.int64), m.indices, m.data, P, bu, Q, bi,
                               3.0).sum()
    want = k.squared_error_reference(m.indptr, m.indices, m.data, P, bu, Q, bi, 3.0)
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_recovers_low_rank_matrix(solver):
    # half the cells of a noiseless rank-3 matrix with biases predict the other half closely
    train, test, shape = low_rank_ratings()
    data = Ratings.from_indices(*train, shape=shape)
    model = ALS(n_factors=3, n_epochs=40, regularization=1e-3, solver=solver, random_state=0,
                num_threads=1).fit(data)
    assert rmse(test[2], model.predict(test[0], test[1])) < 0.05
    assert model.train_rmse_history_[-1] < 0.02
    # the objective never increases under exact alternating minimisation
    if solver == "cholesky":
        assert np.all(np.diff(model.loss_history_) <= 1e-6)


def test_without_biases_keeps_biases_zero():
    train, test, shape = low_rank_ratings()
    model = ALS(n_factors=5, n_epochs=30, regularization=1e-3, biases=False, random_state=0).fit(
        Ratings.from_indices(*train, shape=shape))
    assert not model.user_bias_.any() and not model.item_bias_.any()
    # rank 5 without biases can still represent rank 3 plus two bias terms
    assert rmse(test[2], model.predict(test[0], test[1])) < 0.1


def test_deterministic_and_thread_independent(monkeypatch):
    # rows are solved independently, so neither a refit nor the thread count changes anything
    # (small data normally runs on one thread: lift that so two threads really run)
    monkeypatch.setattr(als_module, "RATINGS_PER_THREAD", 1)
    train, _, shape = low_rank_ratings(seed=1)
    data = Ratings.from_indices(*train, shape=shape)
    a = ALS(n_factors=4, n_epochs=5, random_state=7, num_threads=1).fit(data)
    b = ALS(n_factors=4, n_epochs=5, random_state=7, num_threads=1).fit(data)
    c = ALS(n_factors=4, n_epochs=5, random_state=7, num_threads=2).fit(data)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    np.testing.assert_array_equal(a.user_factors_, c.user_factors_)
    np.testing.assert_array_equal(a.item_bias_, c.item_bias_)


def test_small_data_uses_fewer_threads():
    assert als_module.threads_for(2, 80_000) == 1
    assert als_module.threads_for(2, 5_000_000) == min(2, als_module.resolve_threads(0))
    assert als_module.threads_for(1, 5_000_000) == 1


def test_unknown_ids_and_empty_rows_fall_back():
    # user 5 and item 4 exist in the vocabulary but have no ratings; "zz" is not known at all
    u = ["a", "a", "b", "b", "c", "c"]
    i = ["x", "y", "x", "z", "y", "z"]
    r = [5.0, 3.0, 4.0, 2.0, 1.0, 4.0]
    model = ALS(n_factors=2, n_epochs=5, random_state=0).fit((u, i, r))
    p = model.predict(["a", "zz", "zz"], ["zz", "x", "zz"])
    assert p[0] == pytest.approx(np.clip(model.global_mean_ + model.user_bias_[0], 1, 5))
    assert p[1] == pytest.approx(model.global_mean_ + model.item_bias_[0])
    assert p[2] == pytest.approx(model.global_mean_)

    data = Ratings.from_indices([0, 0, 1, 2], [0, 1, 1, 2], [4.0, 3.0, 5.0, 2.0], shape=(6, 5))
    model = ALS(n_factors=3, n_epochs=3, random_state=0).fit(data)
    assert np.all(model.user_factors_[3:] == 0) and np.all(model.item_factors_[3:] == 0)
    assert np.all(np.isfinite(model.predict([5], [4])))
    with pytest.raises(KeyError, match="unknown user"):
        model.predict([99], [0], unknown="error")


def test_fold_in_of_a_training_user_gives_back_its_vector():
    # ALS-WR solves users by ridge with regularization_ * n_u: fold-in repeats that solve
    train, _, shape = low_rank_ratings(seed=2)
    data = Ratings.from_indices(*train, shape=shape)
    model = ALS(n_factors=3, n_epochs=60, regularization=0.05, random_state=0).fit(data)
    row = data.csr[7]
    folded = model.fold_in((row.indices, row.data))
    np.testing.assert_allclose(folded.factors[0], model.user_factors_[7], atol=2e-3)
    assert folded.bias[0] == pytest.approx(model.user_bias_[7], abs=2e-3)


def test_ml100k_u1_beats_surprise_svd(ml100k_dir):
    # the default model on the canonical u1 split; Surprise SVD gets 0.951 here
    train = read_ratings(ml100k_dir / "u1.base")
    test = read_ratings(ml100k_dir / "u1.test")
    model = ALS(random_state=0).fit(train)
    frame = test.to_frame()
    score = rmse(frame["rating"], model.predict(frame["user"], frame["item"]))
    assert 0.90 < score < 0.935
    assert model.regularization_ == 0.1


@pytest.mark.parametrize("params, match", [
    ({"n_factors": 0}, "n_factors must be an int >= 1, got 0"),
    ({"n_factors": 2.5}, "n_factors must be an int"),
    ({"n_epochs": -1}, "n_epochs must be an int >= 1, got -1"),
    ({"regularization": 0.0}, "regularization must be a number > 0.0, got 0.0"),
    ({"regularization": "a"}, "regularization must be a finite number"),
    ({"solver": "lu"}, "solver must be one of \\('cg', 'cholesky'\\), got 'lu'"),
    ({"cg_steps": 0}, "cg_steps must be an int >= 1, got 0"),
    ({"biases": "yes"}, "biases must be True or False, got 'yes'"),
    ({"init_std": 0.0}, "init_std must be a number > 0.0, got 0.0"),
    ({"num_threads": -2}, "num_threads must be an int >= 0, got -2"),
    ({"random_state": "x"}, "random_state must be None, an int or a numpy Generator"),
])
def test_bad_hyperparameters_name_the_argument(params, match, seed_matrix):
    with pytest.raises((ValueError, TypeError), match=match):
        ALS(**params).fit(seed_matrix)
