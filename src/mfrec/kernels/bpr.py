"""Kernels of Bayesian Personalized Ranking (Rendle et al. 2009) by lock-free parallel SGD.

Each step draws a training interaction ``(u, i)`` uniformly (so users weigh by activity), a
negative item ``j`` (uniformly from the catalogue, or by popularity: the item of another random
interaction), optionally redrawn while ``j`` is one of ``u``'s items, and ascends
``ln sigmoid(b_i - b_j + p_u . (q_i - q_j))`` minus L2 penalties. Threads share the factor
arrays without locks (Hogwild: collisions are rare and harmless for sparse data); each stream has
its own xorshift random state, so one thread with a fixed seed is reproducible. The kernels
``*_block`` do one stream (or block of users) without the GIL; their wrappers run them on Python
threads (:func:`mfrec._threads.run_blocks`), which compiles far faster than ``parallel=True``.

:func:`epoch_reference` is the plain NumPy (single stream) version the tests compare against.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH
from .._threads import block_threads, run_blocks

__all__ = ["epoch", "epoch_block", "epoch_reference", "fold_in", "fold_in_block", "split_seed"]

_MAX_REDRAWS = 32
_BATCH = 16


def split_seed(seed, n):
    """``n`` non-zero 64-bit xorshift states derived from an int seed."""
    ss = np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint64)
    ss[ss == 0] = np.uint64(0x9E3779B97F4A7C15)
    return ss


@njit(cache=True, inline="always", error_model="numpy")
def _next(state):
    # xorshift64*: tiny, fast, good enough for sampling indices
    x = state[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[0] = x
    return (x * np.uint64(2685821657736338717)) >> np.uint64(11)


@njit(cache=True, inline="always", error_model="numpy")
def _contains(indices, lo, hi, j):
    while lo < hi:
        mid = (lo + hi) >> 1
        v = indices[mid]
        if v < j:
            lo = mid + 1
        elif v > j:
            hi = mid
        else:
            return True
    return False


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _sgd_step(p, qi, qj, bias, i, j, lr, reg, reg_bias, update_items):
    """One BPR update of (p, q_i, q_j, b_i, b_j); returns -ln sigmoid(x_uij)."""
    k = p.shape[0]
    x = bias[i] - bias[j]
    for f in range(k):
        x += p[f] * (qi[f] - qj[f])
    # z = sigmoid(-x) = d ln sigmoid(x) / dx, computed without overflow
    if x >= 0:
        ex = np.exp(-x)
        z = ex / (np.float32(1.0) + ex)
        nll = np.log1p(ex)
    else:
        ex = np.exp(x)
        z = np.float32(1.0) / (np.float32(1.0) + ex)
        nll = -x + np.log1p(ex)
    for f in range(k):
        pf = p[f]
        qif = qi[f]
        qjf = qj[f]
        p[f] = pf + lr * (z * (qif - qjf) - reg * pf)
        if update_items:
            qi[f] = qif + lr * (z * pf - reg * qif)
            qj[f] = qjf + lr * (-z * pf - reg * qjf)
    if update_items:
        bias[i] += lr * (z - reg_bias * bias[i])
        bias[j] += lr * (-z - reg_bias * bias[j])
    return nll


def epoch(entry_users, indptr, indices, P, Q, bias, learning_rate, regularization,
          bias_regularization, n_samples, popularity, verify, states, n_threads=None):
    """One epoch of ``n_samples`` SGD steps, split over ``states.size`` lock-free streams.

    Parameters
    ----------
    entry_users : int32 array of shape (nnz,)
        User of each positive interaction (CSR order).
    indptr, indices : CSR arrays of the positives (sorted indices within a row)
    P, Q : float32 arrays of shape (n_users, k), (n_items, k); updated in place
    bias : float32 array of shape (n_items,); updated in place
    n_samples : int
    popularity : bool
        Negatives drawn by popularity instead of uniformly.
    verify : bool
        Redraw (up to 32 times) a negative the user has interacted with.
    states : uint64 array of shape (n_streams,)
        Random states, advanced in place.
    n_threads : int or None, default=None
        Threads running the streams; None: Numba's thread count (see
        :func:`mfrec._threads.block_threads`). Give one stream per thread.

    Returns
    -------
    loss : float
        Mean ``-ln sigmoid(x_uij)`` over the steps taken.
    skipped : int
        Steps dropped because no unseen negative was found.
    """
    n_streams = states.shape[0]
    losses = np.zeros(n_streams)
    skips = np.zeros(n_streams, np.int64)
    sinks = np.zeros(n_streams, np.float32)
    run_blocks(epoch_block, (entry_users, indptr, indices, P, Q, bias, np.float32(learning_rate),
                             np.float32(regularization), np.float32(bias_regularization),
                             int(n_samples), bool(popularity), bool(verify), states, losses,
                             skips, sinks), n_streams, block_threads(n_threads))
    skipped = int(skips.sum())
    return float(losses.sum()) / max(int(n_samples) - skipped, 1), skipped


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def epoch_block(entry_users, indptr, indices, P, Q, bias, lr, reg, regb, n_samples, popularity,
                verify, states, losses, skips, sinks, s):
    """Stream ``s`` of :func:`epoch`: its share of the steps, drawn from ``states[s]``.

    ``lr``, ``reg``, ``regb`` are float32; the stream's loss sum, skipped steps and the sum of
    its prefetch touches go to ``losses[s]`` (float64), ``skips[s]`` (int64) and ``sinks[s]``
    (float32: storing it keeps the touches from being optimised away).
    """
    n_streams = states.shape[0]
    nnz = indices.shape[0]
    n_items = Q.shape[0]
    k = Q.shape[1]
    per = (n_samples + n_streams - 1) // n_streams
    st = states[s:s + 1]
    todo = max(0, min(per, n_samples - s * per))
    acc = 0.0
    sink = np.float32(0.0)
    us = np.empty(_BATCH, np.int64)
    its = np.empty(_BATCH, np.int64)
    js = np.empty(_BATCH, np.int64)
    done = 0
    while done < todo:
        nb = min(_BATCH, todo - done)
        # Draw a batch of samples before updating: the draws are independent, so their
        # cache misses (random entries, CSR rows, factor rows) overlap instead of queueing
        # one after another. The updates then run in order, exactly as one at a time.
        for b in range(nb):
            e = np.int64(_next(st) % np.uint64(nnz))
            us[b] = entry_users[e]
            its[b] = indices[e]
        for b in range(nb):
            u = us[b]
            i = its[b]
            js[b] = -1
            for _try in range(_MAX_REDRAWS):
                if popularity:
                    j = np.int64(indices[np.int64(_next(st) % np.uint64(nnz))])
                else:
                    j = np.int64(_next(st) % np.uint64(n_items))
                if verify:
                    ok = not _contains(indices, indptr[u], indptr[u + 1], j)
                else:
                    ok = j != i
                if ok:
                    js[b] = j
                    break
        for b in range(nb):  # touch every cache line of the rows about to be updated
            if js[b] >= 0:
                for f in range(0, k, 16):
                    sink += P[us[b], f] + Q[its[b], f] + Q[js[b], f]
        for b in range(nb):
            if js[b] < 0:
                skips[s] += 1
            else:
                acc += _sgd_step(P[us[b]], Q[its[b]], Q[js[b]], bias, its[b], js[b], lr, reg,
                                 regb, True)
        done += nb
    losses[s] = acc
    sinks[s] = sink


def fold_in(indptr, indices, Q, bias, pop_items, learning_rate, regularization, n_epochs,
            min_steps, popularity, verify, states, n_threads=None):
    """Vectors of new users by BPR SGD on ``p_u`` alone (items and biases fixed).

    Parameters
    ----------
    indptr, indices : CSR of each new user's items (sorted within a row)
    Q, bias : item factors and biases of the trained model
    pop_items : int32 array
        Items of the training interactions (popularity sampling draws from it).
    n_epochs, min_steps : int
        Each user takes ``n_epochs * max(n_items_of_user, min_steps)`` steps.
    states : uint64 array of shape (n_users,)
        One random stream per user: the result does not depend on the thread count.
    n_threads : int or None, default=None
        Threads; None: Numba's thread count (see :func:`mfrec._threads.block_threads`).

    Returns
    -------
    P : float32 array of shape (n_users, k)
    """
    m = indptr.shape[0] - 1
    P = np.zeros((m, Q.shape[1]), np.float32)
    n_threads = block_threads(n_threads)
    n_blocks = max(1, min(8 * n_threads, m))
    run_blocks(fold_in_block, (indptr, indices, Q, bias, pop_items, np.float32(learning_rate),
                               np.float32(regularization), int(n_epochs), int(min_steps),
                               bool(popularity), bool(verify), states, P, n_blocks),
               n_blocks, n_threads)
    return P


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def fold_in_block(indptr, indices, Q, bias, pop_items, lr, reg, n_epochs, min_steps, popularity,
                  verify, states, P, n_blocks, blk):
    """Users ``blk::n_blocks`` of :func:`fold_in`, into the zero rows of ``P`` (``lr``, ``reg``
    float32)."""
    m = indptr.shape[0] - 1
    n_items = Q.shape[0]
    n_pop = pop_items.shape[0]
    for u in range(blk, m, n_blocks):
        lo, hi = indptr[u], indptr[u + 1]
        n = hi - lo
        if n == 0:
            continue
        st = states[u:u + 1]
        p = P[u]
        steps = n_epochs * max(n, min_steps)
        for t in range(steps):
            # the learning rate decays so that the single convex problem settles
            lr_t = lr / np.float32(1.0 + 4.0 * t / steps)
            i = np.int64(indices[lo + np.int64(_next(st) % np.uint64(n))])
            j = np.int64(0)
            ok = False
            for _try in range(_MAX_REDRAWS):
                if popularity:
                    j = np.int64(pop_items[np.int64(_next(st) % np.uint64(n_pop))])
                else:
                    j = np.int64(_next(st) % np.uint64(n_items))
                ok = (not _contains(indices, lo, hi, j)) if verify else j != i
                if ok:
                    break
            if ok:
                _sgd_step(p, Q[i], Q[j], bias, i, j, lr_t, reg, reg, False)


def epoch_reference(entry_users, indptr, indices, P, Q, bias, learning_rate, regularization,
                    bias_regularization, samples):
    """NumPy version of the SGD updates for a given list of ``(entry, negative)`` samples.

    Parameters
    ----------
    samples : sequence of (int, int)
        Index of the positive interaction and the negative item, in order.

    Returns
    -------
    loss : float
        Mean ``-ln sigmoid(x_uij)``.
    """
    total = 0.0
    for e, j in samples:
        u, i = entry_users[e], indices[e]
        x = float(bias[i] - bias[j] + P[u] @ (Q[i] - Q[j]))
        z = 1.0 / (1.0 + np.exp(x))
        total += np.log1p(np.exp(-x))
        pu, qi, qj = P[u].copy(), Q[i].copy(), Q[j].copy()
        P[u] = pu + learning_rate * (z * (qi - qj) - regularization * pu)
        Q[i] = qi + learning_rate * (z * pu - regularization * qi)
        Q[j] = qj + learning_rate * (-z * pu - regularization * qj)
        bias[i] += learning_rate * (z - bias_regularization * bias[i])
        bias[j] += learning_rate * (-z - bias_regularization * bias[j])
    return total / max(len(samples), 1)
