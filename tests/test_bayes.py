"""Bayesian MF (Gibbs sampling): kernel against its NumPy reference, the hyperprior draws, the
averaged predictive, recovery of a known low-rank matrix, determinism, fallbacks and errors."""
import numpy as np
import pytest

from mfrec import BayesianMF, Ratings
from mfrec.evaluation import rmse
from mfrec.io import read_ratings
from mfrec.kernels import bayes as kb
from mfrec.kernels.als import balanced_order, solve_rows_reference
from mfrec.models import als as als_module
from mfrec.models import bayes as model_module

from conftest import low_rank_ratings, random_csr


@pytest.mark.parametrize("fit_bias, weighted, per_row", [
    (True, False, False), (False, False, False), (True, True, False), (True, True, True)])
def test_sample_rows_matches_reference(fit_bias, weighted, per_row):
    # the same normal draws give the same posterior samples, empty rows drawn from the prior;
    # weighted: noise scales per row and per column (noise="rows"); per_row: a prior mean per
    # row (the implicit-feedback offsets)
    m = random_csr(30, 20, 0.3, 1, empty_rows=(4,))
    d = 5
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, d)).astype(np.float32)
    Y = rng.normal(size=(20, d)).astype(np.float32)
    B = rng.normal(size=(d, d))
    prec = (B @ B.T + d * np.eye(d)).astype(np.float32)
    mean = rng.normal(size=d).astype(np.float32)
    off = rng.normal(size=(30 if per_row else 1, d)).astype(np.float32)
    key = np.uint64(2024)
    noise = kb.normal_rows_reference(key, 30, d)
    xw, yw = np.ones(30, np.float32), np.ones(20, np.float32)
    if weighted:
        xw = rng.gamma(2.0, 0.5, 30).astype(np.float32)
        yw = rng.gamma(2.0, 0.5, 20).astype(np.float32)
    Xr = X.astype(np.float64)
    kb.sample_rows_reference(m.indptr, m.indices, m.data, Xr, Y, xw, yw, 3.0, 1.5, mean, off,
                             prec, fit_bias, noise)
    kb.sample_rows(m.indptr.astype(np.int64), m.indices, m.data, X, Y, xw, yw, 3.0, 1.5, mean,
                   off, prec, fit_bias, key, balanced_order(np.diff(m.indptr)), 3)
    np.testing.assert_allclose(X, Xr, atol=1e-4)
    # row 4 has no ratings: prior mean (plus its offset) plus the prior's noise
    L = np.linalg.cholesky(prec.astype(np.float64))
    expect = mean + off[4 if per_row else 0] + np.linalg.solve(L.T, noise[4])
    np.testing.assert_allclose(X[4], expect, atol=1e-4)


@pytest.mark.parametrize("fit_bias", [True, False])
def test_noise_free_draw_is_the_als_wr_solution(fit_bias):
    # the chain's start: unit noise precision, row weights 1 / n_u, prior N(0, (reg I)^-1) and
    # noise_scale=0 give (G'G + reg n_u I)^-1 G't, bias regularised too, empty rows 0
    m = random_csr(40, 25, 0.3, 9, empty_rows=(6,))
    d, reg = 5, 0.1
    k = d - 1 if fit_bias else d
    rng = np.random.default_rng(10)
    X = rng.normal(size=(40, d)).astype(np.float32)
    Y = rng.normal(size=(25, d)).astype(np.float32)
    n_u = np.diff(m.indptr)
    xw = (1.0 / np.maximum(n_u, 1)).astype(np.float32)
    order = balanced_order(n_u)
    args = (m.indptr.astype(np.int64), m.indices, m.data)
    prior = (np.zeros(d, np.float32), np.zeros((1, d), np.float32),
             (reg * np.eye(d)).astype(np.float32), fit_bias)
    draws = {}
    for scale, key in ((0.0, 1), (0.0, 2), (1.0, 1), (0.5, 1)):
        draws[scale, key] = X.copy()
        kb.sample_rows(*args, draws[scale, key], Y, xw, np.ones(25, np.float32), 3.0, 1.0, *prior,
                       np.uint64(key), order, 3, noise_scale=scale, n_threads=2)
    mean = draws[0.0, 1]
    np.testing.assert_array_equal(mean, draws[0.0, 2])  # no draws made
    assert np.all(mean[6] == 0)
    want, want_b = X[:, :k].astype(np.float64), np.zeros(40)
    yb = Y[:, k] if fit_bias else np.zeros(25, np.float32)
    solve_rows_reference(m.indptr, m.indices, m.data, want, want_b, Y[:, :k], yb, 3.0, reg,
                         fit_bias)
    np.testing.assert_allclose(mean[:, :k], want, atol=2e-4)
    if fit_bias:
        np.testing.assert_allclose(mean[:, k], want_b, atol=2e-4)
    # the noise is scaled around the same mean
    np.testing.assert_allclose(draws[0.5, 1] - mean, 0.5 * (draws[1.0, 1] - mean), atol=1e-5)
    assert not np.allclose(draws[1.0, 1], mean, atol=1e-2)


