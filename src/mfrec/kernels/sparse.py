"""Sampled products on a sparsity pattern: the one kernel the notebook's methods need.

``observed_dots`` computes ``(P @ Q.T)[u, i]`` only at the stored entries of a CSR matrix, so the
"ignore missing" variants of SVD, NMF and gradient descent never build the dense product.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import FASTMATH

__all__ = ["observed_dots", "observed_dots_ref"]


@njit(cache=True, parallel=True, fastmath=FASTMATH, error_model="numpy")
def _observed_dots(indptr, indices, P, Q, out):
    n_rows, k = P.shape
    for u in prange(n_rows):
        for j in range(indptr[u], indptr[u + 1]):
            i = indices[j]
            acc = 0.0
            for f in range(k):
                acc += P[u, f] * Q[i, f]
            out[j] = acc


#: at most this many entries are computed by the NumPy reference instead of the kernel
_NUMPY_MAX_NNZ = 4096


def observed_dots(indptr, indices, P, Q):
    """Row-wise dot products at the entries of a CSR pattern.

    Parameters
    ----------
    indptr : ndarray of int, shape (n_users + 1,)
    indices : ndarray of int, shape (nnz,)
    P : ndarray of shape (n_users, k)
    Q : ndarray of shape (n_items, k)

    Returns
    -------
    ndarray of shape (nnz,), dtype of P
        ``out[j] = P[u] @ Q[indices[j]]`` for the row u that holds entry j.
    """
    if indices.shape[0] <= _NUMPY_MAX_NNZ:
        # tiny matrices (the notebook's 4 x 5) are called thousands of times by gradient
        # descent: starting the kernel's threads would cost far more than the arithmetic
        return observed_dots_ref(indptr, indices, P, np.asarray(Q, dtype=np.asarray(P).dtype))
    P = np.ascontiguousarray(P)
    Q = np.ascontiguousarray(Q, dtype=P.dtype)
    out = np.empty(indices.shape[0], dtype=P.dtype)
    _observed_dots(indptr, indices, P, Q, out)
    return out


def observed_dots_ref(indptr, indices, P, Q):
    """Plain NumPy reference of :func:`observed_dots`."""
    rows = np.repeat(np.arange(P.shape[0]), np.diff(indptr))
    return np.einsum("ij,ij->i", P[rows], Q[indices]).astype(P.dtype)
