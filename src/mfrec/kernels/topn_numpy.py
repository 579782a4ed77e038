"""Top-N selection in plain NumPy, for small batches (a few users of a loaded model).

Same arguments and results as :func:`mfrec.kernels.topn.topn` (ties to the lower candidate
position; NaN and ``-inf`` scores never selected; padding -1 / ``-inf``), without importing
Numba or starting its threads: for one user the Numba kernel's first call costs more (import,
loading compiled code from the cache, thread pool) than the whole NumPy answer. It holds the
``m x c`` score block at once, so callers use it only while ``m * c <= MAX_CELLS``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["topn_numpy", "MAX_CELLS"]

#: the largest users x candidates block scored at once (float32: 16 MiB)
MAX_CELLS = 1 << 22


def topn_numpy(U, Q, item_bias, seen_indptr, seen_indices, seen_rows, cand_pos, n):
    """Best ``n`` candidates per query vector, seen items masked (see ``topn`` for arguments).

    Returns
    -------
    idx : int64 array of shape (m, n)
        Candidate positions, best first; -1 where fewer than ``n`` candidates have a score above
        ``-inf``.
    scores : float32 array of shape (m, n)
        ``U @ Q.T + item_bias`` (float32) at those positions; ``-inf`` for padding.
    """
    m = U.shape[0]
    S = np.dot(U, Q.T)
    S += item_bias[None, :]
    identity = cand_pos.shape[0] == 0
    idx = np.full((m, n), -1, np.int64)
    out = np.full((m, n), -np.inf, np.float32)
    for r in range(m):
        s = S[r]
        su = seen_rows[r]
        if su >= 0:
            g = seen_indices[seen_indptr[su]:seen_indptr[su + 1]]
            pos = g if identity else cand_pos[g]
            s[pos[pos >= 0]] = -np.inf
        ok = np.flatnonzero(s > -np.inf)  # drops -inf and NaN, as the kernel's heap does
        if ok.size > n:
            vals = s[ok]
            kth = np.partition(vals, ok.size - n)[ok.size - n]  # the n-th largest score
            above = ok[vals > kth]
            # equal scores at the cut go to the lowest positions (ok is increasing)
            ok = np.concatenate([above, ok[vals == kth][:n - above.size]])
        order = ok[np.lexsort((ok, -s[ok]))]  # best first, ties by position
        idx[r, :order.size] = order
        out[r, :order.size] = s[order]
    return idx, out
