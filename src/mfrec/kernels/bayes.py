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

The implicit-feedback prior (each row's prior mean offset by ``|N(u)|^-1/2 sum_{j in N(u)} w_j``)
adds two kernels: :func:`implicit_offsets` forms the offsets, and :func:`sample_implicit` is a
Gibbs pass over the weights ``w_j`` given the rows.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .als import backward_inplace, cholesky_inplace, forward_inplace

__all__ = ["sample_rows", "row_squared_errors", "implicit_offsets", "sample_implicit",
           "sample_rows_reference", "row_squared_errors_reference", "implicit_offsets_reference",
           "sample_implicit_reference"]


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
    prior_lin : float32 array of shape (n_rows, d) or (1, d)
        ``Lambda @ m_u`` of each row's Gaussian prior (one row: the same prior mean for all).
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
    per_row = prior_lin.shape[0] > 1
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
            r = u if per_row else 0
            for a in range(d):
                h[a] = alpha_u * h[a] + prior_lin[r, a]
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
        lin = prior_lin[u if prior_lin.shape[0] > 1 else 0]
        mean = np.linalg.solve(prec, lin + F.T @ (w * t))
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


@njit(cache=True, parallel=True, fastmath=True)
def implicit_offsets(indptr, indices, xs, W, out):
    """``out[u] = xs[u] * sum_{j in N(u)} W[j]`` for every row ``u``, in place.

    Parameters
    ----------
    indptr, indices : CSR arrays of the side whose rows are offset (row ``u`` lists ``N(u)``)
    xs : float32 array of shape (n_rows,)
        Weight of a row's rated columns, ``|N(u)|^-1/2`` (0 for empty rows).
    W : float32 array of shape (n_cols, d)
        The implicit-feedback weights of the columns.
    out : float32 array of shape (n_rows, d)
    """
    d = W.shape[1]
    for u in prange(out.shape[0]):
        acc = np.zeros(d)
        for p in range(indptr[u], indptr[u + 1]):
            j = indices[p]
            for a in range(d):
                acc[a] += W[j, a]
        for a in range(d):
            out[u, a] = xs[u] * acc[a]


def implicit_offsets_reference(indptr, indices, xs, W, out):
    """NumPy reference of :func:`implicit_offsets`."""
    u = np.repeat(np.arange(out.shape[0]), np.diff(indptr))
    acc = np.zeros(out.shape)
    np.add.at(acc, u, W[indices].astype(np.float64))
    out[:] = xs[:, None] * acc


@njit(cache=True, fastmath=True)
def sample_implicit(indptr, indices, xs, W, R, lam, chol_inv_t, z):
    """One Gibbs pass over the rows of ``W`` (the implicit-feedback weights), in place.

    The rows ``x_u`` of one side have the prior ``N(m + xs[u] sum_{j in N(u)} W[j],
    Lambda^-1)``; ``R`` holds the residuals ``x_u - m - xs[u] sum_{j in N(u)} W[j]`` and is kept
    up to date as ``W`` changes. With the prior ``W[j] ~ N(0, (lam Lambda)^-1)``, the conditional
    of ``W[j]`` given everything else has precision ``c_j Lambda`` and mean
    ``sum_{u rated j} xs[u] r_u / c_j``, where ``c_j = lam + sum_{u rated j} xs[u]^2`` and ``r_u``
    is the residual without ``W[j]``'s own share. The loop over ``j`` is sequential: rows that
    share a rater are not conditionally independent.

    Parameters
    ----------
    indptr, indices : CSR arrays of the *other* side (row ``j`` lists the rows ``u`` that rated it)
    xs : float32 array of shape (n_rows,)
    W : float32 array of shape (n_cols, d)
    R : float32 array of shape (n_rows, d)
    lam : float
    chol_inv_t : float64 array of shape (d, d)
        ``L^-T`` with ``Lambda = L L'``: ``L^-T z`` is a ``N(0, Lambda^-1)`` draw.
    z : float32 array of shape (n_cols, d)
        Standard normal draws, one row per row of ``W``.
    """
    d = W.shape[1]
    s = np.empty(d, dtype=np.float32)
    delta = np.empty(d, dtype=np.float32)
    for j in range(W.shape[0]):
        start, end = indptr[j], indptr[j + 1]
        cx = np.float32(0.0)  # float32 sums: cheaper, and this pass is serial
        s[:] = 0.0
        for p in range(start, end):
            u = indices[p]
            x = xs[u]
            cx += x * x
            for a in range(d):
                s[a] += x * R[u, a]
        # R[u] holds -x W[j]: adding that share back to every r_u adds (sum of x^2) W[j] to s
        for a in range(d):
            s[a] += cx * W[j, a]
        c = float(cx) + lam
        sd = 1.0 / np.sqrt(c)
        for a in range(d):
            e = 0.0
            for b in range(a, d):  # L^-T is upper triangular
                e += chol_inv_t[a, b] * z[j, b]
            new = s[a] / c + sd * e
            delta[a] = new - W[j, a]
            W[j, a] = new
        for p in range(start, end):
            u = indices[p]
            x = xs[u]
            for a in range(d):
                R[u, a] -= x * delta[a]


def sample_implicit_reference(indptr, indices, xs, W, R, lam, chol_inv_t, z):
    """NumPy (float64) reference of :func:`sample_implicit`; updates ``W`` and ``R`` in place."""
    for j in range(W.shape[0]):
        u = indices[indptr[j]:indptr[j + 1]]
        x = xs[u].astype(np.float64)
        c = lam + float(x @ x)
        old = W[j].astype(np.float64)
        new = (x @ (R[u] + np.outer(x, old))) / c + chol_inv_t @ z[j] / np.sqrt(c)
        R[u] -= np.outer(x, new - old)
        W[j] = new
