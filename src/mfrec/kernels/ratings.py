"""Building the CSR layout of :class:`~mfrec.data.Ratings` in place, without a second copy.

The per-user counts are known beforehand (a first pass), so entries can arrive in chunks and be
placed at once in the final arrays. Two ways, both keeping input order among equal keys (which
``duplicates="last"`` relies on):

- bucketed (the usual one): ``bucket_scatter`` appends each entry to its bucket of
  ``2**row_bits`` consecutive rows, packing (row in bucket, column) into the int32 column slot;
  few buckets means few write positions, so few cache misses. ``bucket_sort`` then LSD-radix
  sorts each bucket (about 2**16 entries, in cache) by that key, which leaves every row sorted
  by column, and unpacks the columns.
- per row (when the packed key does not fit 31 bits): ``scatter`` writes each entry at its
  row's next free slot, ``sort_rows`` sorts each row by column.

``build_csr_ref`` is the plain NumPy reference the tests hold them to.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["scatter", "sort_rows", "bucket_scatter", "bucket_sort", "build_csr_ref", "count_columns"]

_NO_TS = np.zeros(1, dtype=np.int64)


@njit(cache=True, nogil=True)
def _scatter(cursor, indptr, rows, cols, vals, ts, has_ts, out_cols, out_vals, out_ts):
    for j in range(rows.shape[0]):
        r = rows[j]
        p = cursor[r]
        if p >= indptr[r + 1]:
            return j  # more entries for this row than counted: the input changed between passes
        out_cols[p] = cols[j]
        out_vals[p] = vals[j]
        if has_ts:
            out_ts[p] = ts[j]
        cursor[r] = p + 1
    return -1


@njit(cache=True, nogil=True)
def _sort_slice(cols, vals, ts, has_ts, a, b):
    m = b - a
    if m <= 32:  # insertion sort: stable, no allocation, fastest on the short rows that dominate
        for j in range(a + 1, b):
            c, v = cols[j], vals[j]
            t = ts[j] if has_ts else ts[0]
            k = j - 1
            while k >= a and cols[k] > c:
                cols[k + 1] = cols[k]
                vals[k + 1] = vals[k]
                if has_ts:
                    ts[k + 1] = ts[k]
                k -= 1
            cols[k + 1] = c
            vals[k + 1] = v
            if has_ts:
                ts[k + 1] = t
        return
    # longer rows: bottom-up merge sort of positions by column (stable), then one permutation;
    # plain loops, which Numba compiles far faster than np.argsort(kind="mergesort")
    order = np.arange(a, b)
    tmp = np.empty(m, dtype=np.int64)
    width = 1
    while width < m:
        for lo in range(0, m, 2 * width):
            mid = min(lo + width, m)
            hi = min(lo + 2 * width, m)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if cols[order[j]] < cols[order[i]]:
                    tmp[k] = order[j]
                    j += 1
                else:
                    tmp[k] = order[i]
                    i += 1
                k += 1
            while i < mid:
                tmp[k] = order[i]
                i += 1
                k += 1
            while j < hi:
                tmp[k] = order[j]
                j += 1
                k += 1
        order, tmp = tmp, order
        width *= 2
    c = np.empty(m, dtype=cols.dtype)
    v = np.empty(m, dtype=vals.dtype)
    for q in range(m):
        c[q] = cols[order[q]]
        v[q] = vals[order[q]]
    if has_ts:
        t = np.empty(m, dtype=ts.dtype)
        for q in range(m):
            t[q] = ts[order[q]]
        for q in range(m):
            ts[a + q] = t[q]
    for q in range(m):
        cols[a + q] = c[q]
        vals[a + q] = v[q]


@njit(cache=True, parallel=True, nogil=True)
def _sort_rows(indptr, cols, vals, ts, has_ts, dup):
    n = indptr.shape[0] - 1
    for r in prange(n):
        a, b = indptr[r], indptr[r + 1]
        ordered = True
        for j in range(a + 1, b):
            if cols[j] < cols[j - 1]:
                ordered = False
                break
        if not ordered:
            _sort_slice(cols, vals, ts, has_ts, a, b)
        d = 0
        for j in range(a + 1, b):
            if cols[j] == cols[j - 1]:
                d += 1
        dup[r] = d


@njit(cache=True, nogil=True)
def _bucket_scatter(bcursor, bend, rows, cols, vals, ts, has_ts, row_bits, item_bits, out_key,
                    out_vals, out_ts):
    rmask = (1 << row_bits) - 1
    for j in range(rows.shape[0]):
        r = rows[j]
        b = r >> row_bits
        p = bcursor[b]
        if p >= bend[b]:
            return j
        out_key[p] = ((r & rmask) << item_bits) | cols[j]
        out_vals[p] = vals[j]
        if has_ts:
            out_ts[p] = ts[j]
        bcursor[b] = p + 1
    return -1


@njit(cache=True, parallel=True, nogil=True)
def _bucket_sort(indptr, row_bits, item_bits, key, vals, ts, has_ts, dup, bad):
    n_rows = indptr.shape[0] - 1
    imask = (1 << item_bits) - 1
    n_bits = row_bits + item_bits
    for b in prange(dup.shape[0]):
        r0 = b << row_bits
        r1 = min(r0 + (1 << row_bits), n_rows)
        s, e = indptr[r0], indptr[r1]
        m = e - s
        if m == 0:
            continue
        # LSD radix sort of the bucket by its packed (row, item) key, 11 bits a pass: stable,
        # so repeated pairs keep their input order; the bucket (and the 2048 counters) stay in
        # cache, and the rows come out sorted by item with no per-row sort
        src_k, src_v, src_t = key[s:e], vals[s:e], ts[s:e] if has_ts else ts
        dst_k = np.empty(m, dtype=key.dtype)
        dst_v = np.empty(m, dtype=vals.dtype)
        dst_t = np.empty(m if has_ts else 1, dtype=ts.dtype)
        count = np.empty(2048, dtype=np.int64)
        shift = 0
        flips = 0
        while shift < n_bits:
            count[:] = 0
            for j in range(m):
                count[(src_k[j] >> shift) & 2047] += 1
            total = 0
            for d in range(2048):
                c = count[d]
                count[d] = total
                total += c
            for j in range(m):
                d = (src_k[j] >> shift) & 2047
                q = count[d]
                count[d] = q + 1
                dst_k[q] = src_k[j]
                dst_v[q] = src_v[j]
                if has_ts:
                    dst_t[q] = src_t[j]
            src_k, dst_k = dst_k, src_k
            src_v, dst_v = dst_v, src_v
            if has_ts:
                src_t, dst_t = dst_t, src_t
            shift += 11
            flips += 1
        if flips % 2 == 1:  # the sorted entries are in the temporaries: copy them home
            for q in range(m):
                key[s + q] = src_k[q]
                vals[s + q] = src_v[q]
                if has_ts:
                    ts[s + q] = src_t[q]
        d = 0
        for r in range(r0, r1):
            for j in range(indptr[r], indptr[r + 1]):
                if (key[j] >> item_bits) != r - r0:
                    bad[b] = 1  # the rows' entries do not match their counts: input changed
                if j > indptr[r] and key[j] == key[j - 1]:
                    d += 1
        for j in range(s, e):
            key[j] &= imask
        dup[b] = d


def bucket_layout(n_rows, n_cols, nnz):
    """``(row_bits, item_bits)`` for the bucketed layout, or None when it does not fit.

    A bucket is ``2**row_bits`` consecutive rows, sized to hold about 2**16 entries (its sort
    then runs in cache); an entry's row within its bucket and its column are packed into one
    int32 (``row << item_bits | col``) while it waits in the bucket.
    """
    item_bits = max(1, int(n_cols - 1).bit_length())
    per_row = max(nnz / max(n_rows, 1), 1.0)
    row_bits = min(31 - item_bits, max(4, int(np.log2((1 << 16) / per_row))))
    if row_bits < 4 or (n_rows >> row_bits) >= 1 << 20:
        return None
    return row_bits, item_bits


def bucket_scatter(bcursor, bend, rows, cols, vals, ts, row_bits, item_bits, out_key, out_vals,
                   out_ts):
    """Place entries in their bucket of rows (few write positions: cache-friendly), in order.

    ``bcursor``/``bend`` are the next free slot and end of each bucket (int64, updated in
    place); ``out_key`` (int32) receives the packed (row in bucket, column). Returns -1, or the
    position of the first entry whose bucket was already full.
    """
    has_ts = ts is not None
    if not has_ts:
        ts = out_ts = _NO_TS
    return int(_bucket_scatter(bcursor, bend, rows, cols, vals, ts, has_ts, row_bits, item_bits,
                               out_key, out_vals, out_ts))


def bucket_sort(indptr, row_bits, item_bits, key, vals, ts):
    """Finish the bucketed layout in place: each bucket sorted by row (counting sort) and each
    row by column (stable), packed keys turned back into columns.

    Returns
    -------
    int
        How many entries repeat the (row, column) before them; -1 if a row held more entries
        than ``indptr`` gives it.
    """
    n_buckets = ((indptr.shape[0] - 1) >> row_bits) + 1
    dup = np.zeros(n_buckets, dtype=np.int64)
    bad = np.zeros(n_buckets, dtype=np.int64)
    _bucket_sort(indptr, row_bits, item_bits, key, vals, _NO_TS if ts is None else ts,
                 ts is not None, dup, bad)
    return -1 if bad.any() else int(dup.sum())


def scatter(cursor, indptr, rows, cols, vals, ts, out_cols, out_vals, out_ts):
    """Place entries at ``cursor[row]`` and advance it, in input order.

    Parameters
    ----------
    cursor : ndarray of int64, shape (n_rows,)
        Next free slot of each row (start: ``indptr[:-1]``); updated in place.
    indptr : ndarray of int64, shape (n_rows + 1,)
        Row boundaries from the counts.
    rows, cols, vals : ndarray of shape (m,)
        The chunk's row indices (int64), column indices and values.
    ts : ndarray of shape (m,) or None
        Timestamps (numbers; view datetimes as int64).
    out_cols, out_vals, out_ts : ndarray of shape (nnz,) (``out_ts`` None when ``ts`` is)
        The CSR arrays being filled.

    Returns
    -------
    int
        -1, or the position in the chunk of the first entry whose row was already full.
    """
    has_ts = ts is not None
    if not has_ts:  # one compiled signature: a placeholder stands in for absent timestamps
        ts = out_ts = _NO_TS
    return int(_scatter(cursor, indptr, rows, cols, vals, ts, has_ts, out_cols, out_vals, out_ts))


def sort_rows(indptr, cols, vals, ts):
    """Sort each CSR row by column in place (stable; ``vals`` and ``ts`` follow).

    Returns
    -------
    ndarray of int64, shape (n_rows,)
        How many entries of each row repeat the column before them.
    """
    dup = np.zeros(indptr.shape[0] - 1, dtype=np.int64)
    _sort_rows(indptr, cols, vals, _NO_TS if ts is None else ts, ts is not None, dup)
    return dup


def build_csr_ref(rows, cols, vals, ts, n_rows):
    """NumPy reference of ``scatter`` followed by ``sort_rows`` on a single chunk.

    Returns
    -------
    indptr, cols, vals, ts (or None), dup
        As the kernels leave them: entries ordered by (row, column), ties in input order.
    """
    order = np.lexsort((cols, rows))
    rows_s, cols_s = rows[order], cols[order]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    same = np.r_[False, (rows_s[1:] == rows_s[:-1]) & (cols_s[1:] == cols_s[:-1])]
    dup = np.bincount(rows_s[same], minlength=n_rows).astype(np.int64)
    return indptr, cols_s, vals[order], None if ts is None else ts[order], dup


@njit(cache=True, nogil=True)
def _count_columns(indices, out):
    for idx in range(indices.size):
        out[indices[idx]] += 1


def count_columns(indices, n_cols):
    """Entries per column of a CSR matrix: ``np.bincount(indices, minlength=n_cols)`` without
    its int64 copy of ``indices`` (at 100M ratings the copy and its pass took over a second).

    Parameters
    ----------
    indices : ndarray of int32 or int64, shape (nnz,)
        Column indices, each in ``[0, n_cols)`` (checked when the Ratings were built).
    n_cols : int

    Returns
    -------
    ndarray of int64, shape (n_cols,)
    """
    out = np.zeros(n_cols, dtype=np.int64)
    _count_columns(indices, out)
    return out
