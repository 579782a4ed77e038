"""BiasedMF: kernel vs reference, recovery of a known low-rank matrix, determinism, unknown ids,
validation/early stopping, bad hyperparameters and accuracy on MovieLens 100K."""
import numpy as np
import pandas as pd
import pytest

import mfrec
from mfrec._threads import thread_context
from mfrec.evaluation.metrics import rmse
from mfrec.evaluation.splits import train_test_split
from mfrec.kernels import sgd as K

from conftest import fold_in_errors, read_ml100k_split


def low_rank(seed=0, n_users=100, n_items=80, rank=3, density=0.5):
    """Ratings 3 + b_u + b_i + P Q^T exactly (no noise); half observed, the rest held out."""
    rng = np.random.default_rng(seed)
    P = rng.normal(0, 0.6, (n_users, rank))
    Q = rng.normal(0, 0.6, (n_items, rank))
    R = 3.0 + rng.normal(0, 0.3, n_users)[:, None] + rng.normal(0, 0.3, n_items)[None, :] + P @ Q.T
    mask = rng.random(R.shape) < density
    u, i = np.nonzero(mask)
    tu, ti = np.nonzero(~mask)
    return (u, i, R[u, i]), (tu, ti, R[tu, ti])


EXACT = dict(n_factors=3, regularization=0.0005, bias_regularization=0.0, n_epochs=200,
             learning_rate=0.02, learning_rate_decay=0.99, init_std=0.1)


