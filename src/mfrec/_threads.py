"""Thread control: Numba kernels get ``num_threads`` threads while BLAS is held to one."""
from __future__ import annotations

import contextlib
import os
import threading

from ._lazy import lazy_module
from ._validation import check_int

numba = lazy_module("numba")  # imported by the first kernel run: loading a model does not need it

__all__ = ["resolve_threads", "thread_context", "run_blocks", "block_threads"]


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
_blas_limiter = None   # the limiter the first of them set
_blas_found = None     # (len(sys.modules) when scanned, ThreadpoolController of the BLAS found)


def _blas_controller():
    """threadpoolctl's controller of the loaded BLAS libraries, scanned once and reused.

    Scanning the process's shared libraries (what ``threadpool_limits`` does on every call) takes
    milliseconds, more than a small kernel run; setting a limit through a kept controller takes
    microseconds. A BLAS comes into the process with the extension module that links it (numpy,
    scipy, faiss, ...), so the scan is redone only when the number of modules has changed
    since. Called with ``_blas_lock`` held.
    """
    import sys

    from threadpoolctl import ThreadpoolController

    global _blas_found
    n_modules = len(sys.modules)
    if _blas_found is None or _blas_found[0] != n_modules:
        _blas_found = (n_modules, ThreadpoolController().select(user_api="blas"))
    return _blas_found[1]


@contextlib.contextmanager
def _blas_limit(blas_threads):
    global _blas_open, _blas_limiter

    with _blas_lock:
        if _blas_open == 0:
            _blas_limiter = _blas_controller().limit(limits=blas_threads)
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


# ------------------------------------------------------------------ blocks on Python threads
# Serial ``nogil`` kernels that each do one block of a loop, run from a pool of Python threads,
# compile two to three times faster than the same loop as a ``parallel=True`` kernel (Numba's
# parfor lowering is most of a first fit's compile time) and run as fast: the blocks are long.
_pools = {}                    # worker count -> ThreadPoolExecutor, created on first use
_pools_lock = threading.Lock()


def _pool(n_workers):
    with _pools_lock:
        pool = _pools.get(n_workers)
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor
            pool = _pools[n_workers] = ThreadPoolExecutor(
                max_workers=n_workers, thread_name_prefix=f"mfrec-blocks-{n_workers}")
        return pool


def _forget_pools():
    # a forked child inherits the pools but not their threads: work submitted there would wait
    # for ever, so the child starts new ones
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def block_threads(n_threads=None):
    """Threads for :func:`run_blocks`: ``n_threads``, or with None the Numba thread count of the
    calling thread (what an enclosing :func:`thread_context` set)."""
    if n_threads is None:
        return int(numba.get_num_threads())
    return max(1, int(n_threads))


def run_blocks(kernel, args, n_blocks, n_threads):
    """Call ``kernel(*args, blk)`` for each ``blk`` in ``range(n_blocks)`` on ``n_threads`` threads.

    The calling thread takes blocks too, beside ``n_threads - 1`` workers of a persistent pool
    (one per thread count, created on first use); blocks are handed out in order to whichever
    thread is free, so a slow core holds up at most one block. With one thread (or one block)
    the blocks run in order in the calling thread. ``kernel`` should release the GIL (a Numba
    kernel compiled with ``nogil=True``), or the threads take turns.

    Parameters
    ----------
    kernel : callable
        Called as ``kernel(*args, blk)``; what it returns is ignored (kernels write into arrays
        among ``args``).
    args : tuple
        Arguments before the block index.
    n_blocks : int
        Number of blocks (>= 0).
    n_threads : int
        Threads to use (>= 1; at most ``n_blocks`` are used).

    Raises
    ------
    BaseException
        The first error a block raised, once every thread has stopped: no block is still
        writing when it propagates. Blocks not yet started when a block fails are skipped.
    """
    n_blocks = int(n_blocks)
    n_threads = max(1, min(int(n_threads), n_blocks))
    if n_threads == 1:
        for blk in range(n_blocks):
            kernel(*args, blk)
        return
    take = iter(range(n_blocks)).__next__  # atomic under the GIL: each block is taken once
    errors = []

    def work():
        try:
            while not errors:
                try:
                    blk = take()
                except StopIteration:
                    return
                kernel(*args, blk)
        except BaseException as error:  # re-raised by the caller below
            errors.append(error)

    futures = [_pool(n_threads - 1).submit(work) for _ in range(n_threads - 1)]
    work()
    for future in futures:
        future.result()  # work() itself never raises: its errors are collected
    if errors:
        raise errors[0]


#: arrays with more rows than this are drawn by :func:`mfrec.kernels.sgd.spread_normal`
NUMPY_NORMAL_MAX_ROWS = 1 << 16


def standard_normal(rng, n_rows, n_cols, scale, n_threads):
    """A float32 array of shape (n_rows, n_cols) of normal draws times ``scale``.

    Up to ``NUMPY_NORMAL_MAX_ROWS`` rows this is ``rng.standard_normal((n_rows, n_cols),
    dtype=np.float32) * scale``, value for value. Larger arrays are the approximately normal
    draws of :func:`mfrec.kernels.sgd.spread_normal` (a sum of four uniforms from a counter-based
    generator) seeded by ``rng``, on ``n_threads`` threads: at 100M ratings NumPy's generator
    took a third of an SGD epoch on two threads for the random start of the factors, the
    counter-based one a sixth of that. The values do not depend on ``n_threads``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_rows, n_cols : int
    scale : float
    n_threads : int

    Returns
    -------
    ndarray of float32, shape (n_rows, n_cols)
    """
    import numpy as np

    if n_rows <= NUMPY_NORMAL_MAX_ROWS:
        out = rng.standard_normal((n_rows, n_cols), dtype=np.float32)
        out *= np.float32(scale)
        return out
    from .kernels.sgd import spread_normal

    seed = int(rng.integers(0, 2**64, dtype=np.uint64))
    return spread_normal(seed, n_rows, n_cols, scale, n_threads)
