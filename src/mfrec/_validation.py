"""Argument checks shared by every model: one place, one message style.

Each check names the argument, the value it got and what is allowed, as in
``n_factors must be an int >= 1, got 0``.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_int", "check_float", "check_choice", "check_bool", "rng_from", "seed_from",
           "count_nonfinite", "row_norms"]

#: elements per chunk of the whole-array checks below: bounded temporaries (4 MB of flags)
_CHUNK = 1 << 22


def check_int(name, value, *, low=None, high=None, allow_none=False):
    """Validate an integer hyperparameter; returns it as a Python int."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int{_range(low, high)}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int{_range(low, high)}, got {value!r}")
    return int(value)


def check_float(name, value, *, low=None, high=None, low_open=False, allow_none=False):
    """Validate a real hyperparameter (finite); returns it as a Python float."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise TypeError(f"{name} must be a finite number{_range(low, high, low_open)}, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be a number{_range(low, high, low_open)}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be a number{_range(low, high, low_open)}, got {value!r}")
    return float(value)


def check_choice(name, value, choices):
    """Validate a value drawn from a fixed set of choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _range(low, high, low_open=False):
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def rng_from(random_state):
    """A numpy Generator from None, an int seed, a Generator or a RandomState."""
    if random_state is None or isinstance(random_state, (numbers.Integral, np.integer)):
        if random_state is not None and (isinstance(random_state, bool) or random_state < 0):
            raise ValueError(f"random_state must be None, a non-negative int or a Generator, "
                             f"got {random_state!r}")
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


def seed_from(rng):
    """An int seed for a Numba kernel, drawn from a Generator."""
    return int(rng.integers(0, 2**31 - 1))


def count_nonfinite(a):
    """Number of NaN or infinite values of array ``a`` (0 for non-float arrays).

    Checked in chunks of the flattened array: ``np.isfinite(a).all()`` would make a boolean
    temporary as large as ``a`` (a byte per value; half a gigabyte for the user factors of a
    100M-rating fit).
    """
    a = np.asarray(a)
    if a.dtype.kind not in "fc":
        return 0
    flat = a.reshape(-1) if a.flags.c_contiguous else a.ravel(order="K")
    bad = 0
    for s in range(0, flat.size, _CHUNK):
        part = flat[s:s + _CHUNK]
        bad += part.size - int(np.count_nonzero(np.isfinite(part)))
    return bad


def row_norms(F, rows=None):
    """Euclidean norm of each row of ``F`` (or of ``F[rows]``), float64, computed in chunks of
    rows so that no copy of ``F`` is made."""
    F = np.asarray(F)
    rows = np.arange(F.shape[0]) if rows is None else np.asarray(rows)
    out = np.empty(rows.size)
    step = max(1, _CHUNK // max(F.shape[1], 1))
    for s in range(0, rows.size, step):
        block = F[rows[s:s + step]]
        out[s:s + step] = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    return out
