"""Seen-item exclusion around an inverted-file search (used by ``mfrec.index``).

:func:`seen_in_probed` counts, for each user, the seen items that lie in the lists the user's
query probes: faiss is then asked for ``n`` plus that many candidates, which is enough for ``n``
unseen ones and much fewer than ``n`` plus all seen items (the cost of faiss's scan grows with
the number of candidates kept). faiss returns each user's candidates best first with their
scores; :func:`select_unseen` drops the seen ones and keeps the first ``n`` of the rest. Both are
small Numba kernels, users in parallel in chunks: each chunk marks one user's seen items (or
probed lists) in a flag array of its own and clears them after, so nothing is sorted, searched
or allocated per user and no (users x candidates) temporaries are built. ``*_reference`` are
the vectorised NumPy versions the tests hold them to.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["seen_in_probed", "seen_in_probed_reference", "select_unseen",
           "select_unseen_reference"]

#: rows per parallel chunk: each chunk allocates its flag array once
_CHUNK = 256


@njit(cache=True, parallel=True, error_model="numpy")
def seen_in_probed(probe, item_list, indptr, indices, rows, n_lists):
    """Number of each user's seen items that lie in the lists the user probes.

    Parameters
    ----------
    probe : int64 ndarray of shape (m, p)
        Lists probed for each row (negative entries are ignored).
    item_list : int32 or int64 ndarray of shape (n_items,)
        The list each item is stored in.
    indptr : int64 ndarray of shape (n_users + 1,)
    indices : int32 ndarray of shape (nnz,)
        The seen items of every user (CSR).
    rows : int64 ndarray of shape (m,)
        The user of each row; -1 counts nothing.
    n_lists : int
        Number of lists (``item_list`` values are below it).

    Returns
    -------
    int64 ndarray of shape (m,)
    """
    m, p = probe.shape
    out = np.zeros(m, dtype=np.int64)
    for chunk in prange((m + _CHUNK - 1) // _CHUNK):
        probed = np.zeros(n_lists, dtype=np.bool_)
        for r in range(chunk * _CHUNK, min(m, (chunk + 1) * _CHUNK)):
            u = rows[r]
            if u < 0 or indptr[u + 1] == indptr[u]:
                continue
            for j in range(p):
                if probe[r, j] >= 0:
                    probed[probe[r, j]] = True
            c = 0
            for t in range(indptr[u], indptr[u + 1]):
                if probed[item_list[indices[t]]]:
                    c += 1
            out[r] = c
            for j in range(p):
                if probe[r, j] >= 0:
                    probed[probe[r, j]] = False
    return out


def seen_in_probed_reference(probe, item_list, indptr, indices, rows, n_lists):
    """NumPy version of :func:`seen_in_probed` (same arguments and result)."""
    probe = np.asarray(probe, dtype=np.int64)
    m = probe.shape[0]
    rows = np.asarray(rows, dtype=np.int64)
    has = rows >= 0
    safe_rows = np.where(has, rows, 0)
    starts = np.where(has, indptr[safe_rows], 0)
    counts = np.where(has, indptr[safe_rows + 1] - starts, 0)
    local = np.repeat(np.arange(m, dtype=np.int64), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    seen_lists = np.asarray(item_list, dtype=np.int64)[indices[np.repeat(starts, counts) + within]]
    # (row, list) pairs as one integer key; a list probed twice still counts once
    probe_keys = (np.arange(m, dtype=np.int64)[:, None] * n_lists + probe)[probe >= 0]
    hit = np.isin(local * n_lists + seen_lists, probe_keys)
    return np.bincount(local[hit], minlength=m).astype(np.int64)


@njit(cache=True, parallel=True, error_model="numpy")
def select_unseen(cand, scores, indptr, indices, rows, n, n_items):
    """The first ``n`` candidates of each row that are not among the user's seen items.

    Parameters
    ----------
    cand : int64 ndarray of shape (m, c)
        Candidate item indices of each row, best first; negative entries are padding (skipped).
    scores : float32 ndarray of shape (m, c)
        Their scores.
    indptr : int64 ndarray of shape (n_users + 1,)
    indices : int32 ndarray of shape (nnz,)
        The seen items of every user, as a CSR structure.
    rows : int64 ndarray of shape (m,)
        The user (CSR row) of each candidate row; -1 excludes nothing for that row.
    n : int
        Items to keep per row.
    n_items : int
        Size of the catalogue (item indices are below it).

    Returns
    -------
    pos : int64 ndarray of shape (m, n)
        Kept item indices in candidate order, -1 where fewer than ``n`` were left.
    kept : float32 ndarray of shape (m, n)
        Their scores, ``-inf`` for padding.
    found : int64 ndarray of shape (m,)
        How many items each row kept (at most ``n``).
    """
    m, c = cand.shape
    pos = np.full((m, n), -1, dtype=np.int64)
    kept = np.full((m, n), -np.inf, dtype=np.float32)
    found = np.zeros(m, dtype=np.int64)
    for chunk in prange((m + _CHUNK - 1) // _CHUNK):
        seen = np.zeros(n_items, dtype=np.bool_)
        for r in range(chunk * _CHUNK, min(m, (chunk + 1) * _CHUNK)):
            u = rows[r]
            if u >= 0:
                for t in range(indptr[u], indptr[u + 1]):
                    seen[indices[t]] = True
            f = 0
            for j in range(c):
                item = cand[r, j]
                if item < 0 or seen[item]:
                    continue
                pos[r, f] = item
                kept[r, f] = scores[r, j]
                f += 1
                if f == n:
                    break
            found[r] = f
            if u >= 0:
                for t in range(indptr[u], indptr[u + 1]):
                    seen[indices[t]] = False
    return pos, kept, found


def select_unseen_reference(cand, scores, indptr, indices, rows, n, n_items):
    """NumPy version of :func:`select_unseen` (same arguments and results)."""
    cand = np.asarray(cand, dtype=np.int64)
    m, c = cand.shape
    rows = np.asarray(rows, dtype=np.int64)
    has = rows >= 0
    safe_rows = np.where(has, rows, 0)
    starts = np.where(has, indptr[safe_rows], 0)
    counts = np.where(has, indptr[safe_rows + 1] - starts, 0)
    # (row, item) pairs as one integer key, for the candidates and for the seen items
    width = int(n_items)
    local = np.repeat(np.arange(m, dtype=np.int64), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    seen_keys = local * width + indices[np.repeat(starts, counts) + within]
    keys = np.arange(m, dtype=np.int64)[:, None] * width + np.maximum(cand, 0)
    keep = (cand >= 0) & ~np.isin(keys, seen_keys)
    rank = np.cumsum(keep, axis=1) - 1
    keep &= rank < n
    r, j = np.nonzero(keep)
    pos = np.full((m, n), -1, dtype=np.int64)
    kept = np.full((m, n), -np.inf, dtype=np.float32)
    pos[r, rank[r, j]] = cand[r, j]
    kept[r, rank[r, j]] = scores[r, j]
    return pos, kept, keep.sum(axis=1).astype(np.int64)
