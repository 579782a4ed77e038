"""Large training buffers in memory backed by transparent huge pages, where the OS offers them.

SGD updates factor rows in an order that jumps across hundreds of megabytes at 100M ratings;
with 4 KB pages nearly every row touched is also a TLB miss. Linux backs memory with 2 MB pages
when asked (``madvise(MADV_HUGEPAGE)``, honoured when transparent huge pages are set to
``always`` or ``madvise``, the usual default). On the 100M-rating synthetic set the bare SGD
epoch kernel, factors already in block order, ran about a third faster with them (ad-hoc runs
in one session, see ``benchmarks/results/scale.md``). Elsewhere this is plain
:func:`numpy.empty`.
"""
from __future__ import annotations

import mmap

import numpy as np

#: smaller arrays stay in ordinary memory: they fit the TLB's reach anyway
MIN_BYTES = 1 << 25


def empty_huge(shape, dtype=np.float32):
    """An uninitialised C-contiguous array, huge-page backed when large (see the module).

    Parameters
    ----------
    shape : int or tuple of int
    dtype : numpy dtype, default=float32

    Returns
    -------
    ndarray of the given shape and dtype, writable; its memory is released with the array.
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    if nbytes < MIN_BYTES or advice is None or not flags:
        return np.empty(shape, dtype)
    try:
        # private anonymous memory (never shared memory, which follows other THP settings)
        buf = mmap.mmap(-1, nbytes, flags=flags)
        buf.madvise(advice)
    except (OSError, ValueError):
        return np.empty(shape, dtype)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)
