"""Files to :class:`~mfrec.data.Ratings`: CSV/TSV (with or without header), Parquet, and the
MovieLens formats (``u.data``, ``ratings.dat`` with ``::``, ``ratings.csv``).

Reading goes straight from the file into the CSR arrays, in two passes over chunks: the first
counts the ratings of every user and collects the ids, the second places each chunk at its
final position (:class:`mfrec.data._CsrFill`). Peak memory is the final ``Ratings`` plus one
chunk, whatever the file's order. With pyarrow (``pip install 'mfrec[parquet]'``) both Parquet
and CSV/TSV are parsed by its multithreaded readers into typed columns (no Python object per row,
no pandas); without it CSV/TSV falls back to pandas' C parser, chunk by chunk.

Pipes, process substitution (``<(...)``) and standard input (``"-"``) are copied to a temporary
file first, so sniffing the format never consumes data and both passes see every byte.
"""
from __future__ import annotations

import csv
import os
import re
import stat
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from .data import (_KERNEL_MIN_NNZ, DUPLICATE_POLICIES, Ratings, Vocabulary, _check_values,
                   _CsrFill, match_columns)

__all__ = ["read_frame", "read_ratings", "FORMATS"]

FORMATS = ("auto", "csv", "tsv", "parquet", "movielens")
_CANON = ("user", "item", "rating", "timestamp")
_SNIFF_BYTES = 1 << 16
_RANGE_BYTES = 16 << 20      # text is parsed in ranges of this size: its Arrow table (about
                             # 10x the bytes) is the reader's transient memory
_CHUNK_ROWS = 1 << 20        # Parquet batch rows
_INT_RE = re.compile(r"^\s*[+-]?\d{1,18}\s*$")


def _pyarrow(purpose=None):
    """pyarrow, or None (a ``purpose`` makes its absence an ImportError naming the extra)."""
    try:
        import pyarrow
    except ImportError:
        if purpose is None:
            return None
        raise ImportError(f"{purpose} needs pyarrow: pip install 'mfrec[parquet]'") from None
    return pyarrow


# ---------------------------------------------------------------------- input: files, pipes, stdin
class _Input:
    """A seekable regular file holding the input: the file itself, or a spooled copy of a pipe,
    a device, standard input (``"-"``) or a binary file object."""

    def __init__(self, source):
        self._spool = None
        if hasattr(source, "read"):
            self.name = str(getattr(source, "name", "<stream>"))
            self._copy(source)
            return
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"path must be a str, a Path, '-' or a binary file object, got "
                            f"{type(source).__name__}")
        if str(source) == "-":
            self.name = "<stdin>"
            self._copy(sys.stdin.buffer)
            return
        path = Path(source)
        self.name = str(path)
        if not path.exists():
            raise FileNotFoundError(f"no such file: {self.name!r}")
        if path.is_dir():
            raise IsADirectoryError(f"{self.name!r} is a folder; give a ratings file "
                                    f"(for MovieLens folders use mfrec.datasets.load_movielens)")
        if stat.S_ISREG(os.stat(path).st_mode):
            self.path = path
        else:  # FIFO, /dev/fd/N of a process substitution, character device: read once, in full
            with open(path, "rb") as f:
                self._copy(f)

    def _copy(self, stream):
        fd, name = tempfile.mkstemp(prefix="mfrec-read-", suffix=".tmp")
        self._spool = self.path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                first = stream.read(1 << 20)
                if isinstance(first, str):
                    raise TypeError(f"{self.name} is open in text mode; open it in binary mode")
                while first:
                    out.write(first)
                    first = stream.read(1 << 20)
        except BaseException:
            self.close()
            raise

    @property
    def size(self):
        return os.path.getsize(self.path)

    def close(self):
        if self._spool is not None:
            self._spool.unlink(missing_ok=True)
            self._spool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------- sniffing text files
def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def _split(line, sep):
    if sep == "::":
        return line.split("::")
    if sep == r"\s+":
        return line.split()
    return next(csv.reader([line], delimiter=sep, skipinitialspace=True), [])


class _TextLayout:
    """What sniffing a text file found: separator, header, names and types of the columns."""

    def __init__(self, sep, has_header, names, data_start, types, sample):
        self.sep = sep
        self.has_header = has_header
        self.names = names            # logical column names (header, names= or positional)
        self.data_start = data_start  # byte offset of the first data line
        self.types = types            # {column index: "int" | "str"} for id columns
        self.sample = sample          # first data lines, for guessing id types
        self.first_line = 2 if has_header else 1

    @property
    def physical(self):
        """Field index in the file of each logical column (``a::b`` splits as ``a, '', b``)."""
        step = 2 if self.sep == "::" else 1
        return [k * step for k in range(len(self.names))]


