"""BPR: kernel against a NumPy replay, known answers, reproducibility, fold-in, errors."""
import numpy as np
import pytest
import scipy.sparse as sp

import mfrec
from mfrec import BPR
from mfrec.kernels import bpr as K

from conftest import read_ml100k_split, two_blocks

_MASK = (1 << 64) - 1


def _xorshift_draws(state, count):
    """The kernel's xorshift64* stream, replayed in Python."""
    out = []
    x = int(state)
    for _ in range(count):
        x ^= x >> 12
        x ^= (x << 25) & _MASK
        x ^= x >> 27
        out.append(((x * 2685821657736338717) & _MASK) >> 11)
    return out, x


def test_epoch_kernel_matches_numpy_replay():
    # one stream, uniform negatives, no verification: the kernel's samples are replayable, so
    # its updates must equal the NumPy reference applied to the same samples
    rng = np.random.default_rng(0)
    R = sp.random(12, 9, density=0.3, format="csr", random_state=0)
    R.sort_indices()
    indptr, indices = R.indptr.astype(np.int64), R.indices
    entry_users = np.repeat(np.arange(12, dtype=np.int32), np.diff(indptr))
    P = rng.standard_normal((12, 4)).astype(np.float32) * 0.1
    Q = rng.standard_normal((9, 4)).astype(np.float32) * 0.1
    b = rng.standard_normal(9).astype(np.float32) * 0.1
    states = K.split_seed(3, 1)
    # replay the draws: in batches, first every positive, then negatives until j != i
    draws, _ = _xorshift_draws(states[0], 2000)
    it = iter(draws)
    samples = []
    n_samples = 60
    for start in range(0, n_samples, K._BATCH):
        es = [next(it) % R.nnz for _ in range(min(K._BATCH, n_samples - start))]
        for e in es:
            while True:
                j = next(it) % 9
                if j != indices[e]:
                    break
            samples.append((e, j))
    P2, Q2, b2 = P.astype(np.float64), Q.astype(np.float64), b.astype(np.float64)
    want_loss = K.epoch_reference(entry_users, indptr, indices, P2, Q2, b2, 0.05, 0.01, 0.02,
                                  samples)
    loss, skipped = K.epoch(entry_users, indptr, indices, P, Q, b, 0.05, 0.01, 0.02, n_samples,
                            False, False, states)
    assert skipped == 0
    assert loss == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(P, P2, atol=1e-5)
    np.testing.assert_allclose(Q, Q2, atol=1e-5)
    np.testing.assert_allclose(b, b2, atol=1e-5)


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_block_diagonal_known_top_item(sampling):
    model = BPR(n_factors=4, n_epochs=300, negative_sampling=sampling, random_state=0,
                num_threads=1).fit(two_blocks())
    ids, _ = model.recommend([0, 5], n=1)
    assert ids.tolist() == [[0], [6]]
    h = model.loss_history_
    assert len(h) == 300 and h[-1] < h[0]
    assert model.item_bias_.any() and not model.user_bias_.any()


def test_verify_negatives_never_trains_a_positive_as_negative():
    # a user who has every item but one: unverified sampling would mostly draw positives
    X = np.ones((3, 6))
    X[0, 5] = 0
    m = BPR(n_factors=2, n_epochs=5, random_state=0, num_threads=1).fit(X)
    # users 1 and 2 have all items: every draw is a positive, every step is skipped
    assert m.skipped_ > 0


def test_one_thread_fixed_seed_is_reproducible():
    X = two_blocks()
    a = BPR(n_factors=3, n_epochs=20, random_state=5, num_threads=1).fit(X)
    b = BPR(n_factors=3, n_epochs=20, random_state=5, num_threads=1).fit(X)
    c = BPR(n_factors=3, n_epochs=20, random_state=6, num_threads=1).fit(X)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_bias_, b.item_bias_)
    assert not np.array_equal(a.user_factors_, c.user_factors_)


def test_fold_in_reproduces_training_user_ranking():
    # BPR fold-in: SGD on the user's vector with items fixed lands near the trained vector
    rng = np.random.default_rng(0)
    n_u, n_i = 60, 40
    taste = rng.integers(0, 2, n_u)
    X = np.zeros((n_u, n_i))
    for u in range(n_u):
        pool = np.arange(20) if taste[u] == 0 else np.arange(20, 40)
        X[u, rng.choice(pool, 8, replace=False)] = 1
    model = BPR(n_factors=8, n_epochs=200, learning_rate=0.05, random_state=0,
                num_threads=1).fit(X)
    u = 0
    folded = model.fold_in(list(np.flatnonzero(X[u])))
    p, t = folded.factors[0], model.user_factors_[u]
    assert p @ t / np.linalg.norm(p) / np.linalg.norm(t) > 0.9
    ids_f, _ = model.recommend(folded, n=5)
    ids_t, _ = model.recommend(u, n=5)
    assert len(set(ids_f[0]) & set(ids_t[0])) >= 4
    # zero-valued entries are not interactions: a batch where one user has only a 0 folds in
    # to the zero vector, the other as before
    batch = model.fold_in((["x", "x", "y"], [int(np.flatnonzero(X[u])[0]), 3, 5], [1.0, 0.0, 0.0]))
    assert batch.ids.tolist() == ["x", "y"] and not batch.factors[1].any()
    # the new user's items are masked and its recommendations stay in its community
    pool = set(range(20)) if taste[u] == 0 else set(range(20, 40))
    assert set(ids_f[0]) <= pool and not set(ids_f[0]) & set(np.flatnonzero(X[u]))


def test_errors_name_argument_and_value():
    X = two_blocks()
    with pytest.raises(ValueError, match="negative_sampling must be one of"):
        BPR(negative_sampling="hard").fit(X)
    with pytest.raises(ValueError, match="learning_rate must be a number > 0.0, got 0"):
        BPR(learning_rate=0).fit(X)
    with pytest.raises(TypeError, match="verify_negatives must be True or False"):
        BPR(verify_negatives=1).fit(X)
    with pytest.raises(ValueError, match="non-negative interaction values"):
        BPR().fit(-X)
    with pytest.raises(ValueError, match="at least 2 items"):
        BPR().fit(np.ones((3, 1)))


def test_ml100k_u1_beats_popularity(ml100k_dir):
    from mfrec.evaluation.ranking import evaluate_ranking
    train, test = read_ml100k_split(ml100k_dir, "u1")
    model = BPR(n_epochs=30, random_state=0, num_threads=1).fit(train)
    res = evaluate_ranking(model, test, metrics=["ndcg"])
    assert res["ndcg@10"] > 0.45
    assert mfrec.BPR is BPR
