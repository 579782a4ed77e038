"""Gibbs-sampling kernel of Bayesian matrix factorisation (BPMF with biases).

With one side fixed, the rows of the other side are conditionally independent Gaussians. Row ``u``
with prior ``N(m, Lambda^-1)`` and ratings ``r_uj`` observed with noise precision ``alpha`` has
posterior precision and linear term::

    Lambda_u = Lambda + alpha * sum_j y_j y_j'
    h_u      = Lambda m + alpha * sum_j (r_uj - mu - c_j) y_j

where, with biases, the row's unknowns are ``[x_u, b_u]``, its features ``y_j = [x_j, 1]`` and
``c_j`` the fixed side's bias (both sides are stored *augmented*: the bias is the last column). The
draw is ``Lambda_u^-1 h_u + L^-T z`` with ``Lambda_u = L L'`` and ``z`` standard normal. The
normal draws are made inside the kernels from a counter-based generator (:func:`normal_row`):
row ``u``'s draws are a fixed function of a key (drawn by the caller from NumPy's seeded
generator) and ``u``, so a fit does not depend on the thread count, and no array of draws is
stored.

Rows are dealt to blocks by decreasing rating count as in :mod:`mfrec.kernels.als`; each kernel
``*_block`` does one block without the GIL, and its wrapper runs the blocks on Python threads.

The implicit-feedback prior (each row's prior mean offset by ``|N(u)|^-1/2 sum_{j in N(u)} w_j``)
adds two kernels: :func:`implicit_offsets` forms the offsets, and :func:`sample_implicit` is a
Gibbs pass over the weights ``w_j`` given the rows.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH
from .._threads import block_threads, run_blocks

__all__ = ["sample_rows", "row_squared_errors", "implicit_offsets", "sample_implicit",
           "sample_rows_block", "row_squared_errors_block", "implicit_offsets_block",
           "normal_row", "sample_rows_reference", "row_squared_errors_reference",
           "implicit_offsets_reference", "sample_implicit_reference", "normal_rows_reference"]


def sample_rows(indptr, indices, data, X, Y, xw, yw, mu, alpha, prior_mean, prior_off, prior_prec,
                fit_bias, key, order, n_blocks, noise_scale=1.0, n_threads=None):
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
    prior_mean : float32 array of shape (d,)
        ``m``, the prior mean shared by all rows.
    prior_off : float32 array of shape (n_rows, d) or (1, d)
        Each row's offset of the prior mean (row ``u``'s prior mean is ``m + prior_off[u]``);
        one row: the same offset for all (zeros for plain priors).
    prior_prec : float32 array of shape (d, d)
        ``Lambda``, symmetric positive definite.
    fit_bias : bool
    key : uint64
        Stream of the normal draws: row ``u`` uses :func:`normal_row` ``(key, u)``, so the draws
        do not depend on which thread draws the row.
    order : int64 array of shape (n_rows,)
        Rows by decreasing count.
    n_blocks : int
        Number of round-robin blocks the rows are dealt to.
    noise_scale : float, default=1.0
        The row drawn is ``mean + noise_scale * L^-T z``: 1 samples the posterior, 0 sets every
        row to its posterior mean (no draws are made), a ridge solve. With ``alpha=1``,
        ``xw = 1 / n_u`` (1 for empty rows), ``yw = 1``, a zero prior mean and offset and
        ``prior_prec = reg * I``, that mean is the ALS-WR solution
        ``(G'G + reg n_u I)^-1 G't`` (biases, when fitted, regularised alike; empty rows 0).
    n_threads : int or None, default=None
        Threads running the blocks; None: Numba's thread count (see
        :func:`mfrec._threads.block_threads`).
    """
    n_blocks = max(1, min(int(n_blocks), X.shape[0]))
    run_blocks(sample_rows_block, (indptr, indices, data, X, Y, xw, yw, mu, alpha, prior_mean,
                                   prior_off, prior_prec, fit_bias, key, np.float32(noise_scale),
                                   order, n_blocks), n_blocks, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def sample_rows_block(indptr, indices, data, X, Y, xw, yw, mu, alpha, prior_mean, prior_off,
                      prior_prec, fit_bias, key, noise_scale, order, n_blocks, blk):
    """Block ``blk`` of :func:`sample_rows`: rows ``order[blk::n_blocks]`` (``noise_scale``
    float32)."""
    n_rows, d = X.shape
    k = d - 1 if fit_bias else d
    per_row = prior_off.shape[0] > 1
    noisy = noise_scale != 0
    A = np.empty((d, d), dtype=np.float32)
    G = np.empty((4, d), dtype=np.float32)
    h = np.empty(d, dtype=np.float32)
    z = np.empty(d, dtype=np.float32)
    pm = np.empty(d, dtype=np.float32)
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
            pm[a] = prior_mean[a] + prior_off[r, a]
        for a in range(d):
            lin = np.float32(0.0)  # Lambda (m + off_u), the prior's linear term
            for b in range(d):
                lin += prior_prec[a, b] * pm[b]
            h[a] = alpha_u * h[a] + lin
            for b in range(a + 1):
                A[a, b] = alpha_u * A[a, b] + prior_prec[a, b]
        # A = L L' in place, then h <- A^-1 h and z <- L^-T z. Written out rather than calling
        # the helpers of kernels.als: each helper is a kernel of its own, compiled separately
        # on first use, and this one kernel is what BayesianMF's first fit waits for.
        for j in range(d):
            s = A[j, j]
            for p in range(j):
                s -= A[j, p] * A[j, p]
            if s <= 1e-12:  # only rounding on a singular system gives this; keep it solvable
                s = 1e-12
            diag = np.sqrt(s)
            A[j, j] = diag
            inv = 1.0 / diag
            for i in range(j + 1, d):
                s = A[i, j]
                for p in range(j):
                    s -= A[i, p] * A[j, p]
                A[i, j] = s * inv
        for i in range(d):
            v = h[i]
            for p in range(i):
                v -= A[i, p] * h[p]
            h[i] = v / A[i, i]
        for i in range(d - 1, -1, -1):
            v = h[i]
            for p in range(i + 1, d):
                v -= A[p, i] * h[p]
            h[i] = v / A[i, i]
        if noisy:
            normal_row(key, u, z)
            for i in range(d - 1, -1, -1):
                v = z[i]
                for p in range(i + 1, d):
                    v -= A[p, i] * z[p]
                z[i] = v / A[i, i]
            for a in range(d):
                X[u, a] = h[a] + noise_scale * z[a]
        else:
            for a in range(d):
                X[u, a] = h[a]


def sample_rows_reference(indptr, indices, data, X, Y, xw, yw, mu, alpha, prior_mean, prior_off,
                          prior_prec, fit_bias, noise):
    """NumPy (float64) reference of :func:`sample_rows`; updates ``X`` in place.

    ``noise`` (shape of ``X``) holds the standard normal draws of the rows, for instance
    :func:`normal_rows_reference` ``(key, n_rows, d)``.
    """
    prior_prec = prior_prec.astype(np.float64)
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
        lin = prior_prec @ (prior_mean + prior_off[u if prior_off.shape[0] > 1 else 0])
        mean = np.linalg.solve(prec, lin + F.T @ (w * t))
        X[u] = mean + np.linalg.solve(L.T, noise[u].astype(np.float64))


def row_squared_errors(indptr, indices, data, X, Y, yw, mu, fit_bias, order, n_blocks,
                       n_threads=None):
    """Per row, the sum of squared training errors of augmented factors (bias in the last
    column): weighted by each column's ``yw``, and plain.

    ``order``, ``n_blocks`` and ``n_threads`` deal the rows to threads as in
    :func:`sample_rows`.

    Returns
    -------
    weighted, plain : float64 arrays of shape (n_rows,)
        The caller sums them, in an order that does not depend on the thread count.
    """
    n_rows = X.shape[0]
    weighted = np.zeros(n_rows)
    plain = np.zeros(n_rows)
    n_blocks = max(1, min(int(n_blocks), n_rows))
    run_blocks(row_squared_errors_block, (indptr, indices, data, X, Y, yw, mu, fit_bias, order,
                                          n_blocks, weighted, plain),
               n_blocks, block_threads(n_threads))
    return weighted, plain


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def row_squared_errors_block(indptr, indices, data, X, Y, yw, mu, fit_bias, order, n_blocks,
                             weighted, plain, blk):
    """Block ``blk`` of :func:`row_squared_errors`, into ``weighted`` and ``plain``."""
    n_rows, d = X.shape
    k = d - 1 if fit_bias else d
    # the biases enter by a product with 0 or 1, not a branch: a branch in the loop made LLVM
    # compile the loop twice, a third more code to compile for nothing
    fb = np.float32(1.0) if fit_bias else np.float32(0.0)
    for t in range(blk, n_rows, n_blocks):
        u = order[t]
        acc_w = 0.0
        acc = 0.0
        for p in range(indptr[u], indptr[u + 1]):
            j = indices[p]
            e = data[p] - mu
            e -= fb * (X[u, d - 1] + Y[j, d - 1])
            for a in range(k):
                e -= X[u, a] * Y[j, a]
            e2 = e * e
            acc += e2
            acc_w += yw[j] * e2
        weighted[u] = acc_w
        plain[u] = acc


def row_squared_errors_reference(indptr, indices, data, X, Y, yw, mu, fit_bias):
    """NumPy reference of :func:`row_squared_errors`."""
    u = np.repeat(np.arange(X.shape[0]), np.diff(indptr))
    Xu, Yj = X[u].astype(np.float64), Y[indices].astype(np.float64)
    if fit_bias:
        pred = mu + Xu[:, -1] + Yj[:, -1] + np.einsum("ij,ij->i", Xu[:, :-1], Yj[:, :-1])
    else:
        pred = mu + np.einsum("ij,ij->i", Xu, Yj)
    e2 = (data - pred) ** 2
    n = X.shape[0]
    return np.bincount(u, yw[indices] * e2, minlength=n), np.bincount(u, e2, minlength=n)


def implicit_offsets(indptr, indices, xs, W, out, order, n_blocks, n_threads=None):
    """``out[u] = xs[u] * sum_{j in N(u)} W[j]`` for every row ``u``, in place.

    Parameters
    ----------
    indptr, indices : CSR arrays of the side whose rows are offset (row ``u`` lists ``N(u)``)
    xs : float32 array of shape (n_rows,)
        Weight of a row's rated columns, ``|N(u)|^-1/2`` (0 for empty rows).
    W : float32 array of shape (n_cols, d)
        The implicit-feedback weights of the columns.
    out : float32 array of shape (n_rows, d)
    order : int64 array of shape (n_rows,)
    n_blocks : int
    n_threads : int or None, default=None
        Rows dealt to threads as in :func:`sample_rows`.
    """
    n_blocks = max(1, min(int(n_blocks), out.shape[0]))
    # each block's float64 accumulator, made here: allocating it in the kernel would compile
    # np.empty for float64 (the other kernels allocate float32 only)
    sums = np.empty((n_blocks, W.shape[1]))
    run_blocks(implicit_offsets_block, (indptr, indices, xs, W, out, order, n_blocks, sums),
               n_blocks, block_threads(n_threads))


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def implicit_offsets_block(indptr, indices, xs, W, out, order, n_blocks, sums, blk):
    """Block ``blk`` of :func:`implicit_offsets`: rows ``order[blk::n_blocks]``, summed in
    ``sums[blk]`` (float64 of length ``d``)."""
    n_rows = out.shape[0]
    d = W.shape[1]
    acc = sums[blk]
    for t in range(blk, n_rows, n_blocks):
        u = order[t]
        acc[:] = 0.0
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


@njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def sample_implicit(indptr, indices, xs, W, R, lam, chol_inv_t, key):
    """One Gibbs pass over the rows of ``W`` (the implicit-feedback weights), in place.

    The rows ``x_u`` of one side have the prior ``N(m + xs[u] sum_{j in N(u)} W[j],
    Lambda^-1)``; ``R`` holds the residuals ``x_u - m - xs[u] sum_{j in N(u)} W[j]`` and is kept
    up to date as ``W`` changes. With the prior ``W[j] ~ N(0, (lam Lambda)^-1)``, the conditional
    of ``W[j]`` given everything else has precision ``c_j Lambda`` and mean
    ``sum_{u rated j} xs[u] r_u / c_j``, where ``c_j = lam + sum_{u rated j} xs[u]^2`` and ``r_u``
    is the residual without ``W[j]``'s own share. The loop over ``j`` is sequential: rows that
    share a rater are not conditionally independent. It holds no GIL, so the caller can run it
    beside work that does not touch ``W`` or ``R``.

    Parameters
    ----------
    indptr, indices : CSR arrays of the *other* side (row ``j`` lists the rows ``u`` that rated it)
    xs : float32 array of shape (n_rows,)
    W : float32 array of shape (n_cols, d)
    R : float32 array of shape (n_rows, d)
    lam : float
    chol_inv_t : float64 array of shape (d, d)
        ``L^-T`` with ``Lambda = L L'``: ``L^-T z`` is a ``N(0, Lambda^-1)`` draw.
    key : uint64
        Stream of the normal draws: row ``j`` of ``W`` uses :func:`normal_row` ``(key, j)``.
    """
    d = W.shape[1]
    s = np.empty(d, dtype=np.float32)
    delta = np.empty(d, dtype=np.float32)
    z = np.empty(d, dtype=np.float32)
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
        normal_row(key, j, z)
        for a in range(d):
            e = 0.0
            for b in range(a, d):  # L^-T is upper triangular
                e += chol_inv_t[a, b] * z[b]
            new = s[a] / c + sd * e
            delta[a] = new - W[j, a]
            W[j, a] = new
        for p in range(start, end):
            u = indices[p]
            x = xs[u]
            for a in range(d):
                R[u, a] -= x * delta[a]


def sample_implicit_reference(indptr, indices, xs, W, R, lam, chol_inv_t, z):
    """NumPy (float64) reference of :func:`sample_implicit`; updates ``W`` and ``R`` in place.

    ``z`` (shape of ``W``) holds the standard normal draws, for instance
    :func:`normal_rows_reference` ``(key, n_cols, d)``.
    """
    for j in range(W.shape[0]):
        u = indices[indptr[j]:indptr[j + 1]]
        x = xs[u].astype(np.float64)
        c = lam + float(x @ x)
        old = W[j].astype(np.float64)
        new = (x @ (R[u] + np.outer(x, old))) / c + chol_inv_t @ z[j] / np.sqrt(c)
        R[u] -= np.outer(x, new - old)
        W[j] = new


# ------------------------------------------------------------------ normal draws keyed by row
# SplitMix64 (Steele, Lea & Flood 2014): output n of the stream that starts at `key` is a fixed
# mixing function of key + (n + 1) * GAMMA, so any thread can make any row's draws on its own.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_INV_2_52 = 2.0 ** -52  # a 53-bit integer times this, minus 1, is uniform on [-1, 1)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def normal_row(key, row, z):
    """Fill ``z`` (length ``d``) with the standard normal draws of row ``row`` of stream ``key``.

    Marsaglia's polar method on pairs of 53-bit uniforms taken in turn from the row's own
    SplitMix64 stream, which starts at output ``row`` of the stream ``key``: no sines or cosines,
    and a rejected pair costs only two more outputs. (SplitMix64 is written out, three times,
    rather than called: a helper kernel costs a compile of its own on first use.)
    """
    d = z.shape[0]
    m = key + (np.uint64(row) + np.uint64(1)) * _GAMMA  # output `row` of stream `key`
    m = (m ^ (m >> np.uint64(30))) * _MIX1
    m = (m ^ (m >> np.uint64(27))) * _MIX2
    row_key = m ^ (m >> np.uint64(31))
    n = np.uint64(0)
    a = 0
    while a < d:
        m = row_key + (n + np.uint64(1)) * _GAMMA  # output n of the row's stream
        m = (m ^ (m >> np.uint64(30))) * _MIX1
        m = (m ^ (m >> np.uint64(27))) * _MIX2
        x = np.float64((m ^ (m >> np.uint64(31))) >> np.uint64(11)) * _INV_2_52 - 1.0
        m = row_key + (n + np.uint64(2)) * _GAMMA  # and output n + 1
        m = (m ^ (m >> np.uint64(30))) * _MIX1
        m = (m ^ (m >> np.uint64(27))) * _MIX2
        y = np.float64((m ^ (m >> np.uint64(31))) >> np.uint64(11)) * _INV_2_52 - 1.0
        n += np.uint64(2)
        s = x * x + y * y
        if s >= 1.0 or s == 0.0:  # outside the unit disc: about 21% of pairs
            continue
        f = np.sqrt(-2.0 * np.log(s) / s)
        z[a] = x * f
        if a + 1 < d:
            z[a + 1] = y * f
        a += 2


def _splitmix_reference(key, n):
    """Output ``n`` (from 0) of the SplitMix64 stream that starts at ``key``, in Python
    integers (as :func:`normal_row` computes it)."""
    mask = (1 << 64) - 1
    x = (int(key) + (int(n) + 1) * int(_GAMMA)) & mask
    x = ((x ^ (x >> 30)) * int(_MIX1)) & mask
    x = ((x ^ (x >> 27)) * int(_MIX2)) & mask
    return x ^ (x >> 31)


def normal_rows_reference(key, n_rows, d):
    """Plain-Python reference of :func:`normal_row` for rows ``0 .. n_rows - 1``: float64
    array of shape (n_rows, d)."""
    out = np.empty((n_rows, d))
    for row in range(n_rows):
        row_key = _splitmix_reference(key, row)
        n, a = 0, 0
        while a < d:
            x = (_splitmix_reference(row_key, n) >> 11) * _INV_2_52 - 1.0
            y = (_splitmix_reference(row_key, n + 1) >> 11) * _INV_2_52 - 1.0
            n += 2
            s = x * x + y * y
            if s >= 1.0 or s == 0.0:
                continue
            f = np.sqrt(-2.0 * np.log(s) / s)
            out[row, a] = x * f
            if a + 1 < d:
                out[row, a + 1] = y * f
            a += 2
    return out
