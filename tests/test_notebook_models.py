"""The notebook's three methods: SVD, NMF and gradient descent, on its matrix and beyond."""
import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp

from mfrec import DivergenceError, Ratings, as_ratings
from mfrec.kernels.sparse import observed_dots, observed_dots_ref
from mfrec.models.gd import GradientDescent
from mfrec.models.nmf import NMF
from mfrec.models.svd import SVD

# printed by the notebook (cell 3)
NOTEBOOK_USER = np.array([
    [5.43202282, -2.91659222, -0.93896115, -0.32399058],
    [3.60310831, -2.38145478, 1.47881379, 0.39924103],
    [4.99132244, 3.11531436, -1.13793608, 0.29430966],
    [3.34336945, 2.65423747, 1.63067173, -0.34324022]])
NOTEBOOK_ITEM = np.array([
    [0.63510826, 0.39793542, 0.14861237, 0.22995808, 0.60275911],
    [-0.59296528, 0.01927595, 0.27236776, -0.34260524, 0.67561681],
    [0.24395563, -0.88724353, 0.30237083, 0.15374882, 0.19549361],
    [-0.15341309, -0.18993951, -0.83655012, 0.32103755, 0.37081828]])


def low_rank(n_users, n_items, rank, seed, nonneg=False, missing=0.3):
    rng = np.random.default_rng(seed)
    A, B = rng.random((n_users, rank)), rng.random((n_items, rank))
    if not nonneg:  # mixed signs, still exactly rank `rank`, values around 1..5
        A, B = A * 2 + 0.3, B * 2 - 0.2
    full = A @ B.T
    mask = rng.random(full.shape) >= missing
    mask[np.arange(n_users), np.arange(n_users) % n_items] = True  # nobody empty
    return full, mask


# ---------------------------------------------------------------- SVD
def test_svd_reproduces_notebook(seed_matrix):
    m = SVD().fit(seed_matrix)
    np.testing.assert_allclose(m.user_factors_, NOTEBOOK_USER, atol=1e-6)
    np.testing.assert_allclose(m.item_factors_.T, NOTEBOOK_ITEM, atol=1e-6)
    np.testing.assert_allclose(m.reconstruct(), seed_matrix, atol=1e-12)


def test_svd_truncated_sparse_never_densifies(monkeypatch):
    X = sp.random(2500, 1700, density=0.01, random_state=1, format="csr") * 4
    X.data += 1
    def no_dense(*a, **k):
        raise AssertionError("dense SVD called")
    monkeypatch.setattr(scipy.linalg, "svd", no_dense)
    m = SVD(n_factors=6, random_state=0).fit(X)
    s = m.singular_values_
    assert np.all(np.diff(s) <= 0)
    # top singular values agree with the eigenvalues of the Gram matrix
    gram = (X.T @ X).toarray()
    top = np.sqrt(np.sort(np.linalg.eigvalsh(gram))[::-1][:6])
    np.testing.assert_allclose(s, top, rtol=1e-6)
    # and the factors are singular pairs: X v = s u
    U = m.user_factors_ / s
    np.testing.assert_allclose(X @ m.item_factors_, m.user_factors_, atol=1e-6 * s[0])
    np.testing.assert_allclose(U.T @ U, np.eye(6), atol=1e-8)


def test_svd_sign_convention_is_deterministic(seed_matrix):
    a = SVD(n_factors=3, random_state=1).fit(sp.csr_matrix(seed_matrix)).user_factors_
    cols = np.argmax(np.abs(a), axis=0)
    assert np.all(a[cols, np.arange(3)] > 0)


def test_svd_ignore_recovers_low_rank_blanks():
    full, mask = low_rank(30, 20, 2, seed=0)
    X = np.where(mask, full, np.nan)
    m = SVD(n_factors=2, missing="ignore", n_epochs=300, tol=0).fit(
        as_ratings(X, missing_value=np.nan))
    err = np.abs(m.reconstruct() - full)[~mask]
    assert err.max() < 0.05, err.max()
    assert m.loss_history_[-1] < m.loss_history_[0]


def test_svd_bad_params(seed_matrix):
    with pytest.raises(ValueError, match="n_factors=5 exceeds min"):
        SVD(n_factors=5).fit(seed_matrix)
    with pytest.raises(ValueError, match="missing must be one of"):
        SVD(missing="mean").fit(seed_matrix)
    with pytest.raises(ValueError, match="n_factors must be an int >= 1, got 0"):
        SVD(n_factors=0).fit(seed_matrix)


# ---------------------------------------------------------------- NMF
def test_nmf_zero_reconstructs_notebook_closer_than_notebook(seed_matrix):
    m = NMF(n_factors=6, missing="zero", random_state=0).fit(seed_matrix)
    assert np.abs(m.reconstruct() - seed_matrix).max() <= 1e-3  # notebook: 3.2e-3
    assert m.user_factors_.min() >= 0 and m.item_factors_.min() >= 0
    assert m.user_factors_.shape == (4, 6) and m.item_factors_.shape == (5, 6)