@pytest.mark.parametrize("fit_bias", [True, False])
def test_row_squared_errors_match_reference(fit_bias):
    m = random_csr(25, 15, 0.4, 3)
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(25, 4)).astype(np.float32), rng.normal(size=(15, 4)).astype(np.float32)
    yw = rng.gamma(2.0, 0.5, 15).astype(np.float32)
    got = kb.row_squared_errors(m.indptr.astype(np.int64), m.indices, m.data, X, Y, yw, 3.0,
                                fit_bias, balanced_order(np.diff(m.indptr)), 4)
    want = kb.row_squared_errors_reference(m.indptr, m.indices, m.data, X, Y, yw, 3.0, fit_bias)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    # row 0 by hand
    j = m.indices[m.indptr[0]:m.indptr[1]]
    pred = 3.0 + (X[0, -1] + Y[j, -1] if fit_bias else 0.0) + (
        Y[j, :-1] @ X[0, :-1] if fit_bias else Y[j] @ X[0])
    e2 = (m.data[m.indptr[0]:m.indptr[1]] - pred) ** 2
    assert got[1][0] == pytest.approx(e2.sum(), rel=1e-5)
    assert got[0][0] == pytest.approx((yw[j] * e2).sum(), rel=1e-5)


def test_implicit_kernels_match_reference():
    # offsets: a gather over each row's rated columns; the Gibbs pass over the weights keeps the
    # residuals consistent with the weights it draws
    m = random_csr(30, 20, 0.3, 6, empty_rows=(2,))
    t = m.tocsc()
    d = 4
    rng = np.random.default_rng(7)
    counts = np.diff(m.indptr).astype(np.float64)
    xs = model_module._inv_sqrt(counts)
    assert xs[2] == 0.0
    W = rng.normal(size=(20, d)).astype(np.float32)
    off, want = np.empty((30, d), np.float32), np.empty((30, d))
    kb.implicit_offsets(m.indptr.astype(np.int64), m.indices, xs, W, off,
                        balanced_order(np.diff(m.indptr)), 4)
    kb.implicit_offsets_reference(m.indptr, m.indices, xs, W, want)
    np.testing.assert_allclose(off, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(want[0], xs[0] * W[m.indices[m.indptr[0]:m.indptr[1]]].sum(0))
    X = rng.normal(size=(30, d)).astype(np.float32)
    R = (X - want).astype(np.float32)
    Rr = R.astype(np.float64)
    Wr = W.astype(np.float64)
    B = rng.normal(size=(d, d))
    Lam = B @ B.T + d * np.eye(d)
    cit = np.linalg.inv(np.linalg.cholesky(Lam)).T
    key = np.uint64(77)
    z = kb.normal_rows_reference(key, 20, d)
    kb.sample_implicit_reference(t.indptr, t.indices, xs, Wr, Rr, 0.7, cit, z)
    kb.sample_implicit(t.indptr.astype(np.int64), t.indices, xs, W, R, 0.7, cit, key)
    np.testing.assert_allclose(W, Wr, atol=1e-4)
    np.testing.assert_allclose(R, Rr, atol=1e-4)
    kb.implicit_offsets_reference(m.indptr, m.indices, xs, Wr, want)
    np.testing.assert_allclose(Rr, X - want, atol=1e-6)  # R started from a float32 copy
    # without data a weight is its prior draw, N(0, (lam Lambda)^-1)
    e = random_csr(3, 2, 0.0, 0)
    Wz, Rz = np.zeros((3, d), np.float32), np.zeros((2, d), np.float32)
    kb.sample_implicit(e.indptr.astype(np.int64), e.indices, np.zeros(2, np.float32), Wz, Rz,
                       4.0, cit, key)
    np.testing.assert_allclose(Wz, z[:3] @ cit.T / 2.0, atol=1e-5)


def test_keyed_normal_draws():
    # the kernels' draws equal the NumPy reference, depend only on (key, row), and are
    # standard normal
    from numba import njit

    @njit
    def rows(key, first, n, d):
        out = np.empty((n, d), np.float32)
        for r in range(n):
            kb.normal_row(key, first + r, out[r])
        return out

    key = np.uint64(987654321)
    got = rows(key, 0, 300, 7)
    np.testing.assert_allclose(got, kb.normal_rows_reference(key, 300, 7), atol=1e-6)
    np.testing.assert_array_equal(rows(key, 100, 5, 7), got[100:105])
    assert not np.allclose(rows(np.uint64(987654322), 0, 5, 7), got[:5])
    z = rows(np.uint64(3), 0, 100_000, 5).ravel().astype(np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1.0) < 0.01
    assert abs(np.mean(z ** 4) - 3.0) < 0.05            # normal kurtosis
    assert abs(np.mean(z < -1.959964) - 0.025) < 0.002  # normal tail
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01


def test_wishart_draws_have_the_right_mean():
    # E[Wishart(W, nu)] = nu W
    rng = np.random.default_rng(0)
    W = np.array([[0.5, 0.1, 0.0], [0.1, 0.3, -0.05], [0.0, -0.05, 0.2]])
    draws = np.mean([model_module._sample_wishart(W, 7, rng) for _ in range(4000)], axis=0)
    np.testing.assert_allclose(draws, 7 * W, atol=0.06)


def test_normal_wishart_concentrates_on_the_rows_distribution():
    # with many rows the conditional prior is close to the rows' own mean and precision
    rng = np.random.default_rng(1)
    cov = np.array([[0.5, 0.2], [0.2, 0.3]])
    mean = np.array([0.4, -1.0])
    X = rng.multivariate_normal(mean, cov, size=20000).astype(np.float32)
    m, prec = model_module._sample_normal_wishart(X, 2.0, rng)
    np.testing.assert_allclose(prec, np.linalg.inv(cov), rtol=0.05)
    np.testing.assert_allclose(m, mean, atol=0.02)


def test_compress_is_the_best_low_rank_approximation(monkeypatch):
    # in place over the first `cols` columns of the buffers, 7 rows at a time
    monkeypatch.setattr(model_module, "CHUNK_ROWS", 7)
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(40, 12)), rng.normal(size=(30, 12))
    bA, bB = np.hstack([A, np.zeros((40, 3))]), np.hstack([B, np.zeros((30, 3))])
    assert model_module._compress(bA, bB, 12, 12) == 12
    np.testing.assert_allclose(bA[:, :12] @ bB[:, :12].T, A @ B.T, atol=1e-10)
    bA, bB = A.copy(), B.copy()
    assert model_module._compress(bA, bB, 12, 4) == 4
    U, s, Vt = np.linalg.svd(A @ B.T)
    np.testing.assert_allclose(bA[:, :4] @ bB[:, :4].T, (U[:, :4] * s[:4]) @ Vt[:4], atol=1e-9)
    # repeated columns (identical samples) are redundant, not a numerical problem
    bA = np.hstack([A, A]).astype(np.float32)
    bB = np.hstack([B, B]).astype(np.float32)
    r = model_module._compress(bA, bB, 24, 30)
    assert r <= 12
    np.testing.assert_allclose(bA[:, :r] @ bB[:, :r].T, 2 * A @ B.T, atol=1e-3)


