"""Serving kernels: top-N selection over factor scores, and SGD fold-in of new users.

:func:`topn` scores a batch of query vectors against the candidate item vectors in tiles (one
float32 GEMM per tile of users x items, so all user x item pairs are never held at once), masks
each user's seen items from a CSR row inside the kernel, and keeps the best ``n`` per user in a
small heap. Blocks of users run in parallel; BLAS inside each is single-threaded
(:func:`mfrec._threads.thread_context`).

:func:`topn_reference` is the plain NumPy version the tests compare against.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["topn", "topn_reference", "select_topn", "select_topn_reference", "rank_stats",
           "rank_stats_reference", "sgd_fold_in", "sgd_fold_in_reference"]

_USER_BLOCK = 64
_ITEM_TILE = 2048


@njit(cache=True, error_model="numpy")
def _worse(s_a, i_a, s_b, i_b):
    # heap order: lower score is worse; on equal scores the higher index is worse, so ties go to
    # the lower index and results do not depend on tiling or thread count
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@njit(cache=True, error_model="numpy")
def _sift_down(hs, hi, cnt, pos):
    while True:
        left = 2 * pos + 1
        if left >= cnt:
            return
        child = left
        right = left + 1
        if right < cnt and _worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            hs[pos], hs[child] = hs[child], hs[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            return


@njit(cache=True, error_model="numpy")
def _push(hs, hi, cnt, n, s, j):
    """Offer (score s, index j) to a min-heap of capacity n holding cnt entries; new count."""
    if cnt < n:
        pos = cnt
        hs[pos] = s
        hi[pos] = j
        while pos > 0:  # sift up
            parent = (pos - 1) // 2
            if _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
                hs[pos], hs[parent] = hs[parent], hs[pos]
                hi[pos], hi[parent] = hi[parent], hi[pos]
                pos = parent
            else:
                break
        return cnt + 1
    if _worse(hs[0], hi[0], s, j):
        hs[0] = s
        hi[0] = j
        _sift_down(hs, hi, cnt, 0)
    return cnt


@njit(cache=True, error_model="numpy")
def _drain(hs, hi, cnt, out_s, out_i):
    """Write the heap's entries best first into out_s/out_i (which are pre-filled as padding)."""
    while cnt > 0:
        cnt -= 1
        out_s[cnt] = hs[0]
        out_i[cnt] = hi[0]
        hs[0] = hs[cnt]
        hi[0] = hi[cnt]
        _sift_down(hs, hi, cnt, 0)


@njit(cache=True, error_model="numpy")
def _offer_row(row, bias, offset, hs, hi, cnt, n):
    """Offer every ``row[j] + bias[j]`` (at index ``offset + j``) to the min-heap ``hs``/``hi``
    of capacity ``n`` holding ``cnt`` entries; the new count.

    Entries are offered in increasing index, and the heap holds only lower indices, so a later
    score equal to the heap's worst never displaces it (ties go to the lower index): a strict
    comparison against the worst kept score is exact. -inf and NaN never pass it.
    """
    thr = hs[0] if cnt == n else -np.inf
    for j in range(row.shape[0]):
        v = row[j] + bias[j]
        if v > thr:
            cnt = _push(hs, hi, cnt, n, v, offset + j)
            if cnt == n:
                thr = hs[0]
    return cnt


