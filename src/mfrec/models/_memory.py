"""Refuse a fit up front when its working memory cannot fit, instead of an out-of-memory kill.

Every fit's working set is, to within a small factor, ``a * nnz + b * (n_users + n_items) * k``
bytes beyond the :class:`~mfrec.Ratings` it is given: ``a`` counts the per-rating copies a
model makes (a float64 copy of the matrix, its transpose, residuals), ``b`` the factor-sized
arrays it keeps (float32 or float64 factors, gradients, best-epoch copies, Gibbs samples). The
coefficients below were read off each model's code and checked against measured peaks
(``benchmarks/bench_memory_estimate.py``); they err on the large side.
"""
from __future__ import annotations

import os
import re

#: bytes per rating and per (row x factor) beyond the Ratings, by model class name
COEFFICIENTS = {
    "SVD": (48, 40),             # float64 matrix, ARPACK's 2k+1 Lanczos vectors, U and V
    "NMF": (48, 40),             # float64 X, X^T, the estimate and its transpose; float64 P, Q
    "GradientDescent": (36, 48),  # float64 X and its error; float64 P, Q and their steps
    "SVDpp": (8, 24),            # float32 P, Q, Y and their best-epoch copies
    "BayesianMF": (16, 48),      # item-major copy; samples, implicit weights, running means
    "BiasedMF": (12, 16),        # the blocked (user, item, rating) copy; permuted and final P, Q
    "Baseline": (12, 0),
    "ALS": (8, 16),
    "ImplicitALS": (24, 24),     # confidence and preference copies of the values
    "BPR": (24, 24),             # the shuffled (user, item) pairs of an epoch
    "Popularity": (16, 0),       # float64 values and item ids; no factors
}
DEFAULT_COEFFICIENTS = (16, 48)


class MemoryEstimateError(MemoryError):
    """Raised before a fit starts when its estimated working memory exceeds what is available."""


def _parse_size(text):
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"MFREC_MEMORY_LIMIT must be a size such as 8G or 500M, got {text!r}")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def available_bytes():
    """Memory a fit may use: ``$MFREC_MEMORY_LIMIT`` if set, else the smallest of the system's
    available memory, the cgroup limit and the address-space limit; None when unknown."""
    env = os.environ.get("MFREC_MEMORY_LIMIT")
    if env:
        return _parse_size(env)
    limits = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(limits) if limits else None


def estimate_bytes(model, n_users, n_items, nnz):
    """Estimated working memory in bytes of ``model.fit`` on data of this shape."""
    per_rating, per_cell = COEFFICIENTS.get(type(model).__name__, DEFAULT_COEFFICIENTS)
    k = getattr(model, "n_factors", None)
    k = int(k) if isinstance(k, (int, float)) and k else min(n_users, n_items)
    return per_rating * nnz + per_cell * (n_users + n_items) * (k + 1)


def _gb(b):
    return f"{b / 2**30:.1f} GB"


def check_fit_memory(model, ratings):
    """Raise :class:`MemoryEstimateError` if fitting ``model`` on ``ratings`` cannot fit."""
    available = available_bytes()
    if available is None:
        return
    need = estimate_bytes(model, ratings.n_users, ratings.n_items, ratings.nnz)
    if need > available:
        k = getattr(model, "n_factors", None)
        raise MemoryEstimateError(
            f"{type(model).__name__}(n_factors={k}) on {ratings.n_users:,} users x "
            f"{ratings.n_items:,} items with {ratings.nnz:,} ratings needs about {_gb(need)} of "
            f"working memory (estimate), more than the {_gb(available)} available; lower "
            f"n_factors, fit on a sample, or use a leaner model (BiasedMF, ALS, ImplicitALS and "
            f"BPR need about 8 bytes per rating beyond the data). Set MFREC_MEMORY_LIMIT to "
            f"override the limit.")