def _detect_sep(first, sep, fmt):
    if sep is not None:
        return sep
    if fmt == "tsv":
        return "\t"
    if "::" in first:
        return "::"
    for cand in ("\t", ",", ";", "|"):
        if cand in first:
            return cand
    if re.search(r"\S\s+\S", first):
        return r"\s+"
    return ","


def _sniff_text(inp, head, sep, header, names, fmt):
    bom = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    text = head[bom:].decode("utf-8", errors="replace")
    lines = text.split("\n")
    if len(head) == _SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    first = lines[0].rstrip("\r")
    if not first.strip():
        raise ValueError(f"{inp.name!r} is empty (or its first line is blank)")
    sep = _detect_sep(first, sep, fmt)
    fields = [f.strip().strip('"') for f in _split(first.strip() if sep == r"\s+" else first, sep)]
    if header == "infer":
        # a header holds only names; a ratings line holds at least one number
        has_header = not any(_is_number(f) for f in fields)
    else:
        has_header = bool(header)
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(fields):
            raise ValueError(f"names has {len(names)} entries but {inp.name!r} has {len(fields)} "
                             f"columns")
    elif has_header:
        names = fields
    else:
        if not 2 <= len(fields) <= 4:
            raise ValueError(
                f"{inp.name!r} has no header and {len(fields)} column(s): only 2 to 4 columns are "
                f"read by position (user, item[, rating[, timestamp]]); name them with names=[...] "
                f"(--names user,item,rating,...)")
        names = list(_CANON[:len(fields)])
    data_start = bom + (len(head[bom:].split(b"\n", 1)[0]) + 1 if has_header else 0)
    sample = [ln.rstrip("\r") for ln in lines[1 if has_header else 0:][:2000] if ln.strip()]
    return _TextLayout(sep, has_header, names, data_start, {}, sample)


def _guess_id_type(layout, k):
    """"int" when every sampled value of column ``k`` is an integer, else "str"."""
    for line in layout.sample:
        f = _split(line.strip() if layout.sep == r"\s+" else line, layout.sep)
        if k < len(f) and not _INT_RE.match(f[k].strip().strip('"')):
            return "str"
    return "int"


# ---------------------------------------------------------------------- readers (chunks of columns)
class _ReadError(ValueError):
    """A bad value found and located by mfrec itself (not the parser's error)."""


class _Retype(Exception):
    """An id column guessed integer holds a non-integer further on: read it as strings."""

    def __init__(self, column):
        self.column = column


