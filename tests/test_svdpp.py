"""SVDpp: kernels vs references, recovery of a known low-rank matrix, the folded user factors,
determinism, unknown ids, bad hyperparameters and MovieLens 100K accuracy."""
import numpy as np
import pytest

import mfrec
from mfrec._threads import thread_context
from mfrec.evaluation.metrics import rmse
from mfrec.kernels import svdpp as K

from conftest import fold_in_errors, read_ml100k_split
from test_biased_mf import low_rank


def small_csr(seed=0, nu=25, ni=15, nnz=150):
    rng = np.random.default_rng(seed)
    key = rng.choice(nu * ni, nnz, replace=False)
    ratings = mfrec.Ratings.from_indices(key // ni, key % ni, rng.integers(1, 6, nnz),
                                         shape=(nu + 2, ni))  # two users without ratings
    return ratings.csr


def epoch_inputs(csr, k, seed):
    """Random factors and biases for an epoch (and a copy for the reference), and a user order."""
    rng = np.random.default_rng(seed)
    nu, ni = csr.shape
    state = [rng.normal(0, 0.1, s).astype(np.float32) for s in ((nu, k), (ni, k), (ni, k), nu, ni)]
    ref = [a.copy() for a in state]
    order = rng.permutation(nu).astype(np.int32)
    return state, ref, order


def test_epoch_matches_reference():
    csr = small_csr()
    state, ref, order = epoch_inputs(csr, k=4, seed=1)
    args = [np.float32(x) for x in (3.0, 0.01, 0.02, 0.03, 0.04, 0.05)]
    ek, er = np.zeros(3), np.zeros(3)
    with thread_context(1):  # one thread: the Hogwild chunks run in order, like the reference
        K.svdpp_epoch(csr.indptr, csr.indices, csr.data, order, 3, *state, *args, ek)
    K.svdpp_epoch_reference(csr.indptr, csr.indices, csr.data, order, 3, *ref, *args, er)
    for a, b in zip(state, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ek, er, rtol=1e-4)


def test_fold_matches_reference():
    csr = small_csr(seed=2)
    rng = np.random.default_rng(3)
    P = rng.normal(size=(csr.shape[0], 3)).astype(np.float32)
    Y = rng.normal(size=(csr.shape[1], 3)).astype(np.float32)
    got = K.fold_implicit(csr.indptr, csr.indices, P, Y)
    np.testing.assert_allclose(got, K.fold_implicit_reference(csr.indptr, csr.indices, P, Y),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[-2:], P[-2:])  # users without ratings keep p_u


def test_recovers_low_rank_matrix_and_folds_the_implicit_term():
    train, test = low_rank()
    model = mfrec.SVDpp(n_factors=3, regularization=0.0005, implicit_regularization=0.0005,
                        bias_regularization=0.0, n_epochs=200, learning_rate=0.02,
                        learning_rate_decay=0.99, init_std=0.1, random_state=0).fit(train)
    assert rmse(test[2], model.predict(test[0], test[1], clip=False)) < 0.02
    # the scoring factors are p_u + |N(u)|^-1/2 sum_j y_j, computed by hand here
    csr = model.user_items_
    u = 5
    items = csr.indices[csr.indptr[u]:csr.indptr[u + 1]]
    want = model.explicit_user_factors_[u] + model.implicit_factors_[items].sum(0) / np.sqrt(
        items.size)
    np.testing.assert_allclose(model.user_factors_[u], want, rtol=1e-5, atol=1e-6)


def test_one_thread_is_reproducible():
    train, _ = low_rank(seed=5)
    kw = dict(n_factors=4, n_epochs=4, random_state=11, num_threads=1)
    a, b = mfrec.SVDpp(**kw).fit(train), mfrec.SVDpp(**kw).fit(train)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.implicit_factors_, b.implicit_factors_)
    np.testing.assert_array_equal(a.item_bias_, b.item_bias_)


def test_two_threads_hogwild_epoch_is_close_to_sequential():
    # with two threads chunks run concurrently (races allowed): the epoch's error and the
    # resulting factors stay close to the sequential reference
    csr = small_csr(seed=4, nu=200, ni=40, nnz=3000)
    state, ref, order = epoch_inputs(csr, k=8, seed=5)
    args = [np.float32(x) for x in (3.0, 0.01, 0.01, 0.02, 0.02, 0.02)]
    ek, er = np.zeros(8), np.zeros(8)
    with thread_context(2):
        K.svdpp_epoch(csr.indptr, csr.indices, csr.data, order, 8, *state, *args, ek)
    K.svdpp_epoch_reference(csr.indptr, csr.indices, csr.data, order, 8, *ref, *args, er)
    assert ek.sum() == pytest.approx(er.sum(), rel=0.02)
    np.testing.assert_allclose(state[3], ref[3], atol=0.05)  # user biases


def test_unknown_ids_unrated_rows_and_validation():
    ratings = mfrec.Ratings.from_indices([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], [5, 3, 4, 2, 1],
                                         shape=(4, 4))
    val = mfrec.Ratings.from_indices([0, 3], [2, 3], [4, 3], shape=(4, 4))
    model = mfrec.SVDpp(n_factors=2, n_epochs=3, random_state=0).fit(ratings, validation=val)
    assert len(model.validation_history_) == 3
    assert not model.user_factors_[3].any() and not model.implicit_factors_[3].any()
    assert model.predict([7], [0])[0] == pytest.approx(model.global_mean_ + model.item_bias_[0])


@pytest.mark.parametrize("kw, exc, match", [
    (dict(n_factors=0), ValueError, "n_factors must be an int >= 1, got 0"),
    (dict(implicit_regularization=-1), ValueError, "implicit_regularization must be a number >= 0"),
    (dict(learning_rate_decay=0), ValueError, "learning_rate_decay"),
    (dict(early_stopping=1.5), TypeError, "early_stopping"),
    (dict(random_state=-3), ValueError, "random_state"),
])
def test_bad_hyperparameters(kw, exc, match, seed_matrix):
    with pytest.raises(exc, match=match):
        mfrec.SVDpp(**kw).fit(seed_matrix)


def test_movielens_u1_default_accuracy(ml100k_dir):
    # defaults beat Surprise's SVDpp on u1 (0.933 measured here)
    train, test = read_ml100k_split(ml100k_dir, "u1")
    model = mfrec.SVDpp(random_state=0).fit(train[["user", "item", "rating"]])
    assert 0.89 < rmse(test.rating, model.predict(test.user, test.item)) < 0.92


def test_fold_in_includes_the_implicit_term():
    # a training user folded back in predicts its held-out ratings about as well as trained
    train, test = low_rank()
    model = mfrec.SVDpp(random_state=0).fit(train)
    folded_err, trained_err = fold_in_errors(model, train, test)
    assert folded_err < 1.5 * trained_err
