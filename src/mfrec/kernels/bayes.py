"""Gibbs-sampling kernel of Bayesian matrix factorisation (BPMF with biases).

With one side fixed, the rows of the other side are conditionally independent Gaussians. Row ``u``
with prior ``N(m, Lambda^-1)`` and ratings ``r_uj`` observed with noise precision ``alpha`` has
posterior precision and linear term::

    Lambda_u = Lambda + alpha * sum_j y_j y_j'
    h_u      = Lambda m + alpha * sum_j (r_uj - mu - c_j) y_j

where, with biases, the row's unknowns are ``[x_u, b_u]``, its features ``y_j = [x_j, 1]`` and
``c_j`` the fixed side's bias (both sides are stored *augmented*: the bias is the last column). The
draw is ``Lambda_u^-1 h_u + L^-T z`` with ``Lambda_u = L L'`` and ``z`` standard normal. The
normal draws come in as an array made by NumPy's seeded generator, so a fit does not depend on
the thread count.

Rows are dealt to blocks by decreasing rating count as in :mod:`mfrec.kernels.als`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .als import backward_inplace, cholesky_inplace, forward_inplace

__all__ = ["sample_rows", "row_squared_errors", "sample_rows_reference",
           "row_squared_errors_reference"]


@njit(cache=True, parallel=True, fastmath=True)
def sample_rows(indptr, indices, data, X, Y, xw, yw, mu, alpha, prior_lin, prior_prec, fit_bias,
                noise, order, n_blocks):
    """Draw every row of ``X`` from its conditional posterior, in place.

    Parameters
    ----------
    indptr, indices, data : CSR arrays of the side being drawn (int64, int32, float32)
    X : float32 array of shape (n_rows, d)
        The rows drawn; with ``fit_bias`` column ``d - 1`` is the row's bias.
    Y : float32 array of shape (n_cols, d)
        The fixed side, laid out the same way.
    xw, yw : float32 arrays of shape (n_rows,), (n_cols,)
        Noise scales of the rows and columns: rating ``(u, j)`` has precision
        ``alpha * xw[u] * yw[j]`` (all ones for plain Gaussian noise).
    mu : float
        Global mean subtracted from the ratings.
    alpha : float
        Noise precision.
    prior_lin : float32 array of shape (d,)
        ``Lambda @ m`` of the rows' Gaussian prior.
    prior_prec : float32 array of shape (d, d)
        ``Lambda``, symmetric positive definite.
    fit_bias : bool
    noise : float32 array of shape (n_rows, d)
        Standard normal draws, one row per row of ``X``.
    order : int64 array of shape (n_rows,)
        Rows by decreasing count.
    n_blocks : int
    """
    n_rows, d = X.shape
    k = d - 1 if fit_bias else d
    n_blocks = max(1, min(n_blocks, n_rows))
    for blk in prange(n_blocks):
        A = np.empty((d, d), dtype=np.float32)
        G = np.empty((4, d), dtype=np.float32)
        h = np.empty(d, dtype=np.float32)
        z = np.empty(d, dtype=np.float32)
        for t in range(blk, n_rows, n_blocks):
            u = order[t]
            start, end = indptr[u], indptr[u + 1]
            A[:, :] = 0.0
            h[:] = 0.0
            # rank-4 updates of the lower triangle of sum_j y_j y_j'
            for p0 in range(start, end, 4):
                for q in range(4):
                    p = p0 + q
                    if p < end:
                        j = indices[p]
                        # scaling features and target by sqrt(w) weights the rating by w
                        sw = np.sqrt(yw[j])
                        for a in range(k):
                            G[q, a] = sw * Y[j, a]
                        if fit_bias:
                            G[q, k] = sw
                            tq = sw * (data[p] - mu - Y[j, k])
                        else:
                            tq = sw * (data[p] - mu)
                    else:
                        G[q, :] = 0.0
                        tq = np.float32(0.0)
                    for a in range(d):
                        h[a] += tq * G[q, a]
                for a in range(d):
                    g0, g1, g2, g3 = G[0, a], G[1, a], G[2, a], G[3, a]
                    for b in range(a + 1):
                        A[a, b] += g0 * G[0, b] + g1 * G[1, b] + g2 * G[2, b] + g3 * G[3, b]
            alpha_u = alpha * xw[u]
            for a in range(d):
                h[a] = alpha_u * h[a] + prior_lin[a]
                z[a] = noise[u, a]
                for b in range(a + 1):
                    A[a, b] = alpha_u * A[a, b] + prior_prec[a, b]
            cholesky_inplace(A, d)
            forward_inplace(A, h, d)
            backward_inplace(A, h, d)
            backward_inplace(A, z, d)
            for a in range(d):
                X[u, a] = h[a] + z[a]


def sample_rows_reference(indptr, indices, data, X, Y, xw, yw, mu, alpha, prior_lin, prior_prec,
                          fit_bias, noise):
    """NumPy (float64) reference of :func:`sample_rows`; updates ``X`` in place."""
    d = X.shape[1]
    for u in range(X.shape[0]):
        sl = slice(indptr[u], indptr[u + 1])
        j = indices[sl]
        F = Y[j].astype(np.float64)
        t = data[sl].astype(np.float64) - mu
        if fit_bias:
            t = t - F[:, -1]
            F[:, -1] = 1.0
        w = alpha * xw[u] * yw[j].astype(np.float64)
        prec = prior_prec + (F * w[:, None]).T @ F
        L = np.linalg.cholesky(prec)
        mean = np.linalg.solve(prec, prior_lin + F.T @ (w * t))
        X[u] = mean + np.linalg.solve(L.T, noise[u].astype(np.float64))


@njit(cache=True, parallel=True, fastmath=True)
def row_squared_errors(indptr, indices, data, X, Y, yw, mu, fit_bias):
    """Per row, the sum of squared training errors of augmented factors (bias in the last
    column), each weighted by its column's ``yw``.

    Returns float64 of shape (n_rows,); the caller sums it, in an order that does not depend on
    the thread count.
    """
    n_rows, d = X.shape
    k = d - 1 if fit_bias else d
    out = np.zeros(n_rows)
    for u in prange(n_rows):
        acc = 0.0
        for p in range(indptr[u], indptr[u + 1]):
            j = indices[p]
            e = data[p] - mu
            if fit_bias:
                e -= X[u, k] + Y[j, k]
            for a in range(k):
                e -= X[u, a] * Y[j, a]
            acc += yw[j] * e * e
        out[u] = acc
    return out


def row_squared_errors_reference(indptr, indices, data, X, Y, yw, mu, fit_bias):
    """NumPy reference of :func:`row_squared_errors`."""
    u = np.repeat(np.arange(X.shape[0]), np.diff(indptr))
    Xu, Yj = X[u].astype(np.float64), Y[indices].astype(np.float64)
    if fit_bias:
        pred = mu + Xu[:, -1] + Yj[:, -1] + np.einsum("ij,ij->i", Xu[:, :-1], Yj[:, :-1])
    else:
        pred = mu + np.einsum("ij,ij->i", Xu, Yj)
    e = data - pred
    return np.bincount(u, yw[indices] * e * e, minlength=X.shape[0])
