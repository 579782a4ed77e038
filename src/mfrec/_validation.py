"""Argument checks shared by every model: one place, one message style.

Each check names the argument, the value it got and what is allowed, as in
``n_factors must be an int >= 1, got 0``.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_int", "check_float", "check_choice", "check_bool", "rng_from", "seed_from"]


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