class _TextReader:
    """CSV/TSV/``::`` text in byte ranges, by pyarrow's multithreaded CSV reader or pandas."""

    def __init__(self, inp, layout, engine):
        self.inp, self.layout, self.engine = inp, layout, engine
        self.columns = layout.names
        self.total = inp.size
        self.unit = "B"
        self._newlines = {}

    # -- positions and line numbers (computed on error only)
    def _ranges(self):
        size, start = self.inp.size, self.layout.data_start
        if self.engine == "pandas":
            yield start, size
            return
        with open(self.inp.path, "rb") as f:
            while start < size:
                end = min(start + _RANGE_BYTES, size)
                if end < size:
                    f.seek(end)
                    rest = f.readline()
                    end += len(rest)
                yield start, end
                start = end

    def _line_at(self, offset):
        """1-based line number of the line starting at byte ``offset``."""
        n = 1
        with open(self.inp.path, "rb") as f:
            left = offset
            while left > 0:
                block = f.read(min(left, 1 << 24))
                if not block:
                    break
                n += block.count(b"\n")
                left -= len(block)
        return n

    def _data_lines(self, a, b):
        """(line number, text) of the non-blank lines in bytes [a, b)."""
        n = self._line_at(a)
        with open(self.inp.path, "rb") as f:
            f.seek(a)
            pos = a
            for raw in f:
                if pos >= b:
                    break
                pos += len(raw)
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if text.strip():
                    yield n, text
                n += 1

    def where(self, a, b, skip=0):
        """Describe positions of a chunk (rows counted from the ``skip``-th data line at or
        after byte ``a``) as line numbers."""
        def describe(pos):
            want = set(int(p) + skip for p in pos)
            found = []
            for k, (n, text) in enumerate(self._data_lines(a, b)):
                if k in want:
                    found.append(f"line {n} ({text[:80]!r})")
                    if len(found) == len(want):
                        break
            return ", ".join(found)
        return describe

    def _bad_line(self, a, b, kinds, exc):
        """Raise the error for the first line in [a, b) that does not parse."""
        lay = self.layout
        width = len(lay.names)
        if lay.sample:
            width = len(_split(lay.sample[0].strip() if lay.sep == r"\s+" else lay.sample[0],
                               lay.sep))
        for n, text in self._data_lines(a, b):
            f = _split(text.strip() if lay.sep == r"\s+" else text, lay.sep)
            if len(f) != width:
                raise _ReadError(f"{self.inp.name}: line {n} has {len(f)} fields, expected "
                                 f"{width} ({text[:80]!r})")
            for k, kind in kinds.items():
                value = f[k].strip().strip('"')
                if kind in ("str", "int") and not value:
                    raise _ReadError(f"{self.inp.name}: line {n}: {lay.names[k]!r} is empty")
                if kind == "int" and not _INT_RE.match(value):
                    raise _Retype(k)
                if kind == "float" and not _is_number(value):
                    raise _ReadError(f"{self.inp.name}: line {n}: {lay.names[k]!r} must be a "
                                     f"number, got {value!r}")
        raise _ReadError(f"{self.inp.name}: cannot parse bytes {a}..{b}: {exc}")

    # -- chunks
    def chunks(self, cols, kinds):
        """Yield (describe, {column index: array}) for the columns ``cols``; ``self.done``
        says how many bytes are behind."""
        self.done = 0
        read = self._arrow_range if self.engine == "arrow" else self._pandas_range
        for a, b in self._ranges():
            pieces = iter(read(a, b, cols, kinds))
            skip = 0
            while True:
                try:
                    piece = next(pieces)
                except StopIteration:
                    break
                except (_ReadError, _Retype):
                    raise
                except (ValueError, TypeError, OverflowError) as exc:  # the parser's: find the line
                    self._bad_line(a, b, {k: kinds[k] for k in cols}, exc)
                    raise
                yield self.where(a, b, skip), piece
                skip += len(next(iter(piece.values())))
            self.done = max(self.done, b - self.layout.data_start)

    def _arrow_range(self, a, b, cols, kinds):
        import pyarrow as pa
        import pyarrow.csv as pacsv
        lay = self.layout
        width = len(lay.names)
        if lay.sample:
            width = len(_split(lay.sample[0].strip() if lay.sep == r"\s+" else lay.sample[0],
                               lay.sep))
        width = 2 * width - 1 if lay.sep == "::" else width
        phys = [f"f{j}" for j in range(width)]
        types = {"int": pa.int64(), "str": pa.string(), "float": pa.float64()}
        col_types = {phys[lay.physical[k]]: types[kinds[k]] for k in cols if kinds[k] in types}
        buf = pa.memory_map(str(self.inp.path)).read_at(b - a, a)  # zero-copy
        table = pacsv.read_csv(
            pa.BufferReader(buf),
            read_options=pacsv.ReadOptions(column_names=phys, use_threads=True,
                                           block_size=8 << 20),
            parse_options=pacsv.ParseOptions(delimiter=":" if lay.sep == "::" else lay.sep,
                                             ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types=col_types, include_columns=[phys[lay.physical[k]] for k in cols],
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True))
        del buf
        skip = 0
        for batch in table.to_batches():  # aligned columns, no concatenation copies
            out = {}
            for k in cols:
                col = batch.column(batch.schema.get_field_index(phys[lay.physical[k]]))
                if col.null_count:
                    first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                    raise _ReadError(f"{self.inp.name}: {lay.names[k]!r} is empty at "
                                     f"{self.where(a, b, skip)([first])}")
                out[k] = _arrow_to_column(col, kinds[k])
            skip += batch.num_rows
            yield out

    def _pandas_range(self, a, b, cols, kinds):
        import pandas as pd
        lay = self.layout
        dtypes = {"int": "int64", "str": "object", "float": "float64"}
        use = {lay.physical[k]: k for k in cols}
        reader = pd.read_csv(
            self.inp.path, sep=":" if lay.sep == "::" else lay.sep, header=None,
            skiprows=1 if lay.has_header else 0, usecols=sorted(use),
            dtype={p: dtypes[kinds[k]] for p, k in use.items() if kinds[k] in dtypes},
            keep_default_na=False, engine="c", skipinitialspace=True,
            na_values={p: ["", "nan", "NaN", "NAN", "-nan", "NA", "N/A", "null", "NULL"]
                       if kinds[k] == "float" else [""] for p, k in use.items()},
            chunksize=_CHUNK_ROWS, encoding_errors="replace")
        skip = 0
        for frame in reader:
            out = {}
            for p, k in use.items():
                col = frame[p]
                if kinds[k] != "float" and col.isna().any():
                    first = int(np.flatnonzero(col.isna().to_numpy())[0])
                    raise _ReadError(f"{self.inp.name}: {lay.names[k]!r} is empty at "
                                     f"{self.where(a, b, skip)([first])}")
                out[k] = col.to_numpy()
            skip += len(frame)
            yield out


class _NoSpool(Exception):
    """A column that cannot be kept in the spool file (not numbers): parse twice instead."""