def _epoch_inputs(seed=1, nu=30, ni=20, k=5, nnz=300, n_blocks=4):
    rng = np.random.default_rng(seed)
    key = rng.choice(nu * ni, nnz, replace=False)
    r = rng.integers(1, 6, nnz).astype(np.float32)
    csr = mfrec.Ratings.from_indices(key // ni, key % ni, r, shape=(nu, ni)).csr
    data = K.make_blocks(csr.indptr, csr.indices, csr.data, ni, n_blocks, np.random.default_rng(0))
    state = [rng.normal(0, 0.1, s).astype(np.float32) for s in ((nu, k), (ni, k), nu, ni)]
    return data, state


def _relabelled_inputs(seed=1, nu=30, ni=20, nnz=300, n_blocks=4):
    # the layout the trainer uses: users and items by position (the same ratings as
    # _epoch_inputs with the same seed)
    rng = np.random.default_rng(seed)
    key = rng.choice(nu * ni, nnz, replace=False)
    r = rng.integers(1, 6, nnz).astype(np.float32)
    csr = mfrec.Ratings.from_indices(key // ni, key % ni, r, shape=(nu, ni)).csr
    perm = np.random.default_rng(0)
    perm_u = K.ordered_within_blocks(perm.permutation(nu), n_blocks)
    perm_i = perm.permutation(ni).astype(np.int32)
    return K.scatter_blocks(csr.indptr, csr.indices, csr.data, perm_u, perm_i, n_blocks,
                            relabel=True)


@pytest.mark.parametrize("relabel", [False, True])
def test_sgd_epoch_matches_reference(relabel):
    # the Numba epoch (over user runs) and the one-rating-at-a-time NumPy epoch (over the
    # per-rating users) give the same state, with factors by index or by position
    data, state = _epoch_inputs()
    if relabel:
        data = _relabelled_inputs()
    ref = [a.copy() for a in state]
    start = state[0].copy()
    args = [np.float32(x) for x in (3.1, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06)]
    err_k, err_r = np.zeros(16), np.zeros(16)
    with thread_context(1):
        K.sgd_epoch(*data, 1, *state, *args, err_k)
    K.sgd_epoch_reference(*data, 1, *ref, *args, err_r)
    for a, b in zip(state, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(err_k, err_r, rtol=1e-4)
    assert not np.allclose(state[0], start)  # it did move


def test_sgd_epoch_two_workers_close_to_reference():
    # two threads each own half the user blocks and run without barriers: same users, and the
    # result stays close to running the two workers one after the other
    data, state = _epoch_inputs(seed=2, nu=300, ni=60, nnz=6000, n_blocks=8)
    ref = [a.copy() for a in state]
    args = [np.float32(x) for x in (3.0, 0.01, 0.01, 0.02, 0.02, 0.02, 0.02)]
    err_k, err_r = np.zeros(64), np.zeros(64)
    with thread_context(2):
        K.sgd_epoch(*data, 2, *state, *args, err_k)
    K.sgd_epoch_reference(*data, 2, *ref, *args, err_r)
    assert err_k.sum() == pytest.approx(err_r.sum(), rel=0.02)
    np.testing.assert_allclose(state[2], ref[2], atol=0.05)


def test_make_blocks_matches_reference_and_blocks_are_disjoint():
    # the counting-sort kernel orders exactly like the NumPy stable sort; every rating appears
    # once, and a user (an item) lives in one row (column) block only
    rng = np.random.default_rng(2)
    key = rng.choice(50 * 40, 500, replace=False)
    r = rng.random(500).astype(np.float32)
    csr = mfrec.Ratings.from_indices(key // 40, key % 40, r, shape=(52, 40)).csr
    got = K.make_blocks(csr.indptr, csr.indices, csr.data, 40, 4, np.random.default_rng(0))
    want = K.make_blocks_reference(csr.indptr, csr.indices, csr.data, 40, 4,
                                   np.random.default_rng(0))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    rows, runs, items, vals, ptr = got
    users = K.block_users(rows, runs, ptr)
    assert ptr[0] == 0 and ptr[-1] == 500
    assert runs.shape == (4, 52) and runs.sum() == 500
    assert [a.dtype for a in got] == [np.int32, np.uint8, np.int32, np.float32, np.int64]
    assert [a.dtype for a in want] == [a.dtype for a in got]
    assert sorted(zip(users, items, vals)) == sorted(
        zip(np.repeat(np.arange(52), np.diff(csr.indptr)), csr.indices, csr.data))
    blk = np.repeat(np.arange(16), np.diff(ptr))
    for arr, part in ((users, blk // 4), (items, blk % 4)):
        frame = pd.DataFrame({"id": arr, "part": part})
        assert (frame.groupby("id")["part"].nunique() == 1).all()


def test_squared_errors_matches_reference():
    rng = np.random.default_rng(3)
    P = rng.normal(size=(6, 3)).astype(np.float32)
    Q = rng.normal(size=(5, 3)).astype(np.float32)
    bu = rng.normal(size=6).astype(np.float32)
    bi = rng.normal(size=5).astype(np.float32)
    u = np.array([0, 1, -1, 5, 2, -1], dtype=np.int64)
    i = np.array([0, -1, 3, 4, 2, -1], dtype=np.int64)
    r = np.array([1, 2, 3, 4, 5, 3], dtype=np.float32)
    got = K.squared_errors(u, i, r, P, Q, bu, bi, 3.0, 1.0, 5.0)
    want = K.squared_errors_reference(u, i, r, P, Q, bu, bi, 3.0, 1.0, 5.0)
    assert got == pytest.approx(want, rel=1e-5)


def test_recovers_low_rank_matrix():
    # exact rank-3 ratings with biases: held-out entries are predicted almost exactly
    train, test = low_rank()
    model = mfrec.BiasedMF(random_state=0, **EXACT).fit(train)
    pred = model.predict(test[0], test[1], clip=False)
    assert rmse(test[2], pred) < 0.01
    base = mfrec.Baseline().fit(train).predict(test[0], test[1], clip=False)
    assert rmse(test[2], base) > 0.5  # the factors, not the biases, did the work
    assert model.loss_history_[-1] < model.loss_history_[0] / 100


def test_same_seed_same_factors():
    train, _ = low_rank()
    kw = dict(n_factors=4, n_epochs=5, random_state=7)
    a = mfrec.BiasedMF(num_threads=1, **kw).fit(train)
    b = mfrec.BiasedMF(num_threads=1, **kw).fit(train)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    np.testing.assert_array_equal(a.user_bias_, b.user_bias_)
    np.testing.assert_array_equal(a.item_bias_, b.item_bias_)
    d = mfrec.BiasedMF(num_threads=1, n_factors=4, n_epochs=5, random_state=8).fit(train)
    assert not np.array_equal(a.user_factors_, d.user_factors_)


def test_unknown_ids_and_unrated_rows_fall_back_to_baseline():
    frame = pd.DataFrame({"user": ["a", "a", "b", "b", "c"], "item": ["x", "y", "x", "z", "y"],
                          "rating": [5.0, 3.0, 4.0, 1.0, 2.0]})
    model = mfrec.BiasedMF(n_factors=2, n_epochs=3, random_state=0).fit(frame)
    mu, bi = model.global_mean_, model.item_bias_[model.item_vocab_.lookup(["x"])[0]]
    got = model.predict(["nobody", "nobody"], ["x", "nothing"])
    np.testing.assert_allclose(got, [mu + bi, mu], rtol=1e-6)
    with pytest.raises(KeyError, match="nobody"):
        model.predict(["nobody"], ["x"], unknown="error")
    # a vocabulary that holds a user and an item with no training rating: zero factors and biases
    ratings = mfrec.Ratings.from_indices([0, 0, 1, 2], [0, 1, 1, 2], [5, 3, 4, 2], shape=(4, 4))
    model = mfrec.BiasedMF(n_factors=2, n_epochs=3, random_state=0).fit(ratings)
    assert not model.user_factors_[3].any() and model.user_bias_[3] == 0
    assert not model.item_factors_[3].any() and model.item_bias_[3] == 0
    assert np.isfinite(model.predict([3], [3])).all()


def test_validation_history_and_early_stopping():
    train, test = low_rank(seed=4)
    val = pd.DataFrame({"user": test[0], "item": test[1], "rating": test[2]})
    # a large constant step overfits/oscillates; early stopping keeps the best epoch
    model = mfrec.BiasedMF(n_factors=20, n_epochs=60, learning_rate=0.05, learning_rate_decay=1.0,
                           regularization=0.0, init_std=0.3, early_stopping=3,
                           random_state=0).fit(train, validation=val)
    hist = model.validation_history_
    assert len(hist) == model.n_epochs_ == len(model.loss_history_)
    assert model.best_epoch_ == int(np.argmin(hist))
    assert model.n_epochs_ - 1 - model.best_epoch_ <= 3
    got = rmse(test[2], model.predict(test[0], test[1]))
    assert got == pytest.approx(hist[model.best_epoch_], rel=1e-4)
    # without patience every epoch runs and the last model is kept
    full = mfrec.BiasedMF(n_factors=4, n_epochs=6, early_stopping=None, random_state=0).fit(
        train, validation=val)
    assert full.n_epochs_ == 6 and full.best_epoch_ is None and len(full.validation_history_) == 6


@pytest.mark.parametrize("param, value, exc, match", [
    ("n_factors", 0, ValueError, "n_factors must be an int >= 1, got 0"),
    ("n_factors", 2.5, TypeError, "n_factors"),
    ("n_epochs", -1, ValueError, "n_epochs"),
    ("learning_rate", 0.0, ValueError, "learning_rate must be a number > 0, got 0.0"),
    ("learning_rate_decay", 1.5, ValueError, r"learning_rate_decay must be a number in \(0"),
    ("regularization", -0.1, ValueError, "regularization must be a number >= 0, got -0.1"),
    ("bias_regularization", float("nan"), TypeError, "bias_regularization"),
    ("init_std", "big", TypeError, "init_std"),
    ("early_stopping", 0, ValueError, "early_stopping"),
    ("num_threads", -2, ValueError, "num_threads"),
    ("random_state", "seed", TypeError, "random_state"),
    ("verbose", "yes", TypeError, "verbose"),
])
def test_bad_hyperparameters_raise_clear_errors(param, value, exc, match, seed_matrix):
    with pytest.raises(exc, match=match):
        mfrec.BiasedMF(**{param: value}).fit(seed_matrix)


def test_divergence_is_reported_not_silent(seed_matrix):
    with pytest.raises(FloatingPointError, match="learning_rate"):
        mfrec.BiasedMF(learning_rate=50.0, learning_rate_decay=1.0, random_state=0).fit(seed_matrix)


def test_params_clone_and_repr():
    m = mfrec.BiasedMF(n_factors=7, random_state=3)
    assert m.get_params()["n_factors"] == 7
    assert m.clone().get_params() == m.get_params()
    assert repr(m) == "BiasedMF(n_factors=7, random_state=3)"


def test_train_test_split_vocabulary_and_progress(capsys):
    ratings = mfrec.Ratings.from_dense(np.arange(1, 31, dtype=float).reshape(6, 5) % 5 + 1)
    train, test = train_test_split(ratings, test_size=0.3, random_state=0)
    m = mfrec.BiasedMF(n_factors=2, n_epochs=3, random_state=0, verbose=True).fit(
        train, validation=test)
    assert len(m.validation_history_) == 3
    assert "BiasedMF" in capsys.readouterr().err


def test_movielens_u1_default_accuracy(ml100k_dir):
    # defaults (not tuned per split) beat Surprise's SVD on u1 (0.951 measured here)
    train, test = read_ml100k_split(ml100k_dir, "u1")
    model = mfrec.BiasedMF(random_state=0).fit(train[["user", "item", "rating"]])
    got = rmse(test.rating, model.predict(test.user, test.item))
    assert 0.90 < got < 0.925


def test_fold_in_of_a_training_user_predicts_like_the_trained_one():
    # folding a training user's ratings back in gives a vector that predicts that user's
    # held-out ratings about as well as the trained vector does
    train, test = low_rank()
    model = mfrec.BiasedMF(random_state=0).fit(train)
    folded_err, trained_err = fold_in_errors(model, train, test)
    assert folded_err < 1.5 * trained_err
