"""Files to :class:`~mfrec.data.Ratings`: CSV/TSV (with or without header), Parquet, and the
MovieLens formats (``u.data``, ``ratings.dat`` with ``::``, ``ratings.csv``)."""
from __future__ import annotations

import re
from pathlib import Path

from .data import Ratings

__all__ = ["read_frame", "read_ratings", "FORMATS"]

FORMATS = ("auto", "csv", "tsv", "parquet", "movielens")

# Header names that mean user / item / rating / timestamp (MovieLens, Netflix, Amazon, ...).
_ALIASES = {
    "user": ("user", "user_id", "userid", "uid", "users", "customer", "customer_id", "reviewerid"),
    "item": ("item", "item_id", "itemid", "iid", "movie", "movie_id", "movieid", "product",
             "product_id", "asin", "track", "artist", "items"),
    "rating": ("rating", "ratings", "score", "stars", "value", "count", "plays", "weight"),
    "timestamp": ("timestamp", "time", "ts", "date", "datetime", "unixreviewtime"),
}
_CANON = ("user", "item", "rating", "timestamp")


def _open_text_head(path, n=4096):
    with open(path, "rb") as f:
        head = f.read(n)
    return head.decode("utf-8", errors="replace")


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def _detect(path, head, sep, fmt):
    """(format, separator) of a text file from its name and first bytes."""
    name = Path(path).name.lower()
    if fmt == "auto":
        if name.endswith((".parquet", ".pq")):
            return "parquet", None
        if "::" in head.split("\n", 1)[0]:
            return "movielens", "::"
    if fmt == "parquet":
        return "parquet", None
    if sep is not None:
        return ("movielens" if sep == "::" else fmt if fmt != "auto" else "csv"), sep
    if fmt == "tsv":
        return "tsv", "\t"
    first = head.split("\n", 1)[0]
    if fmt == "movielens" and "::" in first:
        return "movielens", "::"
    for cand in ("\t", ",", ";", "|"):
        if cand in first:
            return ("tsv" if cand == "\t" else "csv"), cand
    if re.search(r"\S\s+\S", first):
        return "csv", r"\s+"
    return "csv", ","


def _canonical_columns(columns):
    """Map header names onto user/item/rating/timestamp where they are recognisable."""
    mapping = {}
    lowered = {c: str(c).strip().lower() for c in columns}
    for canon, aliases in _ALIASES.items():
        for col, low in lowered.items():
            if col not in mapping and low in aliases:
                mapping[col] = canon
                break
    return mapping


def read_frame(path, *, sep=None, header="infer", names=None, format="auto"):
    """Read a ratings file into a DataFrame with columns user, item[, rating][, timestamp].

    Parameters
    ----------
    path : str or Path
        CSV, TSV, whitespace-separated, Parquet or MovieLens (``u.data``, ``ratings.dat``,
        ``ratings.csv``) file.
    sep : str, optional
        Field separator; detected from the first line when omitted (``::``, tab, comma,
        semicolon, pipe, whitespace).
    header : {"infer", True, False}, default="infer"
        Whether the first line names the columns. ``"infer"`` takes a first line whose first
        two fields are not both numbers as a header.
    names : list of str, optional
        Column names to use (overrides the header). Names must include ``user`` and ``item``.
    format : {"auto", "csv", "tsv", "parquet", "movielens"}, default="auto"

    Returns
    -------
    pandas.DataFrame
        A headerless file of 2, 3 or 4 columns reads as user, item[, rating[, timestamp]].
    """
    import pandas as pd  # lazily: see mfrec.data._pandas

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; give a ratings file "
                                f"(for MovieLens folders use mfrec.datasets.load_movielens)")
    if header not in ("infer", True, False):
        raise ValueError(f"header must be 'infer', True or False, got {header!r}")
    head = "" if path.suffix.lower() in (".parquet", ".pq") else _open_text_head(path)
    fmt, sep = _detect(path, head, sep, format)
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise ImportError("reading Parquet needs pyarrow: pip install 'mfrec[parquet]'") from exc
        has_header = True
    else:
        first = head.split("\n", 1)[0].rstrip("\r")
        if not first.strip():
            raise ValueError(f"{str(path)!r} is empty")
        splitter = re.compile(sep) if sep == r"\s+" else None
        fields = splitter.split(first.strip()) if splitter else first.split(sep)
        if header == "infer":
            has_header = not all(_is_number(f.strip().strip('"')) for f in fields[:2])
            # string ids with no header: a header line names columns we can recognise
            if has_header and names is None and not _canonical_columns(
                    [f.strip().strip('"') for f in fields]):
                has_header = len(fields) >= 2 and not any(_is_number(f) for f in fields)
        else:
            has_header = bool(header)
        if fmt == "movielens" and sep == "::":
            # "::" would force pandas' slow python engine; ":" with the empty fields skipped
            # is the fast C parser on the same bytes.
            frame = pd.read_csv(path, sep=":", header=0 if has_header else None, engine="c")
            frame = frame.iloc[:, ::2]
            if not has_header:
                frame.columns = list(range(frame.shape[1]))
        else:
            frame = pd.read_csv(path, sep=sep, header=0 if has_header else None,
                                engine="c", skipinitialspace=True)
    if names is not None:
        names = list(names)
        if len(names) != frame.shape[1]:
            raise ValueError(f"names has {len(names)} entries but {str(path)!r} has "
                             f"{frame.shape[1]} columns")
        frame.columns = names
    elif has_header:
        mapping = _canonical_columns(frame.columns)
        if "user" not in mapping.values() or "item" not in mapping.values():
            # an unrecognised header: take columns by position as user, item, rating, timestamp
            mapping = {c: _CANON[k] for k, c in enumerate(frame.columns[:4])}
        frame = frame.rename(columns=mapping)
    else:
        if frame.shape[1] < 2:
            raise ValueError(f"{str(path)!r} has {frame.shape[1]} column(s); a ratings file needs "
                             f"at least user and item")
        frame.columns = list(_CANON[:min(4, frame.shape[1])]) + [
            f"col{k}" for k in range(4, frame.shape[1])]
    for col in ("user", "item"):
        if col not in frame.columns:
            raise ValueError(f"{str(path)!r} has no {col} column (columns: {list(frame.columns)}); "
                             f"pass names=[...]")
    keep = [c for c in _CANON if c in frame.columns]
    return frame[keep]


def read_ratings(path, *, sep=None, header="infer", names=None, format="auto",
                 duplicates="error", user_vocab=None, item_vocab=None):
    """Read a ratings file into :class:`~mfrec.data.Ratings` (see :func:`read_frame`).

    A file without a rating column gives interactions of strength 1.
    """
    frame = read_frame(path, sep=sep, header=header, names=names, format=format)
    return Ratings.from_frame(frame, rating_col="rating" if "rating" in frame.columns else None,
                              duplicates=duplicates, user_vocab=user_vocab, item_vocab=item_vocab)