def test_shrink_moves_the_leading_columns_in_place(monkeypatch):
    monkeypatch.setattr(model_module, "CHUNK_ROWS", 3)
    M = np.arange(20 * 6, dtype=np.float32).reshape(20, 6)
    flat = M.ravel().copy()
    out = model_module._shrink(flat, 20, 6, 4, np.float32(0.5))
    np.testing.assert_array_equal(out, M[:, :4] * 0.5)
    assert out.flags.c_contiguous and out.base is flat and flat.size == 80


def test_prediction_is_the_average_over_kept_samples(monkeypatch):
    # record every sweep's sample and check the model scores their averaged prediction
    samples = []
    original = kb.sample_rows

    def recording(indptr, indices, data, X, Y, *args, **kwargs):
        original(indptr, indices, data, X, Y, *args, **kwargs)
        # the item half ends a sweep; noise-free calls are the ridge sweeps that start the chain
        if X.shape[0] == 12 and kwargs.get("noise_scale", 1.0) != 0:
            samples.append((Y.copy(), X.copy()))

    monkeypatch.setattr(kb, "sample_rows", recording)
    m = random_csr(20, 12, 0.5, 5)
    model = BayesianMF(n_factors=3, n_epochs=9, burn_in=4, max_rank=1000, random_state=0,
                       num_threads=1).fit(m)
    kept = samples[4:]
    assert model.n_samples_ == len(kept) == 5 and model.rank_ == 15
    mean = np.mean([m.data.mean() + U[:, -1:] + V[:, -1] + U[:, :3] @ V[:, :3].T
                    for U, V in kept], axis=0)
    np.testing.assert_allclose(model.reconstruct(), mean, atol=1e-4)


