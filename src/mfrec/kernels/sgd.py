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
           "block_users", "relabelled_item_counts", "take_rows", "weighted_square_sum",
           "weighted_square_sum_reference", "spread_normal", "spread_normal_reference",
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
        Draws the user permutation (then :func:`ordered_within_blocks`), then the item
        permutation.
    n_threads : int, default=1
        Threads for the two passes (row blocks are independent); the result does not depend
        on it.

    Returns
    -------
    user_rows, user_counts, items, ratings, block_ptr
        The blocked ratings as :func:`scatter_blocks` describes them, with users and items by
        index (``relabel=False``).
    """
    perm_u = ordered_within_blocks(rng.permutation(indptr.size - 1), n_blocks)
    perm_i = rng.permutation(n_items).astype(np.int32)
    return scatter_blocks(indptr, indices, values, perm_u, perm_i, n_blocks, n_threads)


def scatter_blocks(indptr, indices, values, perm_u, perm_i, n_blocks, n_threads=1, *,
                   relabel=False):
    """:func:`make_blocks` with given permutations.

    ``perm_u[u]`` is user ``u``'s position among the users (row block ``perm_u[u] * n_blocks //
    n_users``), with the users of a row block in index order (as :func:`ordered_within_blocks`
    gives them); ``perm_i`` is the same for items, in any order. Block ``(a, b)`` holds its
    ratings grouped by user, users by increasing position, a user's ratings in CSR order. The
    users of a block are not stored per rating but as runs: ``user_counts[b, t]`` ratings of the
    user at position ``t`` follow one another in the column block ``b`` of ``t``'s row block (1
    to 4 bytes per position and column block instead of 4 per rating: at 100M ratings a third
    of the writes of this pass and 370 MB less memory).

    With ``relabel=True`` the returned ``user_rows`` and ``items`` are positions instead of
    indices, for factors stored in permuted order (row ``perm_u[u]`` of the user factors is user
    ``u``'s): a row block's users are then one contiguous stretch of memory, read in increasing
    order, which at 100M ratings made an SGD epoch twice as fast as rows scattered across the
    whole array.

    Parameters
    ----------
    indptr, indices, values : the ratings as CSR arrays (users are rows), values float32
    perm_u : ndarray of int, shape (n_users,)
    perm_i : ndarray of int, shape (n_items,)
    n_blocks : int
    n_threads : int, default=1
        Threads for the two passes; the result does not depend on it.
    relabel : bool, default=False

    Raises
    ------
    ValueError
        When ``perm_u`` does not keep a row block's users in index order.

    Returns
    -------
    user_rows : ndarray of int32, shape (n_users,)
        The factor row of the user at position ``t``: the user's index, or ``t`` when relabelled.
    user_counts : ndarray of uint8, uint16 or int32, shape (n_blocks, n_users)
        Ratings of the user at position ``t`` in column block ``b`` (of its row block), in the
        narrowest of the three types that holds the largest.
    items : ndarray of int32, shape (nnz,)
        Item indices (positions when relabelled), block by block.
    ratings : ndarray of float32, shape (nnz,)
    block_ptr : ndarray of int64, shape (n_blocks * n_blocks + 1,)
        Block ``(a, b)`` holds the entries from ``block_ptr[a * n_blocks + b]`` up to
        ``block_ptr[a * n_blocks + b + 1]``; row block ``a`` holds the positions ``t`` with
        ``t * n_blocks // n_users == a``.
    """
    n_users = indptr.size - 1
    n_items = perm_i.size
    perm_u = np.asarray(perm_u, dtype=np.int32)
    visit = np.empty(n_users, dtype=np.int32)  # visit[t]: the user at position t
    visit[perm_u] = np.arange(n_users, dtype=np.int32)
    row_start = (np.arange(n_blocks + 1, dtype=np.int64) * n_users + n_blocks - 1) // n_blocks
    rising = np.ones(max(n_users - 1, 0), dtype=bool)
    rising[row_start[1:-1][row_start[1:-1] < n_users] - 1] = False  # block boundaries
    if np.any(np.diff(visit)[rising] <= 0):
        raise ValueError("perm_u must keep each row block's users in index order (see "
                         "ordered_within_blocks)")
    pos_i = perm_i.astype(np.int64)
    col_block = pos_i * n_blocks // max(n_items, 1)
    # the count pass needs only the column block: int16, so that the table stays in a core's
    # L2 cache (an integer division per rating was most of that pass's cost)
    small_block = col_block.astype(np.int16 if n_blocks <= np.iinfo(np.int16).max else np.int32)
    # the fill pass needs the block and the stored label: one table of both, so one cache miss
    # per rating instead of two (a tenth faster at 100M ratings)
    packed = (pos_i if relabel else np.arange(n_items, dtype=np.int64)) | (col_block << 32)
    # Both passes read the users in index order, in chunks of about equal ratings: the CSR
    # arrays are read straight through (at 100M ratings a quarter faster than by position,
    # which jumps between users). A row block's users are in index order (perm_u as
    # ordered_within_blocks gives it), so a chunk's ratings of each block come after those of
    # the chunks before it: its own counts place them, and the result does not depend on the
    # chunks or the threads.
    n_chunks = max(1, min(_SCATTER_CHUNKS, n_users))
    chunk_users = np.searchsorted(indptr, np.arange(n_chunks + 1) * (indices.size / n_chunks))
    chunk_users[0], chunk_users[-1] = 0, n_users
    counts = np.zeros((n_chunks, n_blocks, n_blocks), dtype=np.int64)
    user_counts = np.empty((n_blocks, n_users), dtype=np.int32)  # every entry is written
    run_blocks(_count_chunk, (indptr, indices, perm_u, small_block, chunk_users, counts,
                              user_counts), n_chunks, n_threads)
    # the runs in the narrowest type that holds the longest: a byte per user and block where
    # users average a few ratings (int32 would take more than a per-rating user index there)
    longest = int(user_counts.max()) if user_counts.size else 0
    narrow = np.uint8 if longest <= 0xFF else np.uint16 if longest <= 0xFFFF else np.int32
    if narrow is not np.int32:
        user_counts = user_counts.astype(narrow)  # before the blocked copy: off the peak
    block_ptr = np.zeros(n_blocks * n_blocks + 1, dtype=np.int64)
    np.cumsum(counts.sum(axis=0).ravel(), out=block_ptr[1:])
    starts = block_ptr[:-1].reshape(1, n_blocks, n_blocks) + np.cumsum(counts, axis=0) - counts
    nnz = indices.size
    # huge pages: with 4 KB pages, first-touch faults cost more than the writes themselves at
    # 100M ratings
    items = empty_huge(nnz, np.int32)
    ratings = empty_huge(nnz, np.float32)
    run_blocks(_fill_chunk, (indptr, indices, values, perm_u, packed, chunk_users, starts, items,
                             ratings), n_chunks, n_threads)
    user_rows = np.arange(n_users, dtype=np.int32) if relabel else visit
    return user_rows, user_counts, items, ratings, block_ptr


_SCATTER_CHUNKS = 64  # chunks of users of scatter_blocks: plenty for any thread count here


def ordered_within_blocks(perm, n_blocks):
    """Positions with the same blocks as ``perm`` but, inside a block, in index order.

    ``perm`` is a permutation of ``range(n)``; element ``x`` lies in block ``perm[x] * n_blocks
    // n``. The result puts every element in the same block, with the elements of a block in
    increasing ``x``. Blocks stay random (which balances them); with a block's users in index
    order, :func:`scatter_blocks` reads the ratings' CSR arrays straight through instead of
    jumping across them (at 100M ratings, visiting each block's users in index order made it two
    to three times faster than in random order, and all users in index order a quarter faster
    again).

    Parameters
    ----------
    perm : ndarray of int, shape (n,)
    n_blocks : int

    Returns
    -------
    ndarray of int32, shape (n,)
    """
    n = perm.size
    block = perm.astype(np.int64) * n_blocks // max(n, 1)
    # NumPy's stable sort of 16-bit (or narrower) integers is a radix sort: linear time
    if n_blocks <= np.iinfo(np.int16).max:
        block = block.astype(np.int16)
    order = np.argsort(block, kind="stable")
    out = np.empty(n, dtype=np.int32)
    out[order] = np.arange(n, dtype=np.int32)
    return out


# Two passes of a counting sort, one chunk of users per call: chunks write disjoint parts of
# ``counts``, ``user_counts`` and the output, so they run on threads without locks.
@njit(cache=True, nogil=True, error_model="numpy")
def _count_chunk(indptr, indices, perm_u, col_block, chunk_users, counts, user_counts, c):
    n_blocks, n_users = user_counts.shape
    run = np.zeros(n_blocks, np.int64)  # a user's ratings per column block, in cache
    for u in range(chunk_users[c], chunk_users[c + 1]):
        t = perm_u[u]
        a = t * n_blocks // n_users
        for idx in range(indptr[u], indptr[u + 1]):
            run[col_block[indices[idx]]] += 1
        for b in range(n_blocks):
            user_counts[b, t] = run[b]
            counts[c, a, b] += run[b]
            run[b] = 0


@njit(cache=True, nogil=True, error_model="numpy")
def _fill_chunk(indptr, indices, values, perm_u, packed, chunk_users, starts, items, ratings, c):
    n_blocks = starts.shape[1]
    n_users = perm_u.size
    fill = starts[c].copy()  # where this chunk's next rating of each block goes
    for u in range(chunk_users[c], chunk_users[c + 1]):
        a = perm_u[u] * n_blocks // n_users
        for idx in range(indptr[u], indptr[u + 1]):
            code = packed[indices[idx]]
            b = code >> 32
            pos = fill[a, b]
            fill[a, b] = pos + 1
            items[pos] = code & 0xFFFFFFFF
            ratings[pos] = values[idx]


def block_users(user_rows, user_counts, block_ptr):
    """The factor row of every blocked rating: the per-rating form of the user runs.

    Parameters
    ----------
    user_rows, user_counts, block_ptr
        As returned by :func:`scatter_blocks`.

    Returns
    -------
    ndarray of int32, shape (nnz,)
    """
    n_blocks, n_users = user_counts.shape
    row_start = (np.arange(n_blocks + 1, dtype=np.int64) * n_users + n_blocks - 1) // n_blocks
    out = np.empty(int(block_ptr[-1]), dtype=np.int32)
    for a in range(n_blocks):
        t0, t1 = row_start[a], row_start[a + 1]
        for b in range(n_blocks):
            blk = a * n_blocks + b
            out[block_ptr[blk]:block_ptr[blk + 1]] = np.repeat(user_rows[t0:t1],
                                                               user_counts[b, t0:t1])
    return out


def make_blocks_reference(indptr, indices, values, n_items, n_blocks, rng):
    """Plain NumPy version of :func:`make_blocks` (a stable sort on block, then permuted user)."""
    n_users = indptr.size - 1
    perm_u = ordered_within_blocks(rng.permutation(n_users), n_blocks).astype(np.int64)
    perm_i = rng.permutation(n_items).astype(np.int64)
    users = np.repeat(np.arange(n_users), np.diff(indptr))
    pu = perm_u[users]
    cb = perm_i[indices] * n_blocks // n_items
    block = (pu * n_blocks // n_users) * n_blocks + cb
    order = np.lexsort((pu, block))  # stable: CSR order within a user
    block_ptr = np.zeros(n_blocks * n_blocks + 1, dtype=np.int64)
    np.cumsum(np.bincount(block, minlength=n_blocks * n_blocks), out=block_ptr[1:])
    user_counts = np.bincount(cb * n_users + pu, minlength=n_blocks * n_users).reshape(
        n_blocks, n_users)
    longest = user_counts.max(initial=0)
    user_counts = user_counts.astype(np.uint8 if longest <= 0xFF else np.uint16
                                     if longest <= 0xFFFF else np.int32)
    return (np.argsort(perm_u).astype(np.int32), user_counts,
            np.asarray(indices)[order].astype(np.int32),
            np.asarray(values, dtype=np.float32)[order], block_ptr)


def relabelled_item_counts(items, block_ptr, n_items, n_blocks, n_threads=1):
    """Ratings per item position, from blocks of :func:`scatter_blocks` with ``relabel=True``.

    Column block ``b`` holds the item positions ``p`` with ``p * n_blocks // n_items == b``, a
    contiguous range: one worker per column block counts into its own range of the result, so
    the workers share nothing, and the range it counts into fits a core's cache (at 100M ratings
    twice as fast as counting the CSR's item indices).

    Parameters
    ----------
    items : ndarray of int32, shape (nnz,)
        Item positions, block by block.
    block_ptr : ndarray of int64, shape (n_blocks * n_blocks + 1,)
    n_items, n_blocks : int
    n_threads : int, default=1

    Returns
    -------
    ndarray of int64, shape (n_items,)
    """
    out = np.zeros(n_items, dtype=np.int64)
    run_blocks(_count_column_block, (items, block_ptr, n_blocks, out), n_blocks, n_threads)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _count_column_block(items, block_ptr, n_blocks, out, b):
    for a in range(n_blocks):
        blk = a * n_blocks + b
        for idx in range(block_ptr[blk], block_ptr[blk + 1]):
            out[items[idx]] += 1


def take_rows(F, rows, n_threads=1):
    """``F[rows]`` for a large 2-D ``F``, on threads, into huge-page memory.

    Puts the factors trained in permuted order back in index order at the end of a fit: for
    1.8M rows of 64 float32 in random order, 0.10 s on two threads (0.17 s on one) where
    NumPy's ``F[rows]`` took 0.3 to 1 s.

    Parameters
    ----------
    F : ndarray, shape (n, k)
    rows : ndarray of int, shape (m,)
        Row indices in ``[0, n)``.
    n_threads : int, default=1

    Returns
    -------
    ndarray, shape (m, k), dtype of ``F``
    """
    out = empty_huge((rows.size, F.shape[1]), F.dtype)
    run_blocks(_take_rows_block, (F, rows, out, _TAKE_ROWS), -(-rows.size // _TAKE_ROWS),
               n_threads)
    return out


_TAKE_ROWS = 1 << 15  # rows per block of take_rows


@njit(cache=True, nogil=True, error_model="numpy")
def _take_rows_block(F, rows, out, size, blk):
    for r in range(blk * size, min(rows.size, (blk + 1) * size)):
        j = rows[r]
        for f in range(F.shape[1]):
            out[r, f] = F[j, f]


def weighted_square_sum(F, weights, n_threads=1):
    """``sum_r weights[r] * |F[r]|**2``: the weight-decay penalty of a factor matrix.

    Each row's squared norm is summed in the factors' precision, the weighted total in float64,
    over fixed chunks of rows summed in order: the value does not depend on ``n_threads``. On
    two threads it is one pass over the factors where NumPy's row norms took two, on one.

    Parameters
    ----------
    F : ndarray of float32, shape (n, k)
    weights : ndarray of float64, shape (n,)
    n_threads : int, default=1

    Returns
    -------
    float
    """
    n_chunks = max(1, -(-F.shape[0] // _SQUARE_ROWS))
    sums = np.zeros(n_chunks)
    run_blocks(_weighted_square_block, (F, weights, sums, _SQUARE_ROWS), n_chunks, n_threads)
    return float(sums.sum())


_SQUARE_ROWS = 1 << 15  # rows per block of weighted_square_sum


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def _weighted_square_block(F, weights, sums, size, blk):
    total = 0.0
    for r in range(blk * size, min(F.shape[0], (blk + 1) * size)):
        sq = np.float32(0.0)
        for f in range(F.shape[1]):
            sq += F[r, f] * F[r, f]
        total += weights[r] * np.float64(sq)
    sums[blk] = total


def weighted_square_sum_reference(F, weights):
    """Plain NumPy version of :func:`weighted_square_sum`."""
    return float(weights @ np.einsum("ij,ij->i", F, F).astype(np.float64))


# ---------------------------------------------------------------------- random start
_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_SPREAD_ROWS = 1 << 14  # rows per block of spread_normal on threads


def spread_normal(seed, n_rows, n_cols, scale, n_threads=1):
    """Approximately normal float32 draws of standard deviation ``scale``, fast and by counter.

    Entry ``n`` (row-major) is the centred sum of the four 16-bit quarters of the ``n``-th
    output of SplitMix64 seeded with ``seed`` (Irwin-Hall, 4 terms: bounded at ``+-2 sqrt(3)
    scale``, kurtosis 2.7 instead of 3), scaled to standard deviation ``scale``. Each entry
    depends only on ``seed`` and its place, so the array does not depend on ``n_threads``. At
    129M entries (100M ratings, 64 factors) NumPy's normal generator took 0.75 s on two threads,
    this 0.13 s: a random start only has to break the symmetry of the factors.

    Parameters
    ----------
    seed : int
        In ``[0, 2**64)``.
    n_rows, n_cols : int
    scale : float
    n_threads : int, default=1

    Returns
    -------
    ndarray of float32, shape (n_rows, n_cols)
    """
    out = empty_huge((n_rows, n_cols), np.float32)
    # 16-bit quarters sum to 4 * 32767.5 on average with variance 4 * (2**32 - 1) / 12
    step = np.float32(scale / np.sqrt((2.0 ** 32 - 1) / 3.0))
    run_blocks(_spread_normal_block, (out, np.uint64(seed), step, _SPREAD_ROWS),
               -(-n_rows // _SPREAD_ROWS), n_threads)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _spread_normal_block(out, seed, step, rows, blk):
    n_cols = out.shape[1]
    mask = np.uint64(0xFFFF)
    for r in range(blk * rows, min(out.shape[0], (blk + 1) * rows)):
        for f in range(n_cols):
            n = np.uint64(r * n_cols + f)
            z = seed + (n + np.uint64(1)) * np.uint64(_GOLDEN)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
            z = z ^ (z >> np.uint64(31))
            total = (np.int64(z & mask) + np.int64((z >> np.uint64(16)) & mask)
                     + np.int64((z >> np.uint64(32)) & mask) + np.int64(z >> np.uint64(48)))
            out[r, f] = np.float32(total - 131070) * step  # centred: the mean is 4 * 32767.5


def spread_normal_reference(seed, n_rows, n_cols, scale):
    """Plain NumPy version of :func:`spread_normal`."""
    n = np.arange(n_rows * n_cols, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (n + np.uint64(1)) * np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    z = z ^ (z >> np.uint64(31))
    quarters = [((z >> np.uint64(s)) & np.uint64(0xFFFF)).astype(np.int64)
                for s in (0, 16, 32, 48)]
    step = np.float32(scale / np.sqrt((2.0 ** 32 - 1) / 3.0))
    return ((sum(quarters) - 131070).astype(np.float32) * step).reshape(n_rows, n_cols)


# ---------------------------------------------------------------------- SGD epoch
# not inline="always": a kernel that inlines it at Numba's level computed differently when
# freshly compiled than when loaded from the cache (a fixed seed did not reproduce a fit)
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _sgd_block(lo, t0, t1, runs, user_rows, items, ratings, P, Q, bu, bi, mu, lr_b, lr_f,
               reg_bu, reg_bi, reg_p, reg_q):
    # the block's ratings from lo on: runs[t] of them for each position t in [t0, t1)
    k = P.shape[1]
    err = 0.0
    for t in range(t0, t1):
        hi = lo + runs[t]
        u = user_rows[t]
        for idx in range(lo, hi):
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
        lo = hi
    return err


def sgd_epoch(user_rows, user_counts, items, ratings, block_ptr, n_chunks, P, Q, bu, bi, mu, lr_b,
              lr_f, reg_bu, reg_bi, reg_p, reg_q, block_err, n_threads=None):
    """One SGD epoch over blocked ratings, in place, by ``n_chunks`` parallel workers.

    Worker ``c`` owns the row blocks ``c * n_blocks // n_chunks`` up to the next worker's, and
    walks the strata: at step ``s`` it runs the blocks ``(a, (a + s) % n_blocks)`` of its rows.
    Workers never share a user; they share no item either while they keep pace, and there is no
    barrier between steps, so a worker held up by the OS only risks a benign race on an item row
    (Hogwild) instead of stalling the others. With ``n_chunks=1`` the visit is sequential.

    Parameters
    ----------
    user_rows, user_counts, items, ratings, block_ptr
        As returned by :func:`make_blocks` (``n_blocks`` is ``user_counts.shape[0]``).
    n_chunks : int
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
    run_blocks(sgd_epoch_block, (user_rows, user_counts, items, ratings, block_ptr, n_chunks, P,
                                 Q, bu, bi, mu, lr_b, lr_f, reg_bu, reg_bi, reg_p, reg_q,
                                 block_err),
               n_chunks, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def sgd_epoch_block(user_rows, user_counts, items, ratings, block_ptr, n_chunks, P, Q, bu, bi,
                    mu, lr_b, lr_f, reg_bu, reg_bi, reg_p, reg_q, block_err, c):
    """Worker ``c`` of :func:`sgd_epoch`: its row blocks, stratum by stratum."""
    n_blocks, n_users = user_counts.shape
    for s in range(n_blocks):
        for a in range(c * n_blocks // n_chunks, (c + 1) * n_blocks // n_chunks):
            b = (a + s) % n_blocks
            blk = a * n_blocks + b
            t0 = (a * n_users + n_blocks - 1) // n_blocks
            t1 = ((a + 1) * n_users + n_blocks - 1) // n_blocks
            block_err[blk] = _sgd_block(block_ptr[blk], t0, t1, user_counts[b], user_rows,
                                        items, ratings, P, Q, bu, bi, mu, lr_b, lr_f, reg_bu,
                                        reg_bi, reg_p, reg_q)


def sgd_epoch_reference(user_rows, user_counts, items, ratings, block_ptr, n_chunks, P, Q, bu,
                        bi, mu, lr_b, lr_f, reg_bu, reg_bi, reg_p, reg_q, block_err):
    """Plain NumPy version of :func:`sgd_epoch`: the workers one after the other, over the
    per-rating users of :func:`block_users`."""
    users = block_users(user_rows, user_counts, block_ptr)
    n_blocks = user_counts.shape[0]
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