def test_nmf_sparse_equals_dense(seed_matrix):
    for missing in ("zero", "ignore"):
        a = NMF(n_factors=3, missing=missing, random_state=2, n_epochs=50).fit(seed_matrix)
        b = NMF(n_factors=3, missing=missing, random_state=2, n_epochs=50).fit(
            sp.csr_matrix(seed_matrix))
        np.testing.assert_allclose(a.user_factors_, b.user_factors_, rtol=1e-12)


def test_nmf_ignore_fits_observed_only():
    full, mask = low_rank(40, 25, 3, seed=1, nonneg=True)
    X = np.where(mask, full, 0.0)
    m = NMF(n_factors=3, regularization=0.0, n_epochs=2000, tol=0, random_state=0).fit(X)
    pred = m.reconstruct()
    assert np.sqrt(np.mean((pred - full)[mask] ** 2)) < 0.02
    assert np.sqrt(np.mean((pred - full)[~mask] ** 2)) < 0.1  # blanks predicted, not zeros
    assert np.all(np.diff(m.loss_history_) <= 1e-12)  # multiplicative updates never go up


def test_nmf_rejects_negative_ratings():
    with pytest.raises(ValueError, match="non-negative ratings"):
        NMF().fit(np.array([[1.0, -2.0]]))


# ---------------------------------------------------------------- gradient descent
def notebook_gd(R, seed, k=6, lr=0.01, reg=0.1, iters=1000):
    """The notebook's cell 7, verbatim apart from the seed."""
    np.random.seed(seed)
    user_matrix = np.random.random((R.shape[0], k))
    item_matrix = np.random.random((k, R.shape[1]))
    for _ in range(iters):
        error = R - np.dot(user_matrix, item_matrix)
        user_matrix -= lr * (-2 * np.dot(error, item_matrix.T) + 2 * reg * user_matrix)
        item_matrix -= lr * (-2 * np.dot(user_matrix.T, error) + 2 * reg * item_matrix)
    predicted = np.dot(user_matrix, item_matrix)
    loss = np.sum((R - predicted) ** 2) / np.sum(R != 0) + 0.5 * reg * (
        np.sum(user_matrix ** 2) + np.sum(item_matrix ** 2))
    return user_matrix, item_matrix, loss


def test_gd_is_the_notebook(seed_matrix):
    U, V, loss = notebook_gd(seed_matrix, seed=7)
    m = GradientDescent(learning_rate=0.01, regularization=0.1, missing="zero",
                        random_state=7).fit(seed_matrix)
    np.testing.assert_allclose(m.user_factors_, U, rtol=1e-12)
    np.testing.assert_allclose(m.item_factors_.T, V, rtol=1e-12)
    assert m.loss_history_[-1] == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gd_final_loss_lands_where_notebook_does(seed_matrix, seed):
    m = GradientDescent(learning_rate=0.01, regularization=0.1, missing="zero",
                        random_state=seed).fit(seed_matrix)
    assert m.loss_history_[-1] == pytest.approx(1.739, abs=0.01)  # notebook: 1.7391


def test_gd_prints_notebook_lines(seed_matrix, capsys):
    GradientDescent(learning_rate=0.01, missing="zero", random_state=0, verbose=100,
                    n_epochs=201).fit(seed_matrix)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["Iteration 0", "Iteration 100", "Iteration 200"]


def test_gd_sparse_zero_path_equals_dense(seed_matrix, monkeypatch):
    a = GradientDescent(learning_rate=0.01, missing="zero", random_state=3, n_epochs=100).fit(seed_matrix)
    import mfrec.models.gd as gd
    monkeypatch.setattr(gd, "_DENSE_CELLS", 0)
    b = GradientDescent(learning_rate=0.01, missing="zero", random_state=3, n_epochs=100).fit(seed_matrix)
    np.testing.assert_allclose(a.user_factors_, b.user_factors_, rtol=1e-10)


def test_gd_ignore_counts_observed_only(seed_matrix):
    full, mask = low_rank(30, 20, 2, seed=3)
    X = np.where(mask, full, np.nan)
    m = GradientDescent(n_factors=2, regularization=0.001, n_epochs=3000, random_state=0).fit(
        as_ratings(X, missing_value=np.nan))
    pred = m.reconstruct()
    assert np.sqrt(np.mean((pred - full)[mask] ** 2)) < 0.05
    assert np.sqrt(np.mean((pred - full)[~mask] ** 2)) < 0.2
    # with "ignore" the loss is the penalised squared error the "auto" step descends: monotone
    assert np.all(np.diff(m.loss_history_) <= 1e-12)
    assert m.loss_history_[-1] < 0.5 * m.loss_history_[0]