def test_recovers_low_rank_matrix():
    # half the cells of a noiseless rank-3 matrix with biases predict the other half closely
    train, test, shape = low_rank_ratings()
    model = BayesianMF(n_factors=3, n_epochs=80, burn_in=30, random_state=0).fit(
        Ratings.from_indices(*train, shape=shape))
    assert rmse(test[2], model.predict(test[0], test[1])) < 0.08
    # the noise precision learnt is high: the data has no noise
    assert np.mean(model.noise_precision_history_[-20:]) > 100
    assert model.rank_ == 12  # 50 samples of rank 3 compressed to the default 4 * n_factors


def test_robust_noise_scales_find_the_noisy_user_and_item():
    # user 0 and item 0 get heavy noise on clean low-rank data: their noise scales are smallest
    (u, i, r), test, shape = low_rank_ratings()
    rng = np.random.default_rng(3)
    r = r.copy()
    r[u == 0] += rng.normal(0, 1.5, (u == 0).sum())
    r[i == 0] += rng.normal(0, 1.5, (i == 0).sum())
    data = Ratings.from_indices(u, i, r, shape=shape)
    model = BayesianMF(n_factors=3, n_epochs=60, burn_in=20, random_state=0).fit(data)
    assert np.argmin(model.user_noise_scale_) == 0 and np.argmin(model.item_noise_scale_) == 0
    assert model.user_noise_scale_[0] < 0.2 * np.median(model.user_noise_scale_)
    plain = BayesianMF(n_factors=3, n_epochs=60, burn_in=20, noise="gaussian",
                       random_state=0).fit(data)
    assert np.all(plain.user_noise_scale_ == 1) and np.all(plain.item_noise_scale_ == 1)
    # down-weighting the noisy rows predicts the clean cells better
    clean = (test[0] != 0) & (test[1] != 0)
    err = [rmse(test[2][clean], m.predict(test[0][clean], test[1][clean])) for m in (model, plain)]
    assert err[0] < err[1]