@njit(cache=True, parallel=True, fastmath=False, error_model="numpy")
def topn(U, Q, item_bias, seen_indptr, seen_indices, seen_rows, cand_pos, n):
    """Best ``n`` candidates per query vector, seen items masked.

    Parameters
    ----------
    U : float32 array of shape (m, k), C-contiguous
        Query vectors (user factors).
    Q : float32 array of shape (c, k), C-contiguous
        Candidate item vectors.
    item_bias : float32 array of shape (c,)
        Added to every score; ``-inf`` excludes a candidate for everyone.
    seen_indptr, seen_indices : int arrays
        CSR rows of items to mask, as *global* item indices.
    seen_rows : int64 array of shape (m,)
        Row of the CSR for each query, or -1 for none.
    cand_pos : int64 array of shape (n_items,) or (0,)
        Candidate position of each global item (-1 when not a candidate); empty means candidates
        are the global items themselves.
    n : int
        How many to keep.

    Returns
    -------
    idx : int64 array of shape (m, n)
        Candidate positions, best first; -1 where fewer than ``n`` finite-scored candidates exist.
    scores : float32 array of shape (m, n)
        ``U @ Q.T + item_bias`` at those positions; ``-inf`` for padding.
    """
    m, k = U.shape
    c = Q.shape[0]
    idx = np.full((m, n), -1, np.int64)
    scores = np.full((m, n), -np.inf, np.float32)
    identity = cand_pos.shape[0] == 0
    n_blocks = (m + _USER_BLOCK - 1) // _USER_BLOCK
    for b in prange(n_blocks):
        u0 = b * _USER_BLOCK
        u1 = min(m, u0 + _USER_BLOCK)
        bs = u1 - u0
        Ub = U[u0:u1]
        hs = np.empty((bs, n), np.float32)
        hi = np.empty((bs, n), np.int64)
        cnt = np.zeros(bs, np.int64)
        for t0 in range(0, c, _ITEM_TILE):
            t1 = min(c, t0 + _ITEM_TILE)
            S = np.dot(Ub, Q[t0:t1].T)
            for r in range(bs):
                row = S[r]
                su = seen_rows[u0 + r]
                if su >= 0:
                    for p in range(seen_indptr[su], seen_indptr[su + 1]):
                        g = seen_indices[p]
                        pos = g if identity else cand_pos[g]
                        if pos >= t0 and pos < t1:
                            row[pos - t0] = -np.inf
                cnt[r] = _offer_row(row, item_bias[t0:t1], t0, hs[r], hi[r], cnt[r], n)
        for r in range(bs):
            _drain(hs[r], hi[r], cnt[r], scores[u0 + r], idx[u0 + r])
    return idx, scores


@njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
def select_topn(S, bias, seen_rows, seen_indptr, seen_indices, n):
    """Best ``n`` positions of each row of a score matrix, seen items masked; one thread.

    What :func:`topn` does after its products, for scores already computed (by BLAS, outside):
    the service's path for a few users at a time, where the products are one call each.

    Parameters
    ----------
    S : float32 array of shape (m, c)
        Scores before the item bias. Modified: seen positions are set to ``-inf``.
    bias : float32 array of shape (c,)
        Added to every row (``-inf`` excludes a position for everyone).
    seen_rows : int64 array of shape (m,)
        Row of the seen CSR for each score row, or -1 for none.
    seen_indptr, seen_indices : int arrays
        CSR rows of positions to mask.
    n : int
        How many to keep (>= 1).

    Returns
    -------
    idx : int64 array of shape (m, n)
        Positions, best first, ties to the lower position; -1 where a row has fewer than ``n``
        finite scores (``-inf`` and NaN are never chosen).
    scores : float32 array of shape (m, n)
        The scores (bias included) at those positions; ``-inf`` for padding.
    """
    m, c = S.shape
    idx = np.full((m, n), -1, np.int64)
    scores = np.full((m, n), -np.inf, np.float32)
    hs = np.empty(n, np.float32)
    hi = np.empty(n, np.int64)
    for r in range(m):
        row = S[r]
        su = seen_rows[r]
        if su >= 0:
            for p in range(seen_indptr[su], seen_indptr[su + 1]):
                row[seen_indices[p]] = -np.inf
        cnt = _offer_row(row, bias, 0, hs, hi, 0, n)
        _drain(hs, hi, cnt, scores[r], idx[r])
    return idx, scores


def select_topn_reference(S, bias, seen_rows, seen_indptr, seen_indices, n):
    """NumPy reference of :func:`select_topn` (``S`` is not modified)."""
    S = np.asarray(S, dtype=np.float32) + np.asarray(bias, dtype=np.float32)
    m, c = S.shape
    idx = np.full((m, n), -1, np.int64)
    out = np.full((m, n), -np.inf, np.float32)
    for r in range(m):
        su = seen_rows[r]
        if su >= 0:
            S[r, seen_indices[seen_indptr[su]:seen_indptr[su + 1]]] = -np.inf
        order = np.argsort(-S[r], kind="stable")  # NaN sorts last
        order = order[np.isfinite(S[r, order])][:n]
        idx[r, :order.size] = order
        out[r, :order.size] = S[r, order]
    return idx, out


