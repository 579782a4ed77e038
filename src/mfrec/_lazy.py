"""Deferred imports of the Numba kernels.

Importing Numba costs more than loading a model and answering a query, so a model module names
its kernels with :func:`lazy_module` (or :func:`lazy_function`) instead of importing them: the
kernel module (and Numba) is imported on first use, by ``fit`` or a large batch, never by
``load`` plus a small ``recommend``. The import itself goes through :mod:`importlib`, whose
module locks make a first use from several threads at once safe.
"""
from __future__ import annotations

import importlib

__all__ = ["lazy_module", "lazy_function"]


class _LazyModule:
    """Stands in for a module; the first attribute look-up imports it."""

    __slots__ = ("_name", "_module")

    def __init__(self, name):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        module = self._module
        if module is None:
            module = importlib.import_module(self._name)
            self._module = module
        return getattr(module, attr)

    def __repr__(self):
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name):
    """A stand-in for module ``name`` (absolute) that imports it on first attribute access."""
    return _LazyModule(name)


def lazy_function(module, name):
    """A function that imports ``module`` on its first call and calls its ``name``."""
    proxy = _LazyModule(module)

    def call(*args, **kwargs):
        return getattr(proxy, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Calls {module}.{name} (imported on first use)."
    return call
