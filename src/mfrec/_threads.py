"""Thread control: Numba kernels get ``num_threads`` threads while BLAS is held to one."""
from __future__ import annotations

import contextlib
import os
import sys
import threading

from ._lazy import lazy_module
from ._validation import check_int

numba = lazy_module("numba")  # imported by the first kernel run: loading a model does not need it

__all__ = ["resolve_threads", "thread_context"]


def resolve_threads(num_threads):
    """Number of threads to use: ``None`` or 0 means every core Numba may use."""
    if num_threads is None or num_threads == 0:
        return int(numba.config.NUMBA_NUM_THREADS)
    n = check_int("num_threads", num_threads, low=0)
    return min(n, int(numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def thread_context(num_threads, *, blas_threads=1):
    """Run Numba parallel kernels with ``num_threads`` threads and BLAS with ``blas_threads``.

    BLAS threads are limited because oversubscribing the cores (Numba threads each calling a
    multithreaded BLAS) is slower than either alone. Numba's thread count is per thread, but the
    BLAS limit is process-wide: blocks open in several threads at once share one limit, set by
    the first to open and restored when the last closes (the first block's ``blas_threads``
    holds until then). Restoring per block would undo the limits out of order and leave the
    process with the lowered count for good.
    """
    n = resolve_threads(num_threads)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with _blas_limit(blas_threads):
            yield n
    finally:
        numba.set_num_threads(previous)


_blas_lock = threading.Lock()
_blas_open = 0         # thread_context blocks now open, in every thread
_blas_limiter = None   # the threadpool_limits the first of them set


@contextlib.contextmanager
def _blas_limit(blas_threads):
    global _blas_open, _blas_limiter
    from threadpoolctl import threadpool_limits

    with _blas_lock:
        if _blas_open == 0:
            _blas_limiter = threadpool_limits(limits=blas_threads, user_api="blas")
        _blas_open += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_open -= 1
            if _blas_open == 0:
                limiter, _blas_limiter = _blas_limiter, None
                limiter.restore_original_limits()


def cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