def topn_reference(U, Q, item_bias, seen_indptr, seen_indices, seen_rows, cand_pos, n):
    """NumPy reference of :func:`topn` (materialises the full score matrix)."""
    S = U.astype(np.float64) @ Q.astype(np.float64).T + item_bias[None, :]
    m, c = S.shape
    for r in range(m):
        su = seen_rows[r]
        if su >= 0:
            g = seen_indices[seen_indptr[su]:seen_indptr[su + 1]]
            pos = g if cand_pos.shape[0] == 0 else cand_pos[g]
            S[r, pos[pos >= 0]] = -np.inf
    idx = np.full((m, n), -1, np.int64)
    out = np.full((m, n), -np.inf, np.float32)
    for r in range(m):
        # ties to the lower index: stable sort on the negated scores
        order = np.argsort(-S[r], kind="stable")
        order = order[np.isfinite(S[r, order])][:n]
        idx[r, :order.size] = order
        out[r, :order.size] = S[r, order]
    return idx, out


@njit(cache=True, error_model="numpy")
def sgd_fold_in(indptr, items, values, Q, item_bias, global_mean, learning_rate, regularization,
                bias_regularization, n_epochs, fit_bias, seed):
    """Factors (and bias) of new users by SGD on their ratings, item side held fixed.

    Minimises ``sum (r - mu - b_u - b_i - p . q_i)^2 + regularization * |p|^2 +
    bias_regularization * b_u^2`` per rating, visiting each user's ratings in a fresh random
    order every epoch, the way the SGD models train. Users are independent, so they run in parallel.

    Returns
    -------
    P : float32 array of shape (n_new, k)
    bu : float32 array of shape (n_new,)
    """
    n_new = indptr.shape[0] - 1
    k = Q.shape[1]
    P = np.zeros((n_new, k), np.float32)
    bu = np.zeros(n_new, np.float32)
    lr = np.float32(learning_rate)
    reg = np.float32(regularization)
    regb = np.float32(bias_regularization)
    for u in range(n_new):
        s, e = indptr[u], indptr[u + 1]
        if e == s:  # nothing to fit: zero factors and bias, the fallback every model gives
            continue
        np.random.seed(seed + u)
        order = np.arange(s, e)
        p = P[u]
        b = np.float32(0.0)
        # a tiny random start breaks the symmetry p = 0, where the factor gradient vanishes
        for f in range(k):
            p[f] = np.float32(np.random.normal(0.0, 0.01))
        for _ in range(n_epochs):
            np.random.shuffle(order)
            for t in order:
                i = items[t]
                pred = global_mean + b + item_bias[i]
                for f in range(k):
                    pred += p[f] * Q[i, f]
                err = np.float32(values[t] - pred)
                if fit_bias:
                    b += lr * (err - regb * b)
                for f in range(k):
                    p[f] += lr * (err * Q[i, f] - reg * p[f])
        bu[u] = b
    return P, bu


def sgd_fold_in_reference(indptr, items, values, Q, item_bias, global_mean, learning_rate,
                          regularization, bias_regularization, n_epochs, fit_bias):
    """Closed-form optimum of the objective :func:`sgd_fold_in` descends (for tests)."""
    n_new = indptr.shape[0] - 1
    k = Q.shape[1]
    P = np.zeros((n_new, k))
    bu = np.zeros(n_new)
    for u in range(n_new):
        s, e = indptr[u], indptr[u + 1]
        if e == s:
            continue
        it = items[s:e]
        F = Q[it].astype(np.float64)
        if fit_bias:
            F = np.hstack([F, np.ones((F.shape[0], 1))])
        t = values[s:e] - global_mean - item_bias[it]
        diag = np.full(F.shape[1], regularization * (e - s))
        if fit_bias:
            diag[k] = bias_regularization * (e - s)
        A = F.T @ F + np.diag(diag)
        x = np.linalg.solve(A, F.T @ t)
        P[u] = x[:k]
        if fit_bias:
            bu[u] = x[k]
    return P, bu