@pytest.mark.parametrize("noise", ["gaussian", "rows"])
def test_deterministic_and_thread_independent(noise, monkeypatch):
    # every random draw comes from NumPy's generator, so threads do not change the samples
    # (small data normally runs on one thread: lift that so two threads really run)
    monkeypatch.setattr(als_module, "RATINGS_PER_THREAD", 1)
    train, _, shape = low_rank_ratings(seed=1)
    data = Ratings.from_indices(*train, shape=shape)
    fits = [BayesianMF(n_factors=3, n_epochs=8, burn_in=3, noise=noise, random_state=5,
                       num_threads=t).fit(data)
            for t in (1, 1, 2)]
    for other in fits[1:]:
        np.testing.assert_array_equal(fits[0].user_factors_, other.user_factors_)
        np.testing.assert_array_equal(fits[0].item_bias_, other.item_bias_)
        assert fits[0].loss_history_ == other.loss_history_


def test_unknown_ids_and_empty_rows_fall_back():
    u = ["a", "a", "b", "b", "c", "c"]
    i = ["x", "y", "x", "z", "y", "z"]
    r = [5.0, 3.0, 4.0, 2.0, 1.0, 4.0]
    model = BayesianMF(n_factors=2, n_epochs=10, burn_in=2, random_state=0).fit((u, i, r))
    p = model.predict(["a", "zz", "zz"], ["zz", "x", "zz"])
    assert p[0] == pytest.approx(np.clip(model.global_mean_ + model.user_bias_[0], 1, 5))
    assert p[1] == pytest.approx(np.clip(model.global_mean_ + model.item_bias_[0], 1, 5))
    assert p[2] == pytest.approx(model.global_mean_)
    # users 3..5 and items 3..4 have no ratings: drawn from the prior, still finite
    data = Ratings.from_indices([0, 0, 1, 2], [0, 1, 1, 2], [4.0, 3.0, 5.0, 2.0], shape=(6, 5))
    model = BayesianMF(n_factors=2, n_epochs=6, burn_in=2, random_state=0).fit(data)
    assert np.all(np.isfinite(model.reconstruct()))
    assert 2.0 <= model.predict([5], [4])[0] <= 5.0


def test_ml100k_u1(ml100k_dir):
    # a short chain on the canonical u1 split already beats Surprise SVD (0.951) by far; the
    # implicit-feedback prior (default) beats plain priors clearly
    train = read_ratings(ml100k_dir / "u1.base")
    test = read_ratings(ml100k_dir / "u1.test").to_frame()
    scores = {}
    for implicit in ("both", "none"):
        model = BayesianMF(n_epochs=60, burn_in=20, implicit=implicit, random_state=0).fit(train)
        scores[implicit] = rmse(test["rating"], model.predict(test["user"], test["item"]))
    assert 0.875 < scores["both"] < 0.895
    assert 0.89 < scores["none"] < 0.915
    assert scores["both"] < scores["none"] - 0.01


@pytest.mark.parametrize("params, match", [
    ({"n_factors": 0}, "n_factors must be an int >= 1, got 0"),
    ({"n_epochs": 0}, "n_epochs must be an int >= 1, got 0"),
    ({"burn_in": -1}, "burn_in must be an int >= 0, got -1"),
    ({"n_epochs": 10, "burn_in": 10}, "burn_in must be smaller than n_epochs=10"),
    ({"noise_precision": 0.0}, "noise_precision must be a number > 0.0, got 0.0"),
    ({"noise_precision": "high"}, "noise_precision must be a finite number"),
    ({"max_rank": 3}, "max_rank must be an int >= 10, got 3"),
    ({"beta0": -1.0}, "beta0 must be a number > 0.0, got -1.0"),
    ({"noise": "laplace"}, "noise must be one of \\('rows', 'gaussian'\\), got 'laplace'"),
    ({"noise_dof": 0}, "noise_dof must be a number > 0.0, got 0"),
    ({"biases": 1}, "biases must be True or False, got 1"),
    ({"implicit": "all"}, "implicit must be one of \\('both', 'users', 'items', 'none'\\), "
                          "got 'all'"),
    ({"num_threads": 1.5}, "num_threads must be an int >= 0, got 1.5"),
])
def test_bad_hyperparameters_name_the_argument(params, match, seed_matrix):
    with pytest.raises((ValueError, TypeError), match=match):
        BayesianMF(**params).fit(seed_matrix)