def test_gd_divergence_is_reported():
    rng = np.random.default_rng(0)
    X = sp.random(200, 100, density=0.5, random_state=0, format="csr")
    X.data = rng.integers(1, 6, X.nnz).astype(float)
    with pytest.raises(DivergenceError, match="diverged .* learning_rate=0.5"):
        GradientDescent(learning_rate=0.5, n_epochs=50, random_state=0).fit(X)


def test_gd_bad_params(seed_matrix):
    with pytest.raises(TypeError, match="learning_rate must be a finite number > 0"):
        GradientDescent(learning_rate="fast").fit(seed_matrix)
    with pytest.raises(ValueError, match="regularization must be a number >= 0"):
        GradientDescent(regularization=-1.0).fit(seed_matrix)


# ---------------------------------------------------------------- kernel vs reference
@pytest.mark.parametrize("shape", [(50, 40), (300, 100)])  # NumPy path, then the kernel
def test_observed_dots_matches_reference(shape):
    from mfrec.kernels import sparse
    rng = np.random.default_rng(0)
    X = sp.random(*shape, density=0.2, random_state=0, format="csr")
    assert (X.nnz > sparse._NUMPY_MAX_NNZ) == (shape[0] == 300)
    for dtype in (np.float32, np.float64):
        P = rng.standard_normal((shape[0], 7)).astype(dtype)
        Q = rng.standard_normal((shape[1], 7)).astype(dtype)
        got = observed_dots(X.indptr, X.indices, P, Q)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, observed_dots_ref(X.indptr, X.indices, P, Q),
                                   rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


def test_predict_raw_ids_and_fallback():
    import pandas as pd
    df = pd.DataFrame({"user": ["a", "a", "b", "c"], "item": ["x", "y", "x", "y"],
                       "rating": [5.0, 3.0, 4.0, 1.0]})
    m = GradientDescent(n_factors=2, random_state=0, n_epochs=200).fit(df)
    p = m.predict(["a", "b", "zz"], ["x", "x", "x"])
    assert p.shape == (3,) and 1.0 <= p.min() and p.max() <= 5.0
    with pytest.raises(KeyError, match="unknown user id"):
        m.predict(["zz"], ["x"], unknown="error")


# ---------------------------------------------------------------- fold-in
@pytest.mark.parametrize("make", [
    lambda: SVD(n_factors=2),
    lambda: GradientDescent(n_factors=2, random_state=0),
    lambda: GradientDescent(n_factors=2, learning_rate=0.01, missing="zero", random_state=0),
    lambda: NMF(n_factors=2, random_state=0, n_epochs=500),
])
def test_fold_in_of_a_training_user_reproduces_it(seed_matrix, make):
    m = make().fit(seed_matrix)
    folded = m.fold_in({0: 5, 1: 3, 3: 2, 4: 1})  # user 0's ratings
    np.testing.assert_allclose(folded.factors[0], m.user_factors_[0], rtol=1e-3, atol=1e-4)
    ids, _ = m.recommend(folded, n=1)
    assert ids[0, 0] == 2  # the one item user 0 has not rated


def test_nmf_fold_in_is_non_negative(seed_matrix):
    m = NMF(n_factors=3, missing="zero", random_state=0).fit(seed_matrix)
    assert m.fold_in({0: 1, 4: 5}).factors.min() >= 0


# ---------------------------------------------------------------- cold pairs
@pytest.mark.parametrize("make", [
    lambda m: NMF(n_factors=2, missing=m, random_state=0),
    lambda m: GradientDescent(n_factors=2, missing=m, random_state=0, n_epochs=50),
    lambda m: SVD(n_factors=2, missing=m),
])
def test_pairs_without_training_ratings_score_the_mean_when_blanks_are_ignored(make):
    # item 3 is in the vocabulary (the shape says 4 items) but has no rating; 99 is unknown
    ratings = Ratings.from_indices([0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 0, 2],
                                   [5.0, 3.0, 4.0, 2.0, 1.0, 4.0], shape=(3, 4))
    mean = 19.0 / 6
    m = make("ignore").fit(ratings)
    np.testing.assert_allclose(m.predict([0, 1, 0], [3, 3, 0], unknown="fallback")[:2], mean)
    np.testing.assert_allclose(m.predict([99, 0], [0, 99]), mean)  # unknown user, unknown item
    np.testing.assert_allclose(m.predict(m.fold_in({}), [0, 1, 3]), mean)
    known = m.predict([0], [0])[0]
    assert known != pytest.approx(mean)  # a rated pair still scores its factors
    z = make("zero").fit(ratings)  # blanks are zeros: an unrated item's score stays 0
    assert z.predict([0], [3])[0] == pytest.approx(0.0, abs=1e-9)