class _Spooled:
    """A text reader parsed once: the first pass keeps its numeric columns in a temporary file
    (compact, outside the process's memory) and the second reads them back instead of parsing
    the text again."""

    def __init__(self, reader, want):
        self.reader, self.want = reader, want
        self.inp, self.total, self.unit = reader.inp, reader.total, reader.unit
        self.index, self.path, self.done = None, None, 0

    def chunks(self, cols, kinds):
        if self.index is not None:
            yield from self._replay(cols)
            return
        self.index = []
        fd, name = tempfile.mkstemp(prefix="mfrec-spool-", suffix=".tmp")
        self.path = Path(name)
        with os.fdopen(fd, "wb") as f:
            for where, piece in self.reader.chunks(self.want, kinds):
                entry = []
                for k in self.want:
                    a = piece[k]
                    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iuf":
                        raise _NoSpool()
                    if a.dtype == np.int64 and a.size and -2**31 <= a.min() and a.max() < 2**31:
                        a = a.astype(np.int32)  # ids: half the bytes to write and read back
                    elif a.dtype == np.float64:
                        with np.errstate(over="ignore"):
                            a32 = a.astype(np.float32)
                        if np.array_equal(a32, a):  # exact (ratings 1..5): half the bytes;
                            a = a32                 # else kept for the error message's values
                    entry.append((k, a.dtype, a.size))
                    a.tofile(f)
                self.index.append((where, entry))
                self.done = self.reader.done
                yield where, {k: piece[k] for k in cols}
        self.done = self.reader.done

    def _replay(self, cols):
        self.done = 0
        step = self.total / max(len(self.index), 1)
        with open(self.path, "rb") as f:
            for where, entry in self.index:
                out = {}
                for k, dtype, n in entry:
                    if k in cols:
                        out[k] = np.fromfile(f, dtype=dtype, count=n)
                    else:
                        f.seek(n * dtype.itemsize, os.SEEK_CUR)
                self.done += step
                yield where, out

    def close(self):
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


class _ParquetReader:
    """Parquet row groups through pyarrow (columns decoded in parallel), one at a time.

    ``iter_batches`` over the whole file buffers ahead (about 200 MB at 25M rows): row groups are
    read one by one instead, a large one in batches, without pre-buffering."""

    def __init__(self, inp):
        _pyarrow("reading Parquet")
        import pyarrow.parquet as pq
        try:
            self.file = pq.ParquetFile(inp.path, pre_buffer=False)
        except Exception as exc:  # pyarrow raises its own error types for broken files
            raise ValueError(f"{inp.name!r} is not a readable Parquet file: {exc}") from None
        self.inp = inp
        self.columns = list(self.file.schema_arrow.names)
        self.total = self.file.metadata.num_rows
        self.unit = "rows"

    def chunks(self, cols, kinds):
        names = [self.columns[k] for k in cols]
        row0 = self.done = 0
        for batch in self._batches(list(dict.fromkeys(names))):
            out = {}
            for k, name in zip(cols, names):
                col = batch.column(batch.schema.get_field_index(name))
                if col.null_count:
                    first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                    raise _ReadError(f"{self.inp.name}: column {name!r} is empty (null) at row "
                                     f"{row0 + first + 1}")
                out[k] = _arrow_to_column(col, kinds[k], name)
            row0 += batch.num_rows
            self.done = row0
            yield self.where(row0 - batch.num_rows), out

    def _batches(self, columns):
        meta = self.file.metadata
        for g in range(meta.num_row_groups):
            if meta.row_group(g).num_rows <= 4 * _CHUNK_ROWS:
                yield self.file.read_row_group(g, columns=columns, use_threads=True)
            else:
                yield from self.file.iter_batches(batch_size=_CHUNK_ROWS, row_groups=[g],
                                                  columns=columns, use_threads=True)

    def where(self, row0):
        return lambda pos: "row(s) " + ", ".join(str(row0 + int(p) + 1) for p in pos)


def _arrow_numpy(col):
    """A pyarrow numeric column as NumPy, zero-copy where possible. (``Array.to_numpy`` loads
    pandas, ~80 MB, on first use: the buffers are read directly instead.)"""
    import pyarrow as pa
    if isinstance(col, pa.ChunkedArray):
        parts = [_arrow_numpy(c) for c in col.chunks]
        return np.concatenate(parts) if len(parts) != 1 else parts[0]
    t = col.type
    code = ("i" if pa.types.is_signed_integer(t) else "u" if pa.types.is_unsigned_integer(t)
            else "f" if pa.types.is_floating(t) and t.bit_width > 16 else None)
    if code is None or col.null_count:
        return col.to_numpy(zero_copy_only=False)
    dtype = np.dtype(f"{code}{t.bit_width // 8}")
    return np.frombuffer(col.buffers()[1], dtype=dtype, count=len(col), offset=col.offset *
                         dtype.itemsize)


