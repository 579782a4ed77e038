"""What every command shares: the parser class, option groups, reading data, printing.

Only the standard library is imported here at module level: ``mfrec --help`` builds every
command's parser, and must not pay for NumPy, pandas or Numba.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in the command line: exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


# ---------------------------------------------------------------------- parser
def _data_options(p):
    g = p.add_argument_group("data file options (detected when omitted)")
    g.add_argument("--sep", help="field separator: ',', 'tab', 'space', '::', '|', ...")
    g.add_argument("--header", choices=("infer", "yes", "no"), default="infer",
                   help="whether the first line names the columns (default: infer)")
    g.add_argument("--names", help="column names, e.g. user,item,rating,timestamp")
    g.add_argument("--format", dest="fmt", default="auto",
                   choices=("auto", "csv", "tsv", "parquet", "movielens", "adjacency"),
                   help="adjacency: 'user item item ...' lines (LightGCN/NGCF train.txt), "
                        "read as binary interactions")
    g.add_argument("--duplicates", default="error", choices=("error", "mean", "last", "sum"),
                   help="repeated (user, item) pairs: fail (default) or combine")


def _output_options(p):
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")


def _model_options(p):
    p.add_argument("-m", "--model", required=True,
                   help="model name (see 'mfrec models'), e.g. biased-mf, als, svdpp, bpr")
    p.add_argument("--seed", type=int, help="random_state of the model, folds and holdouts")
    p.add_argument("--threads", type=int, help="num_threads of the model (default: all cores)")


def _parse_value(text):
    """Command-line text -> None, bool, int, float or str."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


# ---------------------------------------------------------------------- helpers
def _progress(args):
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _note(args, text):
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        print(text, file=sys.stderr)


def _read(path, args):
    from ..io import read_ratings
    if args.fmt == "adjacency":
        from ..datasets import load_adjacency
        return load_adjacency(path)
    sep = args.sep
    if sep is not None:
        sep = {"tab": "\t", "\\t": "\t", "comma": ",", "space": r"\s+", "whitespace": r"\s+",
               "semicolon": ";", "pipe": "|"}.get(sep.lower(), sep)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    header = {"infer": "infer", "yes": True, "no": False}[args.header]
    ratings = read_ratings(path, sep=sep, header=header, names=names, format=args.fmt,
                           duplicates=args.duplicates, progress=_progress(args))
    _note(args, _columns_line(path, ratings))
    return ratings


def _columns_line(path, ratings):
    """The one line saying which columns of a file were read as what (mfrec does not guess
    silently: this shows what it recognised)."""
    used = ratings.source_columns or {}
    parts = [f"{role} <- {col!r}" for role, col in used.items() if col is not None]
    if used.get("rating") is None:
        parts.append("no rating column: each row counts 1")
    name = "<stdin>" if str(path) == "-" else path
    return (f"read {name}: {ratings.nnz} ratings, {ratings.n_users} users x {ratings.n_items} "
            f"items; columns {', '.join(parts)}")


def _jsonable(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _print_json(obj):
    print(json.dumps(obj, indent=2, default=_jsonable))


def _coerce_ids(texts, vocab):
    """Command-line id strings -> values of the type the model's ids have."""
    import numpy as np
    ids = vocab.ids
    kind = ids.dtype.kind
    if kind == "O" and len(ids):
        first = ids[0]
        kind = "i" if isinstance(first, (int, np.integer)) else "f" if isinstance(
            first, (float, np.floating)) else "U"
    out = []
    for t in texts:
        t = str(t).strip()
        try:
            out.append(int(t) if kind in "iu" else float(t) if kind == "f" else t)
        except ValueError:
            out.append(t)  # cannot be one of the model's ids: reported as unknown
    return out


def _read_labels(path, vocab):
    """Item id -> name for the model's item ids, from :func:`mfrec.datasets.read_item_labels`."""
    from ..datasets import read_item_labels
    labels = read_item_labels(path)
    return dict(zip(_coerce_ids(list(labels), vocab), labels.values()))


def _table(rows, columns, aligns=None):
    """Plain aligned text table."""
    cells = [[str(c) for c in columns]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(columns))]
    aligns = aligns or ["<"] * len(columns)
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(f"{v:{a}{w}}" for v, a, w in zip(row, aligns, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v, digits=4):
    import numpy as np
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def _metric_list(text):
    from ..evaluation.cross_validation import parse_metrics
    if text is None:
        return None
    try:
        return parse_metrics(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_outputs(*paths, saved=None):
    """Fail before any work when an output folder does not exist, or when ``saved`` (a file
    that mfrec's atomic save will replace: a model, recommendations for all users) is not a
    regular file or a new name: ``-o /dev/null`` fails at once, not after the training."""
    for path in paths + (saved,):
        if path:
            folder = Path(path).parent
            if str(folder) and not folder.is_dir():
                raise FileNotFoundError(f"cannot write {str(path)!r}: folder {str(folder)!r} "
                                        f"does not exist")
    if saved:
        from ..persist import save_target
        save_target(saved)


def _load_model(path):
    from ..persist import load
    return load(path)



def _require_plot(path):
    """Fail before any work when ``--plot`` is given and matplotlib is missing."""
    if path:
        import importlib.util
        try:
            found = importlib.util.find_spec("matplotlib") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ImportError("--plot needs matplotlib, which is not installed: "
                              "pip install 'mfrec[plot]'")
