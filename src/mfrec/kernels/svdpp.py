"""SVD++ kernels: an SGD epoch that updates the implicit-feedback sum once per user, and the fold
that turns ``p_u + |N(u)|**-0.5 sum_j y_j`` into plain user factors.

Users are visited in a random order, split into contiguous chunks run by parallel threads
(Hogwild: item factors may be written by two threads at once, a race SGD tolerates). With one
thread the visit is sequential and the result reproducible. The kernels ``*_block`` do one chunk
without the GIL, and their wrappers run them on Python threads
(:func:`mfrec._threads.run_blocks`): serial kernels compile far faster than ``parallel=True``.

Each kernel has a plain NumPy/Python reference (``*_reference``); the tests hold them together.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH
from .._threads import block_threads, run_blocks

__all__ = ["svdpp_epoch", "svdpp_epoch_block", "svdpp_epoch_reference", "fold_implicit",
           "fold_implicit_block", "fold_implicit_reference"]


# not inline="always": a kernel that inlines it at Numba's level computed differently when
# freshly compiled than when loaded from the cache (a fixed seed did not reproduce a fit)
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _svdpp_user(u, indptr, indices, ratings, P, Q, Y, bu, bi, mu, lr_b, lr_f, reg_b, reg_f, reg_y,
                z, acc):
    lo = indptr[u]
    hi = indptr[u + 1]
    n = hi - lo
    if n == 0:
        return 0.0
    k = P.shape[1]
    norm = np.float32(1.0 / np.sqrt(n))
    for f in range(k):
        z[f] = 0.0
        acc[f] = 0.0
    for idx in range(lo, hi):
        j = indices[idx]
        for f in range(k):
            z[f] += Y[j, f]
    for f in range(k):
        z[f] *= norm
    err = 0.0
    for idx in range(lo, hi):
        i = indices[idx]
        dot = np.float32(0.0)
        for f in range(k):
            dot += Q[i, f] * (P[u, f] + z[f])
        e = ratings[idx] - (mu + bu[u] + bi[i] + dot)
        err += e * e
        bu[u] += lr_b * (e - reg_b * bu[u])
        bi[i] += lr_b * (e - reg_b * bi[i])
        for f in range(k):
            p = P[u, f]
            q = Q[i, f]
            P[u, f] = p + lr_f * (e * q - reg_f * p)
            Q[i, f] = q + lr_f * (e * (p + z[f]) - reg_f * q)
            acc[f] += e * q
    # once per user: the summed gradient of the user's ratings, and the n weight decays of the
    # per-rating rule compounded exactly (stable however many ratings the user has)
    shrink = np.float32((1.0 - lr_f * reg_y) ** n)
    for f in range(k):
        acc[f] *= lr_f * norm
    for idx in range(lo, hi):
        j = indices[idx]
        for f in range(k):
            Y[j, f] = Y[j, f] * shrink + acc[f]
    return err


def svdpp_epoch(indptr, indices, ratings, user_order, n_chunks, P, Q, Y, bu, bi, mu, lr_b, lr_f,
                reg_b, reg_f, reg_y, chunk_err, n_threads=None):
    """One SVD++ SGD epoch, in place.

    Parameters
    ----------
    indptr, indices, ratings : the training ratings as CSR arrays (users are rows)
    user_order : ndarray of int32, shape (n_users,)
        Visiting order of the users.
    n_chunks : int
        ``user_order`` is cut into this many contiguous chunks, run in parallel.
    P, Q, Y : ndarray of float32, shape (n_users, k), (n_items, k), (n_items, k)
        User, item and implicit item factors.
    bu, bi : ndarray of float32, shape (n_users,) and (n_items,)
    mu, lr_b, lr_f, reg_b, reg_f, reg_y : float32
    chunk_err : ndarray of float64, shape (n_chunks,)
        Receives each chunk's sum of squared errors (before each update).
    n_threads : int or None, default=None
        Threads running the chunks; None: Numba's thread count (see
        :func:`mfrec._threads.block_threads`).

    Notes
    -----
    For user ``u`` with rated items ``N(u)``, ``z = |N(u)|**-0.5 sum_{j in N(u)} y_j`` is formed
    once; each rating then takes Koren's SGD step on ``bu, bi, p_u, q_i`` with ``p_u + z`` as the
    user vector, and the gradients for ``z`` are summed. After the user's last rating every
    ``y_j`` takes one step with that sum (rather than one step per rating: ``O(|N(u)| k)`` per
    user instead of ``O(|N(u)|**2 k)``).
    """
    run_blocks(svdpp_epoch_block, (indptr, indices, ratings, user_order, n_chunks, P, Q, Y, bu,
                                   bi, mu, lr_b, lr_f, reg_b, reg_f, reg_y, chunk_err),
               n_chunks, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def svdpp_epoch_block(indptr, indices, ratings, user_order, n_chunks, P, Q, Y, bu, bi, mu, lr_b,
                      lr_f, reg_b, reg_f, reg_y, chunk_err, c):
    """Chunk ``c`` of :func:`svdpp_epoch`."""
    n = user_order.size
    k = P.shape[1]
    z = np.empty(k, dtype=np.float32)
    acc = np.empty(k, dtype=np.float32)
    err = 0.0
    for t in range(c * n // n_chunks, (c + 1) * n // n_chunks):
        err += _svdpp_user(user_order[t], indptr, indices, ratings, P, Q, Y, bu, bi, mu, lr_b,
                           lr_f, reg_b, reg_f, reg_y, z, acc)
    chunk_err[c] = err


def svdpp_epoch_reference(indptr, indices, ratings, user_order, n_chunks, P, Q, Y, bu, bi, mu,
                          lr_b, lr_f, reg_b, reg_f, reg_y, chunk_err):
    """Plain NumPy version of :func:`svdpp_epoch` (sequential)."""
    n = user_order.size
    for c in range(n_chunks):
        err = 0.0
        for t in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            u = user_order[t]
            lo, hi = indptr[u], indptr[u + 1]
            if hi == lo:
                continue
            items = indices[lo:hi]
            norm = np.float32(1.0 / np.sqrt(hi - lo))
            z = Y[items].sum(axis=0) * norm
            acc = np.zeros(P.shape[1], np.float32)
            for idx in range(lo, hi):
                i = indices[idx]
                e = np.float32(ratings[idx] - (mu + bu[u] + bi[i] + Q[i] @ (P[u] + z)))
                err += float(e) ** 2
                bu[u] += lr_b * (e - reg_b * bu[u])
                bi[i] += lr_b * (e - reg_b * bi[i])
                p, q = P[u].copy(), Q[i].copy()
                P[u] = p + lr_f * (e * q - reg_f * p)
                Q[i] = q + lr_f * (e * (p + z) - reg_f * q)
                acc += e * q
            Y[items] = Y[items] * np.float32((1.0 - lr_f * reg_y) ** (hi - lo)) + lr_f * norm * acc
        chunk_err[c] = err


def fold_implicit(indptr, indices, P, Y, n_threads=None):
    """Effective user factors ``p_u + |N(u)|**-0.5 sum_{j in N(u)} y_j``.

    Parameters
    ----------
    indptr, indices : the training ratings' CSR structure
    P : ndarray of float32, shape (n_users, k)
    Y : ndarray of float32, shape (n_items, k)
    n_threads : int or None, default=None
        Threads; None: Numba's thread count (see :func:`mfrec._threads.block_threads`).

    Returns
    -------
    ndarray of float32, shape (n_users, k)
    """
    out = np.empty_like(P)
    n_threads = block_threads(n_threads)
    n_blocks = max(1, min(8 * n_threads, P.shape[0]))
    run_blocks(fold_implicit_block, (indptr, indices, P, Y, out, n_blocks), n_blocks, n_threads)
    return out


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def fold_implicit_block(indptr, indices, P, Y, out, n_blocks, blk):
    """Users ``blk::n_blocks`` of :func:`fold_implicit`, into ``out``."""
    n_users, k = P.shape
    for u in range(blk, n_users, n_blocks):
        lo = indptr[u]
        hi = indptr[u + 1]
        for f in range(k):
            out[u, f] = 0.0
        for idx in range(lo, hi):
            j = indices[idx]
            for f in range(k):
                out[u, f] += Y[j, f]
        norm = np.float32(1.0 / np.sqrt(hi - lo)) if hi > lo else np.float32(0.0)
        for f in range(k):
            out[u, f] = P[u, f] + norm * out[u, f]


def fold_implicit_reference(indptr, indices, P, Y):
    """Plain NumPy version of :func:`fold_implicit`."""
    out = P.astype(np.float32, copy=True)
    for u in range(P.shape[0]):
        items = indices[indptr[u]:indptr[u + 1]]
        if items.size:
            out[u] += Y[items].sum(axis=0) / np.float32(np.sqrt(items.size))
    return out