def _arrow_to_column(col, kind, name=None):
    """A pyarrow column as what the builder takes: NumPy numbers, or pyarrow strings for ids."""
    import pyarrow as pa
    import pyarrow.compute as pc
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode() if hasattr(col, "dictionary_decode") else pc.cast(
            col, t.value_type)
        t = col.type
    if kind in ("int", "str", "id"):
        if pa.types.is_integer(t):
            return _arrow_numpy(col)
        if pa.types.is_floating(t):
            v = _arrow_numpy(col)
            if not np.all(np.isfinite(v) & (v == np.round(v))):
                raise ValueError(f"column {name!r} holds non-integer numbers "
                                 f"{v[~(np.isfinite(v) & (v == np.round(v)))][:3].tolist()}; ids "
                                 f"must be integers or strings")
            return v.astype(np.int64)
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return col
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return pc.cast(col, pa.string())
        raise TypeError(f"column {name!r} has type {t}; ids must be integers or strings")
    if kind == "float":
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return _arrow_numpy(col)
        if pa.types.is_boolean(t):
            return col.to_numpy(zero_copy_only=False)
        raise TypeError(f"column {name!r} must be numeric ratings, got type {t}")
    # timestamps: numbers and datetimes as NumPy; anything else as it comes
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _arrow_numpy(col)
    return col.to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------- ids: two-pass encoding
class _IdColumn:
    """Pass 1 collects the distinct ids of a column (and how often each occurs); pass 2 turns
    chunks into codes of the sorted vocabulary. Integer ids stay integers (a presence table, or
    sorted uniques when sparse), strings are hashed by pyarrow (or pandas without it)."""

    def __init__(self, name, vocab=None):
        self.name, self.vocab = name, vocab
        self.kind = None
        self.table = None           # int ids, dense: counts by raw id
        self.uniq = self.cnt = None  # int ids, sparse: sorted uniques and their counts
        self.parts = []             # string ids: (values, counts) per chunk
        self.dtype = None
        self.rows = 0

    def add(self, col):
        if self.vocab is not None:
            codes = self.vocab.lookup(_plain(col), unknown="error")
            c = np.bincount(codes, minlength=len(self.vocab))
            self.table = c if self.table is None else self.table + c
            return
        if isinstance(col, np.ndarray) and col.dtype.kind in "iu":
            self._add_ints(col)
        else:
            self._add_strings(col)
        self.rows += len(col)

    def _add_ints(self, col):
        if self.kind == "str":
            raise TypeError(f"{self.name} ids change type in the data (str, then int)")
        self.kind = "int"
        self.dtype = col.dtype if self.dtype is None else np.promote_types(self.dtype, col.dtype)
        if col.size == 0:
            return
        lo, hi = int(col.min()), int(col.max())
        limit = 4 * (self.rows + col.size) + (1 << 20)
        if self.uniq is None and lo >= 0 and hi < limit:
            c = np.bincount(col, minlength=0 if self.table is None else self.table.size)
            if self.table is not None and c.size > self.table.size:
                c[:self.table.size] += self.table
                self.table = c
            elif self.table is not None:
                self.table += c
            else:
                self.table = c
            return
        if self.table is not None:  # too sparse for a table after all: keep uniques instead
            self.uniq = np.flatnonzero(self.table)
            self.cnt = self.table[self.uniq]
            self.table = None
        u, c = np.unique(col, return_counts=True)
        if self.uniq is not None:
            u, inv = np.unique(np.concatenate([self.uniq, u]), return_inverse=True)
            c = np.bincount(inv, weights=np.concatenate([self.cnt, c])).astype(np.int64)
        self.uniq, self.cnt = u, c

    def _add_strings(self, col):
        if self.kind == "int":
            raise TypeError(f"{self.name} ids change type in the data (int, then str)")
        self.kind = "str"
        if isinstance(col, np.ndarray):  # the pandas reader's object column
            import pandas as pd
            vc = pd.Series(col).value_counts(sort=False)
            self.parts.append((vc.index.to_numpy(), vc.to_numpy()))
        else:
            import pyarrow.compute as pc
            vc = pc.value_counts(col)
            self.parts.append((vc.field("values"), vc.field("counts")))
        if len(self.parts) > 16:
            self.parts = [self._merge()]

    def _merge(self):
        values = [v for v, _ in self.parts]
        counts = [c for _, c in self.parts]
        if isinstance(values[0], np.ndarray):
            import pandas as pd
            s = pd.Series(np.concatenate(counts), index=np.concatenate(values))
            s = s.groupby(level=0, sort=True).sum()
            return s.index.to_numpy(), s.to_numpy()
        import pyarrow as pa
        import pyarrow.compute as pc
        t = pa.table({"v": pa.chunked_array(values).combine_chunks(),
                      "c": pa.chunked_array(counts).combine_chunks()})
        t = t.group_by("v").aggregate([("c", "sum")])
        order = pc.sort_indices(t.column("v"))
        return t.column("v").take(order).combine_chunks(), t.column("c_sum").take(order)

    def finish(self):
        """(Vocabulary, counts in vocabulary order)."""
        if self.vocab is not None:
            return self.vocab, self.table
        if self.kind is None:  # no data at all
            return Vocabulary(np.empty(0, np.int64), name=self.name), None
        if self.kind == "int" and self.table is not None:
            self._code_of = np.cumsum(self.table > 0, dtype=np.int64) - 1
            ids = np.flatnonzero(self.table)
            counts = self.table[ids]
            self._code_of = self._code_of.astype(np.int32 if ids.size < 2**31 else np.int64)
            self.table = None
            return Vocabulary(ids.astype(self.dtype), name=self.name), counts
        if self.kind == "int":
            return Vocabulary(self.uniq.astype(self.dtype), name=self.name), self.cnt
        values, counts = self._merge()
        self.parts = []
        self._values = values
        if not isinstance(values, np.ndarray):  # pyarrow strings: keep them for index_in
            self._arrow_values = values
            ids = np.empty(len(values), dtype=object)
            ids[:] = values.to_pylist()
            values, counts = ids, _arrow_numpy(counts)
        return Vocabulary(np.asarray(values, dtype=object), name=self.name), counts.astype(
            np.int64)

    def encode(self, col, vocab):
        """Codes (int32) of one chunk in the finished vocabulary."""
        if self.vocab is not None:
            return vocab.lookup(_plain(col), unknown="error").astype(np.int32)
        if self.kind == "int":
            if isinstance(col, np.ndarray) and col.dtype.kind in "iu":
                if hasattr(self, "_code_of"):
                    if col.size and (col.min() < 0 or col.max() >= self._code_of.size):
                        raise ValueError("the data changed while it was read: new ids appeared")
                    return self._code_of[col]
                idx = np.searchsorted(vocab.ids, col)
                ok = idx < len(vocab)
                ok[ok] = vocab.ids[idx[ok]] == col[ok]
                if not ok.all():
                    raise ValueError("the data changed while it was read: new ids appeared")
                return idx.astype(np.int32)
            raise TypeError(f"{self.name} ids change type in the data (int, then str)")
        if isinstance(col, np.ndarray):
            import pandas as pd
            codes = pd.Index(self._values).get_indexer(col)
        else:
            import pyarrow.compute as pc
            codes = _arrow_numpy(pc.fill_null(pc.index_in(col, value_set=self._arrow_values), -1))
        if (codes < 0).any():
            raise ValueError("the data changed while it was read: new ids appeared")
        return codes.astype(np.int32)


