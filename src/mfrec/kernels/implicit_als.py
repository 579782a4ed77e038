"""Kernels of implicit-feedback ALS (Hu, Koren and Volinsky 2008).

For one side (say users, with item factors ``Y`` fixed) each row ``u`` solves

    (Y^T Y + Y^T (C_u - I) Y + reg_u I) x_u = Y^T C_u p_u

where ``C_u`` holds the confidences ``1 + alpha * r_ui`` on the row's observed items (1
elsewhere) and ``p_u`` the preferences (1 where ``r_ui > 0``). ``Y^T Y`` is computed once per
half-iteration; only the row's observed items add to it. Two solvers:

- :func:`cg_solve`: a few conjugate-gradient steps warm-started from the current ``x_u``. Each
  row's item vectors are gathered once into a contiguous buffer and reused by every CG step
  (rows longer than ``gather_cap`` read ``Y`` in place, bounding the buffer).
- :func:`cholesky_solve`: builds the k x k system and solves it exactly.

Rows run in parallel over blocks of equal work (:func:`balanced_blocks`): a kernel ``*_block``
solves one block without the GIL and its wrapper runs the blocks on Python threads
(:func:`mfrec._threads.run_blocks`), which compiles far faster than ``parallel=True``. Each row is
independent, so results do not depend on the thread count. Everything is float32 except the
Cholesky factorisation (float64).

:func:`solve_reference` and :func:`loss_reference` are the plain NumPy versions the tests use.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH
from .._threads import block_threads, run_blocks

__all__ = ["cg_solve", "cholesky_solve", "loss", "cg_solve_block", "cholesky_solve_block",
           "loss_block", "balanced_blocks", "transpose", "solve_reference", "loss_reference"]

_EPS = np.float32(1e-20)


def balanced_blocks(indptr, n_blocks, k):
    """Row boundaries of ``n_blocks`` contiguous blocks with about equal solve work.

    A row's CG work is about ``nnz * 4k + 2k^2`` flops per step, i.e. proportional to
    ``nnz + k / 2``.

    Returns
    -------
    ndarray of int64, shape (n_blocks' + 1,)
    """
    n_rows = indptr.size - 1
    n_blocks = max(1, min(int(n_blocks), n_rows))
    cost = np.diff(indptr).astype(np.float64) + (k / 2.0 + 1.0)
    cum = np.concatenate([[0.0], np.cumsum(cost)])
    targets = cum[-1] * np.arange(1, n_blocks) / n_blocks
    inner = np.searchsorted(cum, targets)
    bounds = np.unique(np.concatenate([[0], inner, [n_rows]])).astype(np.int64)
    return bounds


@njit(cache=True, error_model="numpy")
def transpose(indptr, indices, data, n_cols):
    """The CSR arrays of the transposed matrix (a counting sort; rows come out sorted).

    Allocates only the output (int64 indptr of n_cols + 1, int32 indices, float32 data), where
    scipy's ``tocsc`` also copies the input indices.
    """
    n_rows = indptr.shape[0] - 1
    nnz = indices.shape[0]
    t_ptr = np.zeros(n_cols + 1, np.int64)
    for t in range(nnz):
        t_ptr[indices[t] + 1] += 1
    for c in range(n_cols):
        t_ptr[c + 1] += t_ptr[c]
    fill = t_ptr[:-1].copy()
    t_idx = np.empty(nnz, np.int32)
    t_val = np.empty(nnz, np.float32)
    for r in range(n_rows):
        for t in range(indptr[r], indptr[r + 1]):
            c = indices[t]
            q = fill[c]
            t_idx[q] = r
            t_val[q] = data[t]
            fill[c] = q + 1
    return t_ptr, t_idx, t_val


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _cg_row(x, G, gidx, vals, alpha, YtY, reg, cg_steps, r, p, Ap):
    k = x.shape[0]
    one = np.float32(1.0)
    # r = b - A x, with A x = (YtY + reg I) x + sum_i w_i (y_i . x) y_i and b = sum_i c_i p_i y_i
    for a in range(k):
        acc = np.float32(0.0)
        for b in range(k):
            acc += YtY[a, b] * x[b]
        r[a] = -acc - reg * x[a]
    for t in range(gidx.shape[0]):
        y = G[gidx[t]]
        w = alpha * vals[t]
        d = np.float32(0.0)
        for a in range(k):
            d += y[a] * x[a]
        coef = -w * d
        if vals[t] > 0:
            coef += one + w
        for a in range(k):
            r[a] += coef * y[a]
    rs_old = np.float32(0.0)
    for a in range(k):
        p[a] = r[a]
        rs_old += r[a] * r[a]
    if rs_old < _EPS:
        return
    for _ in range(cg_steps):
        for a in range(k):
            acc = np.float32(0.0)
            for b in range(k):
                acc += YtY[a, b] * p[b]
            Ap[a] = acc + reg * p[a]
        for t in range(gidx.shape[0]):
            y = G[gidx[t]]
            d = np.float32(0.0)
            for a in range(k):
                d += y[a] * p[a]
            d *= alpha * vals[t]
            for a in range(k):
                Ap[a] += d * y[a]
        pAp = np.float32(0.0)
        for a in range(k):
            pAp += p[a] * Ap[a]
        if pAp <= 0:
            return
        step = rs_old / pAp
        rs_new = np.float32(0.0)
        for a in range(k):
            x[a] += step * p[a]
            r[a] -= step * Ap[a]
            rs_new += r[a] * r[a]
        if rs_new < _EPS:
            return
        beta = rs_new / rs_old
        for a in range(k):
            p[a] = r[a] + beta * p[a]
        rs_old = rs_new


def cg_solve(indptr, indices, values, X, Y, YtY, alpha, reg_rows, cg_steps, bounds, gather_cap,
             n_threads=None):
    """Update every row of ``X`` in place by ``cg_steps`` CG steps (warm start).

    Parameters
    ----------
    indptr, indices, values : CSR arrays of shape (n_rows + 1,), (nnz,), (nnz,)
        Interactions of the rows being solved (values float32, the raw strengths ``r``).
    X : float32 array of shape (n_rows, k)
        Current row factors, updated in place.
    Y : float32 array of shape (n_cols, k)
        Fixed factors of the other side.
    YtY : float32 array of shape (k, k)
    alpha : float32
        Confidence slope: ``c = 1 + alpha * r``.
    reg_rows : float32 array of shape (n_rows,)
        L2 regularization of each row.
    cg_steps : int
    bounds : int64 array
        Block boundaries from :func:`balanced_blocks`.
    gather_cap : int
        Rows with at most this many interactions are gathered into a buffer.
    n_threads : int or None, default=None
        Threads running the blocks; None: Numba's thread count (see
        :func:`mfrec._threads.block_threads`).
    """
    run_blocks(cg_solve_block, (indptr, indices, values, X, Y, YtY, np.float32(alpha), reg_rows,
                                cg_steps, bounds, gather_cap),
               bounds.shape[0] - 1, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def cg_solve_block(indptr, indices, values, X, Y, YtY, alpha, reg_rows, cg_steps, bounds,
                   gather_cap, blk):
    """Block ``blk`` of :func:`cg_solve` (rows ``bounds[blk]`` to ``bounds[blk + 1]``; ``alpha``
    float32)."""
    k = X.shape[1]
    lo, hi = bounds[blk], bounds[blk + 1]
    longest = 0
    for u in range(lo, hi):
        n = indptr[u + 1] - indptr[u]
        if n <= gather_cap and n > longest:
            longest = n
    buf = np.empty((longest, k), np.float32)
    iota = np.arange(longest).astype(indices.dtype)  # same index type: one compiled _cg_row
    r = np.empty(k, np.float32)
    p = np.empty(k, np.float32)
    Ap = np.empty(k, np.float32)
    for u in range(lo, hi):
        s, e = indptr[u], indptr[u + 1]
        n = e - s
        if n <= gather_cap:
            for t in range(n):
                src = Y[indices[s + t]]
                dst = buf[t]
                for a in range(k):
                    dst[a] = src[a]
            _cg_row(X[u], buf, iota[:n], values[s:e], alpha, YtY, reg_rows[u], cg_steps,
                    r, p, Ap)
        else:
            _cg_row(X[u], Y, indices[s:e], values[s:e], alpha, YtY, reg_rows[u], cg_steps,
                    r, p, Ap)


@njit(cache=True, error_model="numpy")
def _cholesky_solve_inplace(A, b):
    """Solve A x = b for symmetric positive definite A (float64); A and b are overwritten."""
    k = A.shape[0]
    for j in range(k):
        s = A[j, j]
        for t in range(j):
            s -= A[j, t] * A[j, t]
        if s <= 0.0:
            s = 1e-12
        d = np.sqrt(s)
        A[j, j] = d
        for i in range(j + 1, k):
            s = A[i, j]
            for t in range(j):
                s -= A[i, t] * A[j, t]
            A[i, j] = s / d
    for i in range(k):  # forward: L z = b
        s = b[i]
        for t in range(i):
            s -= A[i, t] * b[t]
        b[i] = s / A[i, i]
    for i in range(k - 1, -1, -1):  # backward: L^T x = z
        s = b[i]
        for t in range(i + 1, k):
            s -= A[t, i] * b[t]
        b[i] = s / A[i, i]


def cholesky_solve(indptr, indices, values, X, Y, YtY, alpha, reg_rows, bounds, n_threads=None):
    """Set every row of ``X`` to the exact solution of its weighted least-squares system.

    Same arguments as :func:`cg_solve` (without the CG settings).
    """
    run_blocks(cholesky_solve_block, (indptr, indices, values, X, Y, YtY, alpha, reg_rows, bounds),
               bounds.shape[0] - 1, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def cholesky_solve_block(indptr, indices, values, X, Y, YtY, alpha, reg_rows, bounds, blk):
    """Block ``blk`` of :func:`cholesky_solve`."""
    k = X.shape[1]
    A = np.empty((k, k), np.float64)
    b = np.empty(k, np.float64)
    for u in range(bounds[blk], bounds[blk + 1]):
        for a in range(k):
            for c in range(k):
                A[a, c] = YtY[a, c]
            A[a, a] += reg_rows[u]
            b[a] = 0.0
        for t in range(indptr[u], indptr[u + 1]):
            y = Y[indices[t]]
            w = np.float64(alpha) * values[t]
            pc = (1.0 + w) if values[t] > 0 else 0.0
            for a in range(k):
                wy = w * y[a]
                for c in range(k):
                    A[a, c] += wy * y[c]
                b[a] += pc * y[a]
        _cholesky_solve_inplace(A, b)
        for a in range(k):
            X[u, a] = b[a]


def loss(indptr, indices, values, X, Y, YtY, alpha, reg_rows, n_threads=None):
    """Weighted squared error over *all* (row, column) pairs plus the rows' L2 term.

    ``sum_u [x_u^T YtY x_u + sum_{i in I_u} (c_ui (p_ui - s)^2 - s^2) + reg_u |x_u|^2]`` with
    ``s = x_u . y_i``: the observed pairs correct the all-zero, confidence-1 baseline.
    Returns a float (summed in an order that does not depend on the thread count).
    """
    n_threads = block_threads(n_threads)
    per_row = np.zeros(X.shape[0])
    n_blocks = max(1, min(8 * n_threads, X.shape[0]))
    run_blocks(loss_block, (indptr, indices, values, X, Y, YtY, alpha, reg_rows, per_row,
                            n_blocks), n_blocks, n_threads)
    return float(per_row.sum())


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def loss_block(indptr, indices, values, X, Y, YtY, alpha, reg_rows, per_row, n_blocks, blk):
    """Rows ``blk::n_blocks`` of :func:`loss`: each row's term into ``per_row`` (float64)."""
    n_rows, k = X.shape
    for u in range(blk, n_rows, n_blocks):
        x = X[u]
        q = 0.0
        for a in range(k):
            acc = 0.0
            for b in range(k):
                acc += YtY[a, b] * x[b]
            q += acc * x[a]
            q += reg_rows[u] * x[a] * x[a]
        for t in range(indptr[u], indptr[u + 1]):
            y = Y[indices[t]]
            s = 0.0
            for a in range(k):
                s += x[a] * y[a]
            c = 1.0 + alpha * values[t]
            pref = 1.0 if values[t] > 0 else 0.0
            q += c * (pref - s) ** 2 - s * s
        per_row[u] = q


# ---------------------------------------------------------------------- NumPy references
def solve_reference(csr, Y, alpha, reg_rows):
    """Exact per-row solutions with dense NumPy algebra (float64)."""
    Y = Y.astype(np.float64)
    k = Y.shape[1]
    YtY = Y.T @ Y
    X = np.zeros((csr.shape[0], k))
    for u in range(csr.shape[0]):
        s, e = csr.indptr[u], csr.indptr[u + 1]
        it, r = csr.indices[s:e], csr.data[s:e].astype(np.float64)
        c = 1.0 + alpha * r
        pref = (r > 0).astype(np.float64)
        A = YtY + (Y[it].T * (c - 1.0)) @ Y[it] + reg_rows[u] * np.eye(k)
        X[u] = np.linalg.solve(A, Y[it].T @ (c * pref))
    return X


def loss_reference(dense_r, X, Y, alpha, reg_rows):
    """The same loss as :func:`loss`, from the dense interaction matrix."""
    S = X.astype(np.float64) @ Y.astype(np.float64).T
    C = 1.0 + alpha * dense_r
    P = (dense_r > 0).astype(np.float64)
    return float(np.sum(C * (P - S) ** 2) + np.sum(reg_rows * np.sum(X.astype(np.float64) ** 2, 1)))
