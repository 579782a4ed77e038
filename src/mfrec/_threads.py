"""Thread control: Numba kernels get ``num_threads`` threads while BLAS is held to one."""
from __future__ import annotations

import contextlib
import os

import numba
from threadpoolctl import threadpool_limits

from ._validation import check_int

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
    multithreaded BLAS) is slower than either alone.
    """
    n = resolve_threads(num_threads)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            yield n
    finally:
        numba.set_num_threads(previous)


def cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