def _plain(col):
    return col if isinstance(col, np.ndarray) else col.to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------- the builder
def _open_reader(inp, *, sep, header, names, fmt, engine):
    with open(inp.path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    suffix = Path(inp.name).suffix.lower()
    if fmt == "parquet" or (fmt == "auto" and (suffix in (".parquet", ".pq")
                                               or head[:4] == b"PAR1")):
        if names is not None:
            raise ValueError("names= applies to text files; a Parquet file names its columns "
                             "(use user_col=, item_col=, ... to choose them)")
        return _ParquetReader(inp)
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:4] == b"\x28\xb5\x2f\xfd":
        raise ValueError(f"{inp.name!r} is compressed; decompress it first (e.g. "
                         f"`gunzip -c FILE | mfrec fit - ...`)")
    if not head.strip():
        raise ValueError(f"{inp.name!r} is empty")
    if fmt == "movielens" and sep is None and b"::" in head.split(b"\n", 1)[0]:
        sep = "::"
    layout = _sniff_text(inp, head, sep, header, names, fmt)
    if engine is None:
        engine = "arrow" if _pyarrow() is not None and layout.sep != r"\s+" else "pandas"
    return _TextReader(inp, layout, engine)


def _roles(reader, user_col, item_col, rating_col, timestamp_col, inp):
    cols = reader.columns
    text = isinstance(reader, _TextReader)
    used = match_columns(cols, user_col=user_col, item_col=item_col, rating_col=rating_col,
                         timestamp_col=timestamp_col, what=repr(inp.name),
                         how="names=[...] or --names user,item,rating; or user_col=, item_col="
                         if text else "user_col=, item_col=, rating_col=")
    index = {role: (None if c is None else cols.index(c)) for role, c in used.items()}
    if text and not reader.layout.has_header:
        source = {role: (None if k is None else f"column {k + 1}") for role, k in index.items()}
    else:
        source = {role: (None if c is None else str(c)) for role, c in used.items()}
    return index, source


def _kinds(reader, index):
    kinds = {}
    for role in ("user", "item"):
        k = index[role]
        kinds[k] = _guess_id_type(reader.layout, k) if isinstance(reader, _TextReader) else "id"
    if index["rating"] is not None:
        kinds[index["rating"]] = "float"
    if index["timestamp"] is not None:
        kinds[index["timestamp"]] = "any"
    return kinds


