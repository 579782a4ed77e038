"""Explicit ALS-WR kernels: one half-sweep solves every row of one side with the other side fixed.

Row ``u`` of the side being solved minimises, over its factor ``x`` (and bias ``b`` when biases are
fitted), with ``y_j`` the fixed factors of the entries ``j`` it rated::

    sum_j (r_uj - mu - c_j - b - x . y_j)^2 + reg * n_u * (|x|^2 + b^2)

where ``c_j`` is the fixed side's bias and ``n_u`` the row's number of ratings (the weighted-lambda
regularisation of ALS-WR). With biases the unknowns are ``[x, b]`` and the fixed features
``[y_j, 1]``, so factor and bias are solved jointly. A row without ratings gets zeros. A row with
fewer ratings than unknowns is solved through the equivalent n_u x n_u dual system, which is exact
and far cheaper for the many light rows of real data.

Rows are visited in *blocks*: rows sorted by rating count are dealt round-robin to ``n_blocks``
blocks, so every block holds about the same amount of work. A kernel ``*_block`` does one block
(serial, without the GIL) and its wrapper runs the blocks on Python threads
(:func:`mfrec._threads.run_blocks`): a serial kernel compiles two to three times faster than the
same loop under ``parallel=True``. Each row is independent, so results do not depend on the
thread count.

Every kernel has a plain NumPy reference (``*_reference``) used by the tests.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH
from .._threads import block_threads, run_blocks

__all__ = ["solve_rows_cholesky", "solve_rows_cg", "row_squared_errors", "balanced_order",
           "solve_rows_cholesky_block", "solve_rows_cg_block", "row_squared_errors_block",
           "solve_rows_reference", "solve_rows_cg_reference", "squared_error_reference"]


def balanced_order(counts):
    """Rows sorted by decreasing count (int64), the input of the block dealing in the kernels."""
    return np.argsort(-np.asarray(counts), kind="stable").astype(np.int64)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def cholesky_inplace(A, n):
    """Overwrite the lower half of symmetric positive definite ``A[:n, :n]`` by its factor L."""
    for j in range(n):
        s = A[j, j]
        for p in range(j):
            s -= A[j, p] * A[j, p]
        # a non-positive pivot only arises from rounding on a singular system; keep it solvable
        if s <= 1e-12:
            s = 1e-12
        d = np.sqrt(s)
        A[j, j] = d
        inv = 1.0 / d
        for i in range(j + 1, n):
            s = A[i, j]
            for p in range(j):
                s -= A[i, p] * A[j, p]
            A[i, j] = s * inv


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def forward_inplace(L, b, n):
    """``b <- L^-1 b`` for the lower factor in ``L[:n, :n]``."""
    for i in range(n):
        s = b[i]
        for p in range(i):
            s -= L[i, p] * b[p]
        b[i] = s / L[i, i]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def backward_inplace(L, b, n):
    """``b <- L^-T b`` for the lower factor in ``L[:n, :n]``."""
    for i in range(n - 1, -1, -1):
        s = b[i]
        for p in range(i + 1, n):
            s -= L[p, i] * b[p]
        b[i] = s / L[i, i]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _cholesky_solve(A, rhs, n):
    """Solve ``A x = rhs`` for symmetric positive definite ``A[:n, :n]`` (lower half read).

    ``A`` is overwritten by its Cholesky factor and ``rhs`` by the solution.
    """
    cholesky_inplace(A, n)
    forward_inplace(A, rhs, n)
    backward_inplace(A, rhs, n)


def solve_rows_cholesky(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias, order, n_blocks,
                        n_threads=None):
    """Exact ALS-WR update of every row of ``X`` (and ``xb``) by a Cholesky solve.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the side being solved, shape (n_rows + 1,), (nnz,), (nnz,)
    X : float32 array of shape (n_rows, k), updated in place
    xb : float32 array of shape (n_rows,), updated in place when ``fit_bias``
    Y : float32 array of shape (n_cols, k), fixed
    yb : float32 array of shape (n_cols,), fixed
    mu : float
        Global mean subtracted from every rating.
    reg : float
        lambda; row ``u`` is regularised by ``reg * n_u``.
    fit_bias : bool
        Solve ``[x, b]`` jointly; otherwise ``xb`` is held fixed (and subtracted).
    order : int64 array of shape (n_rows,)
        Rows by decreasing count (:func:`balanced_order`).
    n_blocks : int
        Number of round-robin blocks the rows are dealt to (at most ``n_rows`` are used).
    n_threads : int or None, default=None
        Threads running the blocks; None: Numba's thread count (see
        :func:`mfrec._threads.block_threads`).
    """
    n_blocks = max(1, min(int(n_blocks), X.shape[0]))
    run_blocks(solve_rows_cholesky_block, (indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias,
                                           order, n_blocks), n_blocks, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def solve_rows_cholesky_block(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias, order,
                              n_blocks, blk):
    """Block ``blk`` of :func:`solve_rows_cholesky`: rows ``order[blk::n_blocks]``."""
    n_rows, k = X.shape
    kb = k + 1 if fit_bias else k
    A = np.empty((kb, kb), dtype=np.float32)
    G = np.empty((max(kb, 4), kb), dtype=np.float32)
    rhs = np.empty(kb, dtype=np.float32)
    y = np.empty(kb, dtype=np.float32)
    for t in range(blk, n_rows, n_blocks):
        u = order[t]
        start, end = indptr[u], indptr[u + 1]
        n = end - start
        if n == 0:
            X[u, :] = 0.0
            if fit_bias:
                xb[u] = 0.0
            continue
        lam = np.float32(reg * n)
        if n < kb:
            # fewer ratings than unknowns: solve the n x n dual system instead,
            # (G'G + lam I)^-1 G't = G' (GG' + lam I)^-1 t, exact and much cheaper
            for q in range(n):
                p = start + q
                j = indices[p]
                for a in range(k):
                    G[q, a] = Y[j, a]
                if fit_bias:
                    G[q, k] = 1.0
                    rhs[q] = data[p] - mu - yb[j]
                else:
                    rhs[q] = data[p] - mu - yb[j] - xb[u]
            for q in range(n):
                for q2 in range(q + 1):
                    s = np.float32(0.0)
                    for a in range(kb):
                        s += G[q, a] * G[q2, a]
                    A[q, q2] = s
                A[q, q] += lam
            _cholesky_solve(A, rhs, n)
            for a in range(kb):
                y[a] = 0.0
            for q in range(n):
                w = rhs[q]
                for a in range(kb):
                    y[a] += w * G[q, a]
            for a in range(k):
                X[u, a] = y[a]
            if fit_bias:
                xb[u] = y[k]
            continue
        A[:, :] = 0.0
        rhs[:] = 0.0
        # rank-4 updates of the lower triangle: four products per load/store of A
        for p0 in range(start, end, 4):
            for q in range(4):
                p = p0 + q
                if p < end:
                    j = indices[p]
                    for a in range(k):
                        G[q, a] = Y[j, a]
                    if fit_bias:
                        G[q, k] = 1.0
                        tq = data[p] - mu - yb[j]
                    else:
                        tq = data[p] - mu - yb[j] - xb[u]
                else:
                    G[q, :] = 0.0
                    tq = np.float32(0.0)
                for a in range(kb):
                    rhs[a] += tq * G[q, a]
            for a in range(kb):
                g0, g1, g2, g3 = G[0, a], G[1, a], G[2, a], G[3, a]
                for b in range(a + 1):
                    A[a, b] += g0 * G[0, b] + g1 * G[1, b] + g2 * G[2, b] + g3 * G[3, b]
        for a in range(kb):
            A[a, a] += lam
        _cholesky_solve(A, rhs, kb)
        for a in range(k):
            X[u, a] = rhs[a]
        if fit_bias:
            xb[u] = rhs[k]


def solve_rows_cg(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias, cg_steps, order,
                  n_blocks, n_threads=None):
    """Approximate ALS-WR update by ``cg_steps`` conjugate-gradient steps from the current rows.

    Same arguments as :func:`solve_rows_cholesky` plus ``cg_steps`` (int >= 1). The normal matrix
    is never formed: each step costs O(n_u * k) instead of O(n_u * k^2 + k^3), and warm starting
    from the previous sweep makes a few steps enough.
    """
    n_blocks = max(1, min(int(n_blocks), X.shape[0]))
    run_blocks(solve_rows_cg_block, (indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias,
                                     cg_steps, order, n_blocks), n_blocks, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def solve_rows_cg_block(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias, cg_steps, order,
                        n_blocks, blk):
    """Block ``blk`` of :func:`solve_rows_cg`: rows ``order[blk::n_blocks]``."""
    n_rows, k = X.shape
    kb = k + 1 if fit_bias else k
    x = np.empty(kb, dtype=np.float32)
    r = np.empty(kb, dtype=np.float32)
    d = np.empty(kb, dtype=np.float32)
    Ad = np.empty(kb, dtype=np.float32)
    for t in range(blk, n_rows, n_blocks):
        u = order[t]
        start, end = indptr[u], indptr[u + 1]
        n = end - start
        if n == 0:
            X[u, :] = 0.0
            if fit_bias:
                xb[u] = 0.0
            continue
        lam = np.float32(reg * n)
        for a in range(k):
            x[a] = X[u, a]
        if fit_bias:
            x[k] = xb[u]
        # residual r = b - A x = sum_j y_j (t_j - y_j . x) - lam x
        for a in range(kb):
            r[a] = -lam * x[a]
        for p in range(start, end):
            j = indices[p]
            if fit_bias:
                e = data[p] - mu - yb[j] - x[k]
            else:
                e = data[p] - mu - yb[j] - xb[u]
            for a in range(k):
                e -= Y[j, a] * x[a]
            for a in range(k):
                r[a] += e * Y[j, a]
            if fit_bias:
                r[k] += e
        rs_old = np.float32(0.0)
        for a in range(kb):
            d[a] = r[a]
            rs_old += r[a] * r[a]
        for _ in range(cg_steps):
            if rs_old < 1e-20:
                break
            for a in range(kb):
                Ad[a] = lam * d[a]
            for p in range(start, end):
                j = indices[p]
                s = d[k] if fit_bias else np.float32(0.0)
                for a in range(k):
                    s += Y[j, a] * d[a]
                for a in range(k):
                    Ad[a] += s * Y[j, a]
                if fit_bias:
                    Ad[k] += s
            dAd = np.float32(0.0)
            for a in range(kb):
                dAd += d[a] * Ad[a]
            if dAd <= 0.0:
                break
            step = rs_old / dAd
            rs_new = np.float32(0.0)
            for a in range(kb):
                x[a] += step * d[a]
                r[a] -= step * Ad[a]
                rs_new += r[a] * r[a]
            beta = rs_new / rs_old
            for a in range(kb):
                d[a] = r[a] + beta * d[a]
            rs_old = rs_new
        for a in range(k):
            X[u, a] = x[a]
        if fit_bias:
            xb[u] = x[k]


def row_squared_errors(indptr, indices, data, P, bu, Q, bi, mu, n_threads=None):
    """Per row, the sum over its entries of ``(r - mu - bu[u] - bi[i] - P[u] . Q[i])^2``.

    ``n_threads`` as in :func:`solve_rows_cholesky`. Returns float64 of shape (n_rows,); the
    caller sums it, in an order that does not depend on the thread count.
    """
    n_threads = block_threads(n_threads)
    out = np.zeros(P.shape[0])
    n_blocks = max(1, min(8 * n_threads, P.shape[0]))
    run_blocks(row_squared_errors_block, (indptr, indices, data, P, bu, Q, bi, mu, out, n_blocks),
               n_blocks, n_threads)
    return out


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def row_squared_errors_block(indptr, indices, data, P, bu, Q, bi, mu, out, n_blocks, blk):
    """Block ``blk`` of :func:`row_squared_errors`: rows ``blk::n_blocks`` into ``out`` (float64
    of shape (n_rows,))."""
    n_rows, k = P.shape
    for u in range(blk, n_rows, n_blocks):
        acc = 0.0
        for p in range(indptr[u], indptr[u + 1]):
            i = indices[p]
            e = data[p] - mu - bu[u] - bi[i]
            for a in range(k):
                e -= P[u, a] * Q[i, a]
            acc += e * e
        out[u] = acc


# ---------------------------------------------------------------------- NumPy references
def _row_system(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias, u):
    sl = slice(indptr[u], indptr[u + 1])
    j = indices[sl]
    G = Y[j].astype(np.float64)
    t = data[sl].astype(np.float64) - mu - yb[j]
    if fit_bias:
        G = np.hstack([G, np.ones((G.shape[0], 1))])
    else:
        t = t - xb[u]
    A = G.T @ G + reg * len(j) * np.eye(G.shape[1])
    return A, G.T @ t


def _row_systems(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias):
    """``(u, A, b)``, the normal equations of each row in turn; rows without ratings are set to
    zero (``X``, and ``xb`` when ``fit_bias``) and skipped."""
    for u in range(X.shape[0]):
        if indptr[u + 1] == indptr[u]:
            X[u] = 0.0
            if fit_bias:
                xb[u] = 0.0
            continue
        yield (u, *_row_system(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias, u))


def solve_rows_reference(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias):
    """NumPy (float64) reference of :func:`solve_rows_cholesky`; updates ``X``, ``xb`` in place."""
    k = X.shape[1]
    for u, A, b in _row_systems(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias):
        sol = np.linalg.solve(A, b)
        X[u] = sol[:k]
        if fit_bias:
            xb[u] = sol[k]


def solve_rows_cg_reference(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias, cg_steps):
    """NumPy (float64) reference of :func:`solve_rows_cg`; updates ``X``, ``xb`` in place."""
    k = X.shape[1]
    for u, A, b in _row_systems(indptr, indices, data, X, xb, Y, yb, mu, reg, fit_bias):
        x = np.r_[X[u], xb[u]] if fit_bias else X[u].astype(np.float64)
        r = b - A @ x
        d = r.copy()
        rs = r @ r
        for _ in range(cg_steps):
            if rs < 1e-20:
                break
            Ad = A @ d
            step = rs / (d @ Ad)
            x = x + step * d
            r = r - step * Ad
            rs_new = r @ r
            d = r + (rs_new / rs) * d
            rs = rs_new
        X[u] = x[:k]
        if fit_bias:
            xb[u] = x[k]


def squared_error_reference(indptr, indices, data, P, bu, Q, bi, mu):
    """NumPy reference of ``row_squared_errors(...).sum()``."""
    u = np.repeat(np.arange(P.shape[0]), np.diff(indptr))
    e = data - mu - bu[u] - bi[indices] - np.einsum("ij,ij->i", P[u].astype(np.float64), Q[indices])
    return float(e @ e)