@njit(cache=True, parallel=True, fastmath=False, error_model="numpy")
def rank_stats(U, Q, item_bias, seen_indptr, seen_indices, seen_rows, rel_indptr, rel_indices):
    """Where each user's relevant items fall in the full ranking of the candidates.

    Candidates are all items with a finite score that are not masked as seen (same masking as
    :func:`topn`); relevant items must be candidates (callers drop seen and unknown ones).

    Parameters
    ----------
    U, Q, item_bias, seen_indptr, seen_indices, seen_rows
        As in :func:`topn` (candidates are the global items).
    rel_indptr, rel_indices : int arrays
        CSR of each query's relevant items (row ``r`` for query ``r``), sorted, unique.

    Returns
    -------
    first_rank : int64 array of shape (m,)
        1 + the number of non-relevant candidates scored above the best relevant item; 0 when the
        user has no relevant item.
    auc : float64 array of shape (m,)
        Fraction of (relevant, non-relevant candidate) pairs ranked correctly, ties counting
        half; NaN when either side is empty.
    """
    m, k = U.shape
    c = Q.shape[0]
    first = np.zeros(m, np.int64)
    auc = np.full(m, np.nan)
    n_blocks = (m + _USER_BLOCK - 1) // _USER_BLOCK
    for b in prange(n_blocks):
        u0 = b * _USER_BLOCK
        u1 = min(m, u0 + _USER_BLOCK)
        S = np.dot(U[u0:u1], Q.T)
        for r in range(u1 - u0):
            q = u0 + r
            R = rel_indptr[q + 1] - rel_indptr[q]
            if R == 0:
                continue
            row = S[r]
            for j in range(c):
                row[j] += item_bias[j]
            su = seen_rows[q]
            if su >= 0:
                for p in range(seen_indptr[su], seen_indptr[su + 1]):
                    row[seen_indices[p]] = -np.inf
            rel = np.empty(R, np.float32)
            for t in range(R):
                rel[t] = row[rel_indices[rel_indptr[q] + t]]
            rel.sort()
            # greater[t] / equal[t]: candidates scored above / equal to the t-th relevant score,
            # accumulated with difference arrays over the sorted relevant scores
            dg = np.zeros(R + 1, np.int64)
            de = np.zeros(R + 1, np.int64)
            n_cand = 0
            for j in range(c):
                v = row[j]
                if not v > -np.inf:
                    continue
                n_cand += 1
                lo = np.searchsorted(rel, v, side="left")
                hi = np.searchsorted(rel, v, side="right")
                dg[0] += 1
                dg[lo] -= 1
                de[lo] += 1
                de[hi] -= 1
            n_neg = n_cand - R
            g = 0
            e = 0
            best = n_cand
            correct = 0.0
            for t in range(R):
                g += dg[t]
                e += de[t]
                hi = np.searchsorted(rel, rel[t], side="right")
                lo = np.searchsorted(rel, rel[t], side="left")
                neg_g = g - (R - hi)
                neg_e = e - (hi - lo)
                if neg_g < best:
                    best = neg_g
                correct += n_neg - neg_g - 0.5 * neg_e
            first[q] = 1 + best
            if n_neg > 0:
                auc[q] = correct / (R * n_neg)
    return first, auc


def rank_stats_reference(U, Q, item_bias, seen_indptr, seen_indices, seen_rows, rel_indptr,
                         rel_indices):
    """NumPy reference of :func:`rank_stats` (pairwise comparisons)."""
    S = U.astype(np.float64) @ Q.astype(np.float64).T + item_bias[None, :]
    S = S.astype(np.float32)
    m = S.shape[0]
    first = np.zeros(m, np.int64)
    auc = np.full(m, np.nan)
    for q in range(m):
        rel = rel_indices[rel_indptr[q]:rel_indptr[q + 1]]
        if rel.size == 0:
            continue
        row = S[q].copy()
        su = seen_rows[q]
        if su >= 0:
            row[seen_indices[seen_indptr[su]:seen_indptr[su + 1]]] = -np.inf
        cand = np.isfinite(row)
        neg = cand.copy()
        neg[rel] = False
        sr, sn = row[rel][:, None], row[neg][None, :]
        first[q] = 1 + int((sn > sr.max()).sum())
        if sn.size:
            auc[q] = float(((sr > sn).sum() + 0.5 * (sr == sn).sum()) / (sr.size * sn.size))
    return first, auc
