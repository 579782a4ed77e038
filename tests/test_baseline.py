"""Baseline: the ALS sweep against its NumPy reference, exact recovery of a pure bias model,
SGD variant, unknown ids, bad hyperparameters and the MovieLens 100K figure."""
import numpy as np
import pandas as pd
import pytest

import mfrec
from mfrec.evaluation.metrics import rmse
from mfrec.kernels import sgd as K

from conftest import read_ml100k_split


def bias_data(seed=0, n_users=40, n_items=30, density=0.6):
    rng = np.random.default_rng(seed)
    bu, bi = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    R = 3.5 + bu[:, None] + bi[None, :]
    mask = rng.random(R.shape) < density
    u, i = np.nonzero(mask)
    tu, ti = np.nonzero(~mask)
    return (u, i, R[u, i]), (tu, ti, R[tu, ti])


def test_als_sweep_matches_reference():
    # the Numba sweep over CSR/CSC equals the bincount formula
    (u, i, r), _ = bias_data()
    ratings = mfrec.Ratings.from_indices(u, i, r)
    csr = ratings.csr
    mu = float(r.mean())
    bu, bi = np.zeros(ratings.n_users), np.zeros(ratings.n_items)
    ru, ri = bu.copy(), bi.copy()
    for _ in range(3):
        sse = K.bias_als_sweep(csr.indptr, csr.indices, csr.data, ratings.item_counts(), bu, bi,
                               mu, 2.0, 3.0)
        want = K.bias_als_sweep_reference(ratings.user_index, csr.indices,
                                          csr.data.astype(np.float64), ru, ri, mu, 2.0, 3.0)
        assert sse == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(bu, ru, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bi, ri, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["als", "sgd"])
def test_recovers_pure_bias_model(method):
    # ratings that are exactly mu + b_u + b_i: held-out cells are predicted (nearly) exactly
    train, test = bias_data()
    kw = dict(regularization=0.0, n_epochs=60) if method == "als" else dict(
        regularization=0.0, n_epochs=300, learning_rate=0.05)
    model = mfrec.Baseline(method=method, random_state=0, **kw).fit(train)
    assert rmse(test[2], model.predict(test[0], test[1], clip=False)) < 0.01
    assert model.user_factors_.shape == (40, 0)


def test_unknown_ids_and_unrated_rows():
    frame = pd.DataFrame({"user": [1, 1, 2, 3], "item": ["a", "b", "a", "c"],
                          "rating": [4.0, 2.0, 5.0, 3.0]})
    model = mfrec.Baseline().fit(frame)
    ia = model.item_vocab_.lookup(["a"])[0]
    np.testing.assert_allclose(model.predict([99, 99], ["a", "zz"]),
                               [model.global_mean_ + model.item_bias_[ia], model.global_mean_],
                               rtol=1e-6)
    # users/items in the vocabulary with no rating get zero bias (reg > 0) and stay finite
    ratings = mfrec.Ratings.from_indices([0, 1], [0, 1], [5.0, 1.0], shape=(3, 3))
    for method in ("als", "sgd"):
        m = mfrec.Baseline(method=method, random_state=0).fit(ratings)
        assert m.user_bias_[2] == 0 and m.item_bias_[2] == 0
        assert np.isfinite(m.predict([2], [2])).all()
    m = mfrec.Baseline(regularization=0.0).fit(ratings)
    assert m.user_bias_[2] == 0 and np.isfinite(m.user_bias_).all()


def test_loss_decreases_and_validation_is_recorded():
    train, test = bias_data(seed=1)
    model = mfrec.Baseline(regularization=(1.0, 2.0)).fit(train, validation=test)
    assert len(model.loss_history_) == len(model.validation_history_) == 10
    assert model.loss_history_[-1] <= model.loss_history_[0]
    assert model.validation_history_[-1] < 0.2


@pytest.mark.parametrize("kw, exc, match", [
    (dict(method="newton"), ValueError, r"method must be one of \('als', 'sgd'\), got 'newton'"),
    (dict(regularization=-1), ValueError, "regularization must be a number >= 0, got -1"),
    (dict(regularization=(1, 2, 3)), ValueError, r"regularization must be a number or a \(user"),
    (dict(regularization="x"), TypeError, "regularization"),
    (dict(n_epochs=0), ValueError, "n_epochs must be an int >= 1, got 0"),
    (dict(learning_rate=-0.1), ValueError, "learning_rate"),
])
def test_bad_hyperparameters(kw, exc, match, seed_matrix):
    with pytest.raises(exc, match=match):
        mfrec.Baseline(**kw).fit(seed_matrix)


def test_movielens_u1_matches_known_value(ml100k_dir):
    # ALS with (15, 10) is deterministic: u1 test RMSE 0.9599 (Surprise BaselineOnly: 0.96 on u1)
    train, test = read_ml100k_split(ml100k_dir, "u1")
    model = mfrec.Baseline().fit(train[["user", "item", "rating"]])
    assert rmse(test.rating, model.predict(test.user, test.item)) == pytest.approx(0.9599, abs=5e-4)


@pytest.mark.parametrize("method", ["als", "sgd"])
def test_fold_in_solves_the_user_bias(method):
    # ALS: folding in a training user's ratings returns exactly its trained bias (one more sweep
    # would); SGD: the closed-form optimum of the per-rating objective, near the trained bias
    train, _ = bias_data(seed=2)
    model = mfrec.Baseline(method=method, n_epochs=30 if method == "als" else 100,
                           random_state=0).fit(train)
    for u in (0, 7):
        sel = train[0] == u
        folded = model.fold_in((train[1][sel], train[2][sel]))
        assert folded.factors.shape == (1, 0)
        tol = 1e-6 if method == "als" else 0.05
        assert folded.bias[0] == pytest.approx(model.user_bias_[u], abs=tol)