class _Progress:
    def __init__(self, progress, total, unit, name):
        self.done, self.total, self.bar, self.call = 0, total, None, None
        if callable(progress):
            self.call = progress
        elif progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, unit=unit, unit_scale=True, desc=f"reading {name}",
                            leave=False, file=sys.stderr)

    def __call__(self, done):
        if self.bar is not None:
            self.bar.update(done - self.done)
        self.done = done
        if self.call is not None:
            self.call(self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.close()


_DONE = object()


def _prefetch(items, depth=1):
    """Iterate over ``items`` while a worker thread makes the next ``depth`` of them.

    The readers' chunks come from pyarrow (which decodes without the GIL) and are consumed by
    NumPy and Numba code (the kernels release the GIL too), so on two or more cores reading the
    next chunk overlaps with encoding and placing this one instead of waiting for it. At most
    ``depth`` chunks wait in the queue, so memory stays bounded by the chunk size. An exception
    of the producer (a bad row, a broken file) is raised here, in the consumer, unchanged; when
    the consumer stops early the worker stops at its next chunk.
    """
    import queue

    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry):
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as exc:  # handed to the consumer, which raises it
            put((False, exc))

    worker = threading.Thread(target=work, name="mfrec-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _build(reader, index, kinds, *, duplicates, user_vocab, item_vocab, source, progress):
    uk, ik, rk, tk = (index[r] for r in _CANON)
    users, items = _IdColumn("user", user_vocab), _IdColumn("item", item_vocab)
    bar = _Progress(progress, 2 * reader.total, reader.unit, getattr(reader, "inp").name)
    try:
        # pass 1: ids and per-user counts
        for _, cols in _prefetch(reader.chunks([uk, ik], kinds)):
            users.add(cols[uk])
            items.add(cols[ik])
            bar(reader.done)
        bar(reader.total)
        user_vocab, counts = users.finish()
        item_vocab, _ = items.finish()
        nnz = int(counts.sum()) if counts is not None else 0
        if nnz == 0:
            raise ValueError(f"{reader.inp.name!r} holds no ratings")
        # pass 2: codes and values, placed at their final position chunk by chunk
        want = [k for k in (uk, ik, rk, tk) if k is not None]
        small = nnz < _KERNEL_MIN_NNZ
        fill, parts, use_fill = None, [], None
        for where, cols in _prefetch(reader.chunks(want, kinds)):
            u = users.encode(cols[uk], user_vocab)
            i = items.encode(cols[ik], item_vocab)
            v = (np.ones(u.size, np.float32) if rk is None
                 else _check_values(cols[rk], f"ratings ({source['rating']})", where=where))
            t = None if tk is None else np.asarray(cols[tk])
            if use_fill is None:  # the kernels take numbers; other timestamps go the NumPy way
                use_fill = not small and (t is None or t.dtype.kind in "iufM")
            if use_fill:
                if fill is None:
                    fill = _CsrFill(counts, len(item_vocab), t)
                fill.add(u, i, v, t)
            else:
                parts.append((u, i, v, t))
            bar(reader.total + reader.done)
        bar(2 * reader.total)
    finally:
        bar.close()
    if fill is not None:
        indptr, cols_, vals, ts = fill.finish(duplicates, user_vocab, item_vocab)
        del fill
        return Ratings._from_csr(indptr, cols_, vals, user_vocab=user_vocab,
                                 item_vocab=item_vocab, timestamps=ts, source_columns=source)
    u, i, v, t = (np.concatenate(p) if p[0] is not None else None for p in zip(*parts))
    return Ratings(u, i, v, user_vocab=user_vocab, item_vocab=item_vocab, timestamps=t,
                   duplicates=duplicates, source_columns=source)


def _check_options(format, header, duplicates=None):
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if header not in ("infer", True, False):
        raise ValueError(f"header must be 'infer', True or False, got {header!r}")
    if duplicates is not None and duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")


def read_ratings(path, *, sep=None, header="infer", names=None, format="auto", user_col="auto",
                 item_col="auto", rating_col="auto", timestamp_col="auto", duplicates="error",
                 user_vocab=None, item_vocab=None, progress=False, engine=None):
    """Read a ratings file into :class:`~mfrec.data.Ratings`.

    Parameters
    ----------
    path : str, Path, "-" or binary file object
        CSV, TSV, whitespace-separated, Parquet or MovieLens (``u.data``, ``ratings.dat``,
        ``ratings.csv``) data. ``"-"`` reads standard input; pipes and ``<(...)`` work too.
    sep : str, optional
        Field separator; detected from the first line when omitted (``::``, tab, comma,
        semicolon, pipe, whitespace).
    header : {"infer", True, False}, default="infer"
        Whether the first line names the columns. ``"infer"`` takes a first line holding no
        number as a header.
    names : list of str, optional
        Column names of a text file, in order (overrides the header).
    format : {"auto", "csv", "tsv", "parquet", "movielens"}, default="auto"
        ``"auto"`` knows Parquet by its name or first bytes.
    user_col, item_col, rating_col, timestamp_col : str, None or "auto", default="auto"
        Which columns to use, as for :meth:`Ratings.from_frame`. ``"auto"`` recognises the
        common spellings (``userId``, ``user_id``, ``movieId``, ``item_id``, ``score``,
        ``count``, ...; :data:`mfrec.data.COLUMN_ALIASES`) and refuses to guess when a header
        names no user or item column. A file without a header and 2 to 4 columns reads as user,
        item[, rating[, timestamp]]; ``rating_col=None`` (or a file with no rating column) gives
        interactions of strength 1.
    duplicates : {"error", "mean", "last", "sum"}, default="error"
    user_vocab, item_vocab : Vocabulary, optional
        Fixed vocabularies (ids they lack raise ``KeyError``).
    progress : bool or callable, default=False
        Show a progress bar (tqdm, on stderr), or call ``progress(done, total)`` after each chunk
        (bytes of text or rows of Parquet; each pass counts once, so ``total`` is twice the
        size).
    engine : {None, "arrow", "pandas"}, default=None
        Text parser: pyarrow's when installed (multithreaded), else pandas'.

    Returns
    -------
    Ratings
        With ``source_columns`` saying which columns were used. Ids that are all integers stay
        integers.

    Raises
    ------
    ValueError
        Naming the line (text) or row (Parquet) of a value that cannot be read: a wrong number
        of fields, a rating that is not a number, not finite in float32 or beyond
        :data:`mfrec.data.MAX_ABS_RATING`, an empty id.
    """
    _check_options(format, header, duplicates)
    if engine not in (None, "arrow", "pandas"):
        raise ValueError(f"engine must be None, 'arrow' or 'pandas', got {engine!r}")
    if engine == "arrow":
        _pyarrow("engine='arrow'")
    with _Input(path) as inp:
        reader = _open_reader(inp, sep=sep, header=header, names=names, fmt=format, engine=engine)
        index, source = _roles(reader, user_col, item_col, rating_col, timestamp_col, inp)
        kinds = _kinds(reader, index)
        spool = isinstance(reader, _TextReader)
        for _ in range(4):
            want = [k for k in index.values() if k is not None]
            src = _Spooled(reader, want) if spool and all(
                kinds[k] != "str" for k in want) else reader
            try:
                return _build(src, index, kinds, duplicates=duplicates, user_vocab=user_vocab,
                              item_vocab=item_vocab, source=source, progress=progress)
            except _Retype as exc:  # ids that looked like integers but are not: strings
                kinds[exc.column] = "str"
            except _NoSpool:  # timestamps that are not numbers: parse twice
                spool = False
            finally:
                if src is not reader:
                    src.close()
                _release_arrow_memory()
        raise AssertionError("unreachable: two id columns change type, spooling stops once")


def _release_arrow_memory():
    """Hand the memory Arrow's allocator kept from reading back to the OS: the chunks are
    freed by now, but mimalloc and jemalloc hold freed pages for reuse (74 MB after a 25M-row
    Parquet file here, about 3 bytes per rating that every fit after it would carry)."""
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        try:
            pa.default_memory_pool().release_unused()
        except (AttributeError, NotImplementedError):  # older pyarrow, or a pool without it
            pass


def read_frame(path, *, sep=None, header="infer", names=None, format="auto", user_col="auto",
               item_col="auto", rating_col="auto", timestamp_col="auto", engine=None):
    """Read a ratings file into a DataFrame with columns user, item[, rating][, timestamp].

    The same reading as :func:`read_ratings` (see it for the parameters), kept as a table:
    one row per line, in file order, duplicates and all.

    Returns
    -------
    pandas.DataFrame
        ``attrs["source_columns"]`` says which columns of the file were used.
    """
    import pandas as pd
    _check_options(format, header)
    with _Input(path) as inp:
        reader = _open_reader(inp, sep=sep, header=header, names=names, fmt=format, engine=engine)
        index, source = _roles(reader, user_col, item_col, rating_col, timestamp_col, inp)
        kinds = _kinds(reader, index)
        want = {role: k for role, k in index.items() if k is not None}
        for _ in range(3):
            try:
                parts = {role: [] for role in want}
                for where, cols in reader.chunks(list(want.values()), kinds):
                    for role, k in want.items():
                        col = _plain(cols[k])
                        if role == "rating":
                            col = _check_values(col, f"ratings ({source['rating']})", where)
                        parts[role].append(col)
                break
            except _Retype as exc:
                kinds[exc.column] = "str"
    frame = pd.DataFrame({role: np.concatenate(p) if p else np.empty(0) for role, p in
                          parts.items()})
    frame.attrs["source_columns"] = source
    return frame
