"""SGD kernels for biased matrix factorization (and the SGD baseline, which is the same with zero
factors), plus the closed-form bias sweep of the ALS baseline.

Parallel SGD is lock-free, in the manner of FPSGD/DSGD: users and items are randomly permuted
into ``n_blocks`` row blocks and ``n_blocks`` column blocks (which balances the work); each thread
owns a set of row blocks and walks them stratum by stratum, so threads that keep pace touch
disjoint users and items. There is no barrier between strata: on a busy machine a barrier per
stratum stalls every thread behind the slowest (measured here: two threads slower than one), while a
drifting thread costs only a rare benign race on an item row (Hogwild). Inside a block the
ratings are grouped by user, which keeps a user's factor row in cache. The kernels ``*_block`` do
one worker's share without the GIL, and their wrappers run them on Python threads
(:func:`mfrec._threads.run_blocks`): serial kernels compile far faster than ``parallel=True``.

Each kernel has a plain NumPy/Python reference (``*_reference``) that computes the same thing
entry by entry; the tests hold the two together.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH
from .._alloc import empty_huge
from .._threads import block_threads, run_blocks

__all__ = ["make_blocks", "make_blocks_reference", "scatter_blocks", "ordered_within_blocks",
           "sgd_epoch", "sgd_epoch_block", "sgd_epoch_reference", "bias_als_sweep",
           "bias_als_sweep_reference", "squared_errors", "squared_errors_block",
           "squared_errors_reference"]


# ---------------------------------------------------------------------- data layout
def make_blocks(indptr, indices, values, n_items, n_blocks, rng, n_threads=1):
    """Arrange CSR ratings into ``n_blocks x n_blocks`` blocks of randomly permuted rows/columns.

    Parameters
    ----------
    indptr, indices, values : the ratings as CSR arrays (users are rows), values float32
    n_items, n_blocks : int
    rng : numpy.random.Generator
        Draws the user permutation, then the item permutation.
    n_threads : int, default=1
        Threads for the two passes (row blocks are independent); the result does not depend
        on it.

    Returns
    -------
    users, items : ndarray of int32, shape (nnz,)
        Reordered: block by block (row-block major), inside a block by permuted user, and a
        user's ratings in CSR order.
    ratings : ndarray of float32, shape (nnz,)
    block_ptr : ndarray of int64, shape (n_blocks * n_blocks + 1,)
        Block ``(a, b)`` holds the entries from ``block_ptr[a * n_blocks + b]`` up to
        ``block_ptr[a * n_blocks + b + 1]``.
    """
    perm_u = rng.permutation(indptr.size - 1).astype(np.int32)
    perm_i = rng.permutation(n_items).astype(np.int32)
    return scatter_blocks(indptr, indices, values, perm_u, perm_i, n_blocks, n_threads)


def scatter_blocks(indptr, indices, values, perm_u, perm_i, n_blocks, n_threads=1, *,
                   relabel=False):
    """:func:`make_blocks` with given permutations.

    ``perm_u[u]`` is user ``u``'s position among the users (row block ``perm_u[u] * n_blocks //
    n_users``), ``perm_i`` the same for items. With ``relabel=True`` the returned ``users`` and
    ``items`` are those positions instead of the indices, for factors stored in permuted order
    (row ``perm_u[u]`` of the user factors is user ``u``'s): a row block's users are then one
    contiguous stretch of memory, read in increasing order, which at 100M ratings made an SGD
    epoch twice as fast as rows scattered across the whole array.
    """
    n_users = indptr.size - 1
    n_items = perm_i.size
    visit = np.empty(n_users, dtype=np.int32)  # visit[t]: the user at position t
    visit[perm_u] = np.arange(n_users, dtype=np.int32)
    # each item's column block, once: an integer division per rating was most of the cost;
    # int16, so that the table stays in a core's L2 cache next to perm_i
    col_block = (perm_i.astype(np.int64) * n_blocks // max(n_items, 1)).astype(
        np.int16 if n_blocks <= np.iinfo(np.int16).max else np.int32)
    # row block a holds the positions t with t * n_blocks // n_users == a
    row_start = (np.arange(n_blocks + 1, dtype=np.int64) * n_users + n_blocks - 1) // n_blocks
    counts = np.zeros((n_blocks, n_blocks), dtype=np.int64)
    run_blocks(_count_row_block, (indptr, indices, visit, col_block, row_start, counts),
               n_blocks, n_threads)
    block_ptr = np.zeros(n_blocks * n_blocks + 1, dtype=np.int64)
    np.cumsum(counts.ravel(), out=block_ptr[1:])
    nnz = indices.size
    # written in n_blocks streams each: with 4 KB pages, first-touch faults cost more than
    # the writes themselves at 100M ratings
    users = empty_huge(nnz, np.int32)
    items = empty_huge(nnz, np.int32)
    ratings = empty_huge(nnz, np.float32)
    run_blocks(_fill_row_block, (indptr, indices, values, visit, col_block, perm_i, row_start,
                                 block_ptr, bool(relabel), users, items, ratings),
               n_blocks, n_threads)
    return users, items, ratings, block_ptr


def ordered_within_blocks(perm, n_blocks):
    """Positions with the same blocks as ``perm`` but, inside a block, in index order.

    ``perm`` is a permutation of ``range(n)``; element ``x`` lies in block ``perm[x] * n_blocks
    // n``. The result puts every element in the same block, with the elements of a block in
    increasing ``x``. Blocks stay random (which balances them); visiting a block's users in
    index order reads the ratings' CSR arrays forwards instead of jumping across them, which at
    100M ratings made :func:`scatter_blocks` two to three times faster.

    Parameters
    ----------
    perm : ndarray of int, shape (n,)
    n_blocks : int

    Returns
    -------
    ndarray of int32, shape (n,)
    """
    n = perm.size
    block = (perm.astype(np.int64) * n_blocks // max(n, 1)).astype(np.int32)
    order = np.argsort(block, kind="stable")
    out = np.empty(n, dtype=np.int32)
    out[order] = np.arange(n, dtype=np.int32)
    return out


# Two passes of a counting sort, one row block per call: row blocks write disjoint parts of
# ``counts`` and of the output, so they run on threads without locks.
@njit(cache=True, nogil=True, error_model="numpy")
def _count_row_block(indptr, indices, visit, col_block, row_start, counts, a):
    for t in range(row_start[a], row_start[a + 1]):
        u = visit[t]
        for idx in range(indptr[u], indptr[u + 1]):
            counts[a, col_block[indices[idx]]] += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _fill_row_block(indptr, indices, values, visit, col_block, perm_i, row_start, block_ptr,
                    relabel, users, items, ratings, a):
    n_blocks = row_start.size - 1
    fill = block_ptr[a * n_blocks:(a + 1) * n_blocks].copy()
    for t in range(row_start[a], row_start[a + 1]):
        u = visit[t]
        for idx in range(indptr[u], indptr[u + 1]):
            i = indices[idx]
            pos = fill[col_block[i]]
            fill[col_block[i]] = pos + 1
            users[pos] = t if relabel else u
            items[pos] = perm_i[i] if relabel else i
            ratings[pos] = values[idx]


def make_blocks_reference(indptr, indices, values, n_items, n_blocks, rng):
    """Plain NumPy version of :func:`make_blocks` (a stable sort on block, then permuted user)."""
    n_users = indptr.size - 1
    perm_u = rng.permutation(n_users).astype(np.int64)
    perm_i = rng.permutation(n_items).astype(np.int64)
    users = np.repeat(np.arange(n_users), np.diff(indptr))
    pu = perm_u[users]
    block = (pu * n_blocks // n_users) * n_blocks + perm_i[indices] * n_blocks // n_items
    order = np.lexsort((pu, block))  # stable: CSR order within a user
    block_ptr = np.zeros(n_blocks * n_blocks + 1, dtype=np.int64)
    np.cumsum(np.bincount(block, minlength=n_blocks * n_blocks), out=block_ptr[1:])
    return (users[order].astype(np.int32), np.asarray(indices)[order].astype(np.int32),
            np.asarray(values, dtype=np.float32)[order], block_ptr)


# ---------------------------------------------------------------------- SGD epoch
# not inline="always": a kernel that inlines it at Numba's level computed differently when
# freshly compiled than when loaded from the cache (a fixed seed did not reproduce a fit)
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _sgd_block(lo, hi, users, items, ratings, P, Q, bu, bi, mu, lr_b, lr_f, reg_bu, reg_bi,
               reg_p, reg_q):
    k = P.shape[1]
    err = 0.0
    for idx in range(lo, hi):
        u = users[idx]
        i = items[idx]
        dot = np.float32(0.0)
        for f in range(k):
            dot += P[u, f] * Q[i, f]
        e = ratings[idx] - (mu + bu[u] + bi[i] + dot)
        err += e * e
        bu[u] += lr_b * (e - reg_bu * bu[u])
        bi[i] += lr_b * (e - reg_bi * bi[i])
        for f in range(k):
            p = P[u, f]
            q = Q[i, f]
            P[u, f] = p + lr_f * (e * q - reg_p * p)
            Q[i, f] = q + lr_f * (e * p - reg_q * q)
    return err


def sgd_epoch(users, items, ratings, block_ptr, n_blocks, n_chunks, P, Q, bu, bi, mu, lr_b, lr_f,
              reg_bu, reg_bi, reg_p, reg_q, block_err, n_threads=None):
    """One SGD epoch over blocked ratings, in place, by ``n_chunks`` parallel workers.

    Worker ``c`` owns the row blocks ``c * n_blocks // n_chunks`` up to the next worker's, and
    walks the strata: at step ``s`` it runs the blocks ``(a, (a + s) % n_blocks)`` of its rows.
    Workers never share a user; they share no item either while they keep pace, and there is no
    barrier between steps, so a worker held up by the OS only risks a benign race on an item row
    (Hogwild) instead of stalling the others. With ``n_chunks=1`` the visit is sequential.

    Parameters
    ----------
    users, items, ratings, block_ptr
        As returned by :func:`make_blocks`.
    n_blocks, n_chunks : int
    P : ndarray of float32, shape (n_users, k)
    Q : ndarray of float32, shape (n_items, k)
    bu, bi : ndarray of float32, shape (n_users,) and (n_items,)
        Updated in place with ``P`` and ``Q``.
    mu, lr_b, lr_f, reg_bu, reg_bi, reg_p, reg_q : float32
        Global mean, learning rates (biases, factors) and per-rating weight decays.
    block_err : ndarray of float64, shape (n_blocks * n_blocks,)
        Receives the sum of squared errors (before each update) of every block.
    n_threads : int or None, default=None
        Threads running the workers; None: Numba's thread count (see
        :func:`mfrec._threads.block_threads`). Give one worker per thread.

    Notes
    -----
    Per rating, with ``e = r - (mu + bu[u] + bi[i] + P[u] @ Q[i])``: ``bu[u] += lr_b (e - reg_bu
    bu[u])``, the same for ``bi[i]``, ``P[u] += lr_f (e Q[i] - reg_p P[u])`` and ``Q[i] += lr_f (e
    P[u] - reg_q Q[i])`` with the old ``P[u]``.
    """
    run_blocks(sgd_epoch_block, (users, items, ratings, block_ptr, n_blocks, n_chunks, P, Q, bu,
                                 bi, mu, lr_b, lr_f, reg_bu, reg_bi, reg_p, reg_q, block_err),
               n_chunks, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def sgd_epoch_block(users, items, ratings, block_ptr, n_blocks, n_chunks, P, Q, bu, bi, mu, lr_b,
                    lr_f, reg_bu, reg_bi, reg_p, reg_q, block_err, c):
    """Worker ``c`` of :func:`sgd_epoch`: its row blocks, stratum by stratum."""
    for s in range(n_blocks):
        for a in range(c * n_blocks // n_chunks, (c + 1) * n_blocks // n_chunks):
            blk = a * n_blocks + (a + s) % n_blocks
            block_err[blk] = _sgd_block(block_ptr[blk], block_ptr[blk + 1], users, items,
                                        ratings, P, Q, bu, bi, mu, lr_b, lr_f, reg_bu, reg_bi,
                                        reg_p, reg_q)


def sgd_epoch_reference(users, items, ratings, block_ptr, n_blocks, n_chunks, P, Q, bu, bi, mu,
                        lr_b, lr_f, reg_bu, reg_bi, reg_p, reg_q, block_err):
    """Plain NumPy version of :func:`sgd_epoch`: the workers one after the other."""
    for c in range(n_chunks):
        for s in range(n_blocks):
            for a in range(c * n_blocks // n_chunks, (c + 1) * n_blocks // n_chunks):
                blk = a * n_blocks + (a + s) % n_blocks
                err = 0.0
                for idx in range(block_ptr[blk], block_ptr[blk + 1]):
                    u, i = users[idx], items[idx]
                    e = np.float32(ratings[idx] - (mu + bu[u] + bi[i] + P[u] @ Q[i]))
                    err += float(e) * float(e)
                    bu[u] += lr_b * (e - reg_bu * bu[u])
                    bi[i] += lr_b * (e - reg_bi * bi[i])
                    p = P[u].copy()
                    P[u] += lr_f * (e * Q[i] - reg_p * p)
                    Q[i] += lr_f * (e * p - reg_q * Q[i])
                block_err[blk] = err


# ---------------------------------------------------------------------- scoring
def squared_errors(users, items, ratings, P, Q, bu, bi, mu, lo, hi, n_threads=None):
    """Sum of squared errors of clipped predictions; ``users``/``items`` of -1 are unknown.

    Parameters
    ----------
    users, items : ndarray of int64, shape (m,)
        Indices, -1 where unknown (scored by the known side's bias and ``mu``).
    ratings : ndarray of float32, shape (m,)
    P, Q, bu, bi : the model's factors and biases
    mu, lo, hi : float
        Global mean and the rating range predictions are clipped to.
    n_threads : int or None, default=None
        Threads; None: Numba's thread count (see :func:`mfrec._threads.block_threads`).

    Returns
    -------
    float
        Summed in chunks fixed by the data's size, so the value does not depend on the threads.
    """
    n_blocks = max(1, -(-users.size // _SCORE_CHUNK))
    sums = np.zeros(n_blocks)
    run_blocks(squared_errors_block, (users, items, ratings, P, Q, bu, bi, mu, lo, hi, sums),
               n_blocks, block_threads(n_threads))
    return float(sums.sum())


_SCORE_CHUNK = 1 << 16  # ratings per block of squared_errors


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def squared_errors_block(users, items, ratings, P, Q, bu, bi, mu, lo, hi, sums, blk):
    """Chunk ``blk`` (``_SCORE_CHUNK`` ratings) of :func:`squared_errors`: its sum of squared
    errors into ``sums[blk]``."""
    k = P.shape[1]
    total = 0.0
    for t in range(blk * _SCORE_CHUNK, min(users.size, (blk + 1) * _SCORE_CHUNK)):
        u = users[t]
        i = items[t]
        pred = mu
        if u >= 0:
            pred += bu[u]
        if i >= 0:
            pred += bi[i]
        if u >= 0 and i >= 0:
            dot = 0.0
            for f in range(k):
                dot += P[u, f] * Q[i, f]
            pred += dot
        pred = min(max(pred, lo), hi)
        e = ratings[t] - pred
        total += e * e
    sums[blk] = total


def squared_errors_reference(users, items, ratings, P, Q, bu, bi, mu, lo, hi):
    """Plain NumPy version of :func:`squared_errors`."""
    users = np.asarray(users)
    items = np.asarray(items)
    pred = np.full(users.shape, mu, dtype=np.float64)
    ku, ki = users >= 0, items >= 0
    pred[ku] += bu[users[ku]]
    pred[ki] += bi[items[ki]]
    both = ku & ki
    pred[both] += np.einsum("ij,ij->i", P[users[both]].astype(np.float64),
                            Q[items[both]].astype(np.float64))
    np.clip(pred, lo, hi, out=pred)
    return float(np.sum((np.asarray(ratings, dtype=np.float64) - pred) ** 2))


# ---------------------------------------------------------------------- ALS baseline
@njit(cache=True, error_model="numpy")
def _item_bias_step(indptr, indices, values, bu, mu, reg, item_counts, bi):
    # a sequential scatter over the CSR rows: no CSC copy of the ratings needed
    bi[:] = 0.0
    for u in range(indptr.size - 1):
        for idx in range(indptr[u], indptr[u + 1]):
            bi[indices[idx]] += values[idx] - mu - bu[u]
    for i in range(bi.size):
        denom = reg + item_counts[i]
        bi[i] = bi[i] / denom if denom > 0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _user_bias_block(indptr, indices, values, bi, mu, reg, bu, sse, n_blocks, blk):
    # users blk::n_blocks; their squared errors summed into sse[blk]
    total = 0.0
    for u in range(blk, indptr.size - 1, n_blocks):
        s = 0.0
        for idx in range(indptr[u], indptr[u + 1]):
            s += values[idx] - mu - bi[indices[idx]]
        denom = reg + (indptr[u + 1] - indptr[u])
        b = s / denom if denom > 0 else 0.0
        bu[u] = b
        for idx in range(indptr[u], indptr[u + 1]):
            e = values[idx] - mu - b - bi[indices[idx]]
            total += e * e
    sse[blk] = total


def bias_als_sweep(indptr, indices, values, item_counts, bu, bi, mu, reg_u, reg_i,
                   n_threads=None):
    """One alternating sweep of the regularized bias model, in place: items, then users.

    Minimises ``sum (r - mu - bu[u] - bi[i])**2 + reg_u sum bu**2 + reg_i sum bi**2`` exactly in
    one side with the other fixed: ``bi[i] = sum_u (r - mu - bu[u]) / (reg_i + n_i)`` and then
    ``bu[u] = sum_i (r - mu - bi[i]) / (reg_u + n_u)``. Rows without ratings get 0.

    Parameters
    ----------
    indptr, indices, values : the ratings as CSR arrays (users are rows)
    item_counts : ndarray of int, shape (n_items,)
        Ratings per item.
    bu : ndarray of float64, shape (n_users,)
    bi : ndarray of float64, shape (n_items,)
    mu, reg_u, reg_i : float
    n_threads : int or None, default=None
        Threads of the user step; None: Numba's thread count (see
        :func:`mfrec._threads.block_threads`).

    Returns
    -------
    float
        Sum of squared errors after the sweep (summed over a fixed number of blocks, so it does
        not depend on the threads).
    """
    _item_bias_step(indptr, indices, values, bu, mu, reg_i, item_counts, bi)
    n_blocks = max(1, min(_BIAS_BLOCKS, indptr.size - 1))
    sse = np.zeros(n_blocks)
    run_blocks(_user_bias_block, (indptr, indices, values, bi, mu, reg_u, bu, sse, n_blocks),
               n_blocks, block_threads(n_threads))
    return float(sse.sum())


_BIAS_BLOCKS = 64  # blocks of users of the bias sweep: plenty for any thread count here


def bias_als_sweep_reference(users, items, values, bu, bi, mu, reg_u, reg_i):
    """NumPy version of :func:`bias_als_sweep` on (users, items, values) triples."""
    n_u, n_i = bu.size, bi.size
    with np.errstate(invalid="ignore", divide="ignore"):
        bi[:] = (np.bincount(items, weights=values - mu - bu[users], minlength=n_i)
                 / (reg_i + np.bincount(items, minlength=n_i)))
        bi[~np.isfinite(bi)] = 0.0
        bu[:] = (np.bincount(users, weights=values - mu - bi[items], minlength=n_u)
                 / (reg_u + np.bincount(users, minlength=n_u)))
        bu[~np.isfinite(bu)] = 0.0
    e = values - mu - bu[users] - bi[items]
    return float(e @ e)
