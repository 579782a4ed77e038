"""The shell face of mfrec: parses arguments, calls the library, prints.

Commands: ``fit``, ``evaluate``, ``cv``, ``tune``, ``recommend``, ``similar``, ``info``,
``models``, ``demo``. Exit codes: 0 success, 1 runtime error (bad data, unreadable file, ...),
2 usage error (unknown option, model or hyperparameter, bad value). User errors print one
``mfrec: error: ...`` line, not a traceback (``--debug`` or ``MFREC_DEBUG=1`` shows it).

Hyperparameters are options named after the model's parameters, dashes or underscores alike:
``mfrec fit u.data --model biased-mf --n-factors 50 --regularization 0.05 -o movies.mfrec``.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path

from ._version import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

# commands whose extra --options are model hyperparameters
_MODEL_COMMANDS = ("fit", "cv", "tune")

# mfrec cv --split NAME -> (split function name, fixed arguments, takes --test-size, random)
_SPLITS = {
    "kfold": (None, {}, False, True),
    "holdout": ("train_test_split", {}, True, True),
    "user": ("user_split", {}, True, True),
    "loo": ("leave_one_out_split", {"strategy": "random"}, False, True),
    "loo-latest": ("leave_one_out_split", {"strategy": "latest"}, False, True),
    "temporal": ("temporal_split", {}, True, False),
    "user-temporal": ("user_temporal_split", {}, True, False),
}


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
                   choices=("auto", "csv", "tsv", "parquet", "movielens"))
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


def build_parser():
    parser = _Parser(prog="mfrec", description="Matrix-factorization recommenders.",
                     epilog="Hyperparameters are given as options named after the model's "
                            "parameters, e.g. --n-factors 50 --regularization 0.05. "
                            "Run 'mfrec models' for the models and 'mfrec COMMAND -h' for help.")
    parser.add_argument("--version", action="version", version=f"mfrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("fit", help="fit a model to a ratings file and save it",
                       description="Fit a model and save it to one file (-o).", allow_abbrev=False)
    p.add_argument("data", metavar="DATA", help="ratings file (user, item, rating[, timestamp])")
    _model_options(p)
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="where to save the model (e.g. movies.mfrec)")
    p.add_argument("--validation", metavar="FRACTION|FILE",
                   help="hold out this fraction of DATA (or read this file) as validation data "
                        "for the progress bar and early stopping")
    p.add_argument("--plot", metavar="FILE.png", help="write learning curve and item map")
    p.add_argument("--labels", metavar="FILE", help="item names for the plot (id, name)")
    _data_options(p)
    _output_options(p)

    p = sub.add_parser("evaluate", help="score a saved model on held-out ratings",
                       allow_abbrev=False)
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--metrics", help="comma-separated, e.g. rmse,mae,ndcg@10 (default: rating "
                                     "and ranking metrics for rating models)")
    p.add_argument("--include-seen", action="store_true",
                   help="ranking metrics: do not exclude the training items")
    _data_options(p)
    _output_options(p)

    p = sub.add_parser("cv", help="cross-validate a model", allow_abbrev=False)
    p.add_argument("data", metavar="DATA")
    _model_options(p)
    p.add_argument("--folds", type=int, default=5,
                   help="number of folds, or of repetitions of a random --split (default: 5)")
    p.add_argument("--split", default="kfold", choices=tuple(_SPLITS),
                   help="how test parts are drawn: kfold (default); holdout (random ratings); "
                        "user (per-user holdout); loo, loo-latest (leave one out per user, "
                        "random or newest); temporal (global cut in time); user-temporal "
                        "(each user's newest ratings)")
    p.add_argument("--test-size", default="0.2", metavar="SIZE",
                   help="for holdout, user, temporal, user-temporal: a fraction, or a count "
                        "per user for user and user-temporal (default: 0.2)")
    p.add_argument("--metrics", help="comma-separated, e.g. rmse,mae,ndcg@10")
    p.add_argument("--validation", type=float, metavar="FRACTION",
                   help="hold this fraction of each training part out for early stopping")
    p.add_argument("--drop-unseen", action="store_true",
                   help="drop test ratings of users/items without training ratings (default: "
                        "keep them, scored with the model's fallback)")
    p.add_argument("--csv", metavar="FILE", help="also write the results table as CSV")
    p.add_argument("--plot", metavar="FILE.png", help="write a chart of the results")
    _data_options(p)
    _output_options(p)

    p = sub.add_parser("tune", help="grid or random search of hyperparameters",
                       allow_abbrev=False,
                       description="Cross-validated search. Example: mfrec tune u.data "
                                   "--model biased-mf --grid n_factors=20,50 "
                                   "regularization=0.02,0.05")
    p.add_argument("data", metavar="DATA")
    _model_options(p)
    p.add_argument("--grid", nargs="+", action="extend", required=True, metavar="NAME=VALUES",
                   help="NAME=V1,V2,... (a list) or, with --random, NAME=LOW:HIGH[:log] "
                        "(a range)")
    p.add_argument("--random", type=int, metavar="N", help="try N random candidates instead "
                                                            "of the whole grid")
    p.add_argument("--folds", type=int, default=3, help="number of folds (default: 3)")
    p.add_argument("--scoring", help="metric that picks the best (default: the first metric)")
    p.add_argument("--metrics", help="comma-separated, e.g. rmse,mae")
    p.add_argument("--validation", type=float, metavar="FRACTION",
                   help="hold this fraction of each training part out for early stopping")
    p.add_argument("-o", "--output", metavar="MODEL", help="refit the best model on all DATA "
                                                          "and save it here")
    p.add_argument("--csv", metavar="FILE", help="also write all results as CSV")
    p.add_argument("--plot", metavar="FILE.png", help="write a chart of the candidates")
    _data_options(p)
    _output_options(p)

    p = sub.add_parser("recommend", help="top-N items for users of a saved model",
                       allow_abbrev=False)
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("-u", "--user", action="append", metavar="ID", help="user id (repeatable)")
    p.add_argument("--users", metavar="FILE", help="file of user ids, one per line (or the "
                                                   "first column of a CSV); writes CSV")
    p.add_argument("-n", type=int, default=10, help="items per user (default: 10)")
    p.add_argument("--include-seen", action="store_true", help="also recommend items the user "
                                                               "rated in training")
    p.add_argument("-o", "--output", metavar="FILE.csv", help="write CSV here (default stdout)")
    p.add_argument("--labels", metavar="FILE", help="item names (id, name), e.g. ml-100k/u.item")
    _output_options(p)

    p = sub.add_parser("similar", help="items most similar to an item", allow_abbrev=False)
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("-i", "--item", action="append", required=True, metavar="ID",
                   help="item id (repeatable)")
    p.add_argument("-n", type=int, default=10, help="similar items per item (default: 10)")
    p.add_argument("--labels", metavar="FILE", help="item names (id, name)")
    _output_options(p)

    p = sub.add_parser("info", help="describe a saved model", allow_abbrev=False)
    p.add_argument("model_path", metavar="MODEL")
    _output_options(p)

    p = sub.add_parser("models", help="list the models", allow_abbrev=False)
    _output_options(p)
    sub.add_parser("demo", help="factorize the notebook's 4x5 matrix three ways and recommend")
    return parser


# ---------------------------------------------------------------------- hyperparameters
def _option_table(parser, command):
    """{option string: number of values} for a subcommand."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[command]
    out = {}
    for action in p._actions:
        for s in action.option_strings:
            out[s] = action.nargs if action.nargs is not None else 1
    return out


def _split_hyperparameters(parser, argv):
    """Pull ``--name value`` options that the command does not know out of ``argv``."""
    cmd_at = next((k for k, a in enumerate(argv) if not a.startswith("-")), None)
    if cmd_at is None or argv[cmd_at] not in _MODEL_COMMANDS:
        return argv, {}
    known = _option_table(parser, argv[cmd_at])
    keep, hyper = list(argv[:cmd_at + 1]), {}
    k = cmd_at + 1
    while k < len(argv):
        tok = argv[k]
        name = tok.split("=", 1)[0]
        if tok == "--":
            keep.extend(argv[k:])
            break
        if name in known:
            keep.append(tok)
            n = known[name]
            k += 1
            if "=" in tok or n == 0:
                continue
            if n in ("+", "*"):
                while k < len(argv) and not argv[k].startswith("--"):
                    keep.append(argv[k])
                    k += 1
            else:
                for _ in range(n if isinstance(n, int) else 1):
                    if k < len(argv):
                        keep.append(argv[k])
                        k += 1
            continue
        if tok.startswith("--") and len(tok) > 2:
            key = name[2:].replace("-", "_")
            if "=" in tok:
                value = tok.split("=", 1)[1]
                k += 1
            elif k + 1 < len(argv) and not argv[k + 1].startswith("--"):
                value = argv[k + 1]
                k += 2
            else:
                value, k = "true", k + 1
            if key in hyper:
                raise UsageError(f"hyperparameter --{key.replace('_', '-')} given twice")
            hyper[key] = value
            continue
        keep.append(tok)
        k += 1
    return keep, hyper


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


def _make_model(args, hyper, verbose, *, check=True):
    from .models import get_model_class, model_name
    try:
        name = model_name(args.model)
        cls = get_model_class(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    valid = cls._param_names()
    params = {}
    for key, text in hyper.items():
        if key not in valid:
            opts = ", ".join(f"--{v.replace('_', '-')}" for v in valid)
            raise UsageError(f"--{key.replace('_', '-')} is not an option of this command nor a "
                             f"hyperparameter of {cls.__name__} (its hyperparameters: {opts})")
        params[key] = _parse_value(text)
    if args.seed is not None and "random_state" in valid:
        params.setdefault("random_state", args.seed)
    if args.threads is not None and "num_threads" in valid:
        params.setdefault("num_threads", args.threads)
    if verbose and "verbose" in valid and "verbose" not in params:
        default = inspect.signature(cls.__init__).parameters["verbose"].default
        if isinstance(default, bool):  # a progress bar on stderr
            params["verbose"] = True
        elif isinstance(default, int) and not getattr(args, "json", False):
            # models that print a loss line every `verbose` epochs: about ten lines
            epochs = params.get("n_epochs", inspect.signature(cls.__init__).parameters.get(
                "n_epochs", inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY)).default)
            if isinstance(epochs, int) and not isinstance(epochs, bool):
                params["verbose"] = max(1, epochs // 10)
    model = cls(**params)
    if check:
        try:
            model._validate_params()
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
    return name, model


# ---------------------------------------------------------------------- helpers
def _progress(args):
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _note(args, text):
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        print(text, file=sys.stderr)


def _read(path, args):
    from .io import read_ratings
    sep = args.sep
    if sep is not None:
        sep = {"tab": "\t", "\\t": "\t", "comma": ",", "space": r"\s+", "whitespace": r"\s+",
               "semicolon": ";", "pipe": "|"}.get(sep.lower(), sep)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    header = {"infer": "infer", "yes": True, "no": False}[args.header]
    return read_ratings(path, sep=sep, header=header, names=names, format=args.fmt,
                        duplicates=args.duplicates)


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
    """Item id -> name from a file of (id, name) rows; MovieLens u.item ('|', latin-1) too."""
    import pandas as pd
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    first = text.split("\n", 1)[0]
    sep = "|" if "|" in first else "\t" if "\t" in first else "::" if "::" in first else ","
    import io as _io
    frame = pd.read_csv(_io.StringIO(text), sep=sep if sep != "::" else ":", header=None,
                        dtype=str, engine="python" if sep == "::" else "c",
                        quotechar='"', on_bad_lines="skip")
    if sep == "::":
        frame = frame.iloc[:, ::2]
    if frame.shape[1] < 2:
        raise ValueError(f"labels file {str(path)!r} needs two columns (id, name)")
    keys = _coerce_ids(frame.iloc[:, 0].tolist(), vocab)
    return dict(zip(keys, frame.iloc[:, 1].astype(str).tolist()))


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
    from .evaluation.cross_validation import parse_metrics
    if text is None:
        return None
    try:
        return parse_metrics(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_outputs(*paths):
    """Fail before any work when an output folder does not exist."""
    for path in paths:
        if path:
            folder = Path(path).parent
            if str(folder) and not folder.is_dir():
                raise FileNotFoundError(f"cannot write {str(path)!r}: folder {str(folder)!r} "
                                        f"does not exist")


def _load_model(path):
    from .persist import load
    return load(path)


# ---------------------------------------------------------------------- commands
def cmd_fit(args, hyper):
    from .evaluation.cross_validation import _accepts
    from .evaluation.splits import train_test_split

    verbose = _progress(args)
    name, model = _make_model(args, hyper, verbose)
    _check_outputs(args.output, args.plot)
    data = _read(args.data, args)
    fit_kwargs = {}
    n_val = None
    if args.validation is not None:
        if not _accepts(model.fit, "validation"):
            raise UsageError(f"--validation: {type(model).__name__} does not take validation "
                             f"data")
        try:
            frac = float(args.validation)
        except ValueError:
            frac = None
        if frac is not None:
            if not 0 < frac < 1:
                raise UsageError(f"--validation must be a fraction in (0, 1) or a file, got "
                                 f"{args.validation!r}")
            data, val = train_test_split(data, test_size=frac, random_state=args.seed)
            _note(args, f"holding out {val.nnz} ratings ({frac:.0%}) for validation")
        else:
            val = _read(args.validation, args)
        fit_kwargs["validation"] = val
        n_val = val.nnz
    _note(args, f"fitting {type(model).__name__} on {data.nnz} ratings "
                f"({data.n_users} users x {data.n_items} items)")
    t0 = time.perf_counter()
    model.fit(data, **fit_kwargs)
    fit_time = time.perf_counter() - t0
    path = model.save(args.output)
    loss = getattr(model, "loss_history_", None)
    val_hist = getattr(model, "validation_history_", None)
    result = {"model": name, "class": type(model).__name__, "path": str(path),
              "n_users": data.n_users, "n_items": data.n_items, "n_ratings": data.nnz,
              "n_factors": int(model.item_factors_.shape[1]), "fit_time": round(fit_time, 3),
              "epochs": len(loss) if loss else None,
              "final_loss": float(loss[-1]) if loss else None,
              "validation_ratings": n_val,
              "validation_rmse": float(min(val_hist)) if val_hist else None}
    if args.plot:
        from .plots import fit_report
        labels = _read_labels(args.labels, model.item_vocab_) if args.labels else None
        fit_report(model, args.plot, labels=labels)
        result["plot"] = args.plot
    if args.json:
        _print_json(result)
        return EXIT_OK
    print(f"Fitted {type(model).__name__} on {data.nnz} ratings ({data.n_users} users, "
          f"{data.n_items} items) in {fit_time:.2f} s")
    if loss:
        print(f"  epochs run: {len(loss)}, final training loss: {loss[-1]:.4f}")
    if val_hist:
        best = int(min(range(len(val_hist)), key=val_hist.__getitem__))
        print(f"  validation RMSE: {val_hist[-1]:.4f} last, {val_hist[best]:.4f} best "
              f"(epoch {best + 1})")
    print(f"Saved to {path}")
    if args.plot:
        print(f"Plot written to {args.plot}")
    return EXIT_OK


def _unseen_counts(model, test):
    import numpy as np
    ui = model.user_items_
    u_cnt = np.diff(ui.indptr)
    i_cnt = np.bincount(ui.indices, minlength=ui.shape[1])
    uidx = model.user_vocab_.lookup(test.user_vocab.ids, unknown="mask")[test.user_index]
    iidx = model.item_vocab_.lookup(test.item_vocab.ids, unknown="mask")[test.item_index]
    cold_u = (uidx < 0) | (u_cnt[np.maximum(uidx, 0)] == 0)
    cold_i = (iidx < 0) | (i_cnt[np.maximum(iidx, 0)] == 0)
    return {"unseen_users": int(np.unique(test.user_index[cold_u]).size),
            "unseen_items": int(np.unique(test.item_index[cold_i]).size),
            "unseen_ratings": int((cold_u | cold_i).sum())}


def cmd_evaluate(args):
    from .evaluation import evaluate
    from .models import is_implicit

    metrics = _metric_list(args.metrics)
    model = _load_model(args.model_path)
    test = _read(args.data, args)
    if metrics is None:
        metrics = (["ndcg@10", "precision@10", "recall@10", "map@10"] if is_implicit(model)
                   else ["rmse", "mae", "ndcg@10", "precision@10", "recall@10"])
    t0 = time.perf_counter()
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = evaluate(model, test, metrics, exclude_seen=not args.include_seen)
    elapsed = time.perf_counter() - t0
    counts = _unseen_counts(model, test)
    if args.json:
        _print_json({**scores, "n_test": test.nnz, **counts, "time": round(elapsed, 3)})
        return EXIT_OK
    print(f"{type(model).__name__} on {test.nnz} test ratings ({test.n_users} users, "
          f"{test.n_items} items):")
    print(_table([(k, _fmt(v)) for k, v in scores.items()], ["metric", "value"], ["<", ">"]))
    if counts["unseen_ratings"]:
        print(f"{counts['unseen_ratings']} test ratings have a user or item unseen in training "
              f"({counts['unseen_users']} users, {counts['unseen_items']} items): rating "
              f"metrics score them with the model's fallback")
    for w in caught:
        _note(args, f"note: {w.message}")
    return EXIT_OK


def _cv_columns(table):
    skip = ("n_train", "unseen_ratings")
    return [c for c in table.columns if c not in skip]


def _print_cv(table):
    cols = _cv_columns(table)
    rows = []
    for idx, r in table.iterrows():
        rows.append([idx] + [(f"{int(round(r[c]))}" if c in ("n_test", "epochs") and idx != "std"
                              else _fmt(r[c], 2 if c.endswith("_time") else 4)) for c in cols])
    print(_table(rows, ["fold"] + cols, ["<"] + [">"] * len(cols)))


def cmd_cv(args, hyper):
    from .evaluation import cross_validate

    metrics = _metric_list(args.metrics)
    name, model = _make_model(args, hyper, verbose=False)
    _check_outputs(args.csv, args.plot)
    data = _read(args.data, args)
    if args.folds < 2:
        raise UsageError(f"--folds must be >= 2, got {args.folds}")
    unseen = "drop" if args.drop_unseen else "keep"
    cv, what = _splitter(args, unseen)
    _note(args, f"{what} of {model!r} on {data.nnz} ratings")
    table = cross_validate(model, data, cv=cv, metrics=metrics, random_state=args.seed,
                           unseen=unseen, validation_size=args.validation,
                           verbose=_progress(args))
    if args.csv:
        table.to_csv(args.csv)
    if args.plot:
        from .plots import compare
        n_metrics = len([c for c in table.columns if c not in (
            "fit_time", "test_time", "n_train", "n_test", "unseen_ratings", "epochs")])
        compare(table, path=args.plot, figsize=(max(6, min(4 * n_metrics, 20)), 4.5),
                title=f"{type(model).__name__}: {what}")
    if args.json:
        folds = table.drop(index=["mean", "std"])
        _print_json({"model": name, "params": model.get_params(),
                     "folds": folds.reset_index().to_dict(orient="records"),
                     "mean": table.loc["mean"].to_dict(), "std": table.loc["std"].to_dict()})
        return EXIT_OK
    print(f"{type(model).__name__}: {what} on {data.nnz} ratings")
    _print_cv(table)
    unseen = table.loc["mean", "unseen_ratings"]
    if unseen:
        print(f"(about {unseen:.0f} test ratings per fold have a user or item unseen in "
              f"training; scored with the model's fallback)")
    for what, path in (("Table", args.csv), ("Plot", args.plot)):
        if path:
            print(f"{what} written to {path}")
    return EXIT_OK


def _splitter(args, unseen):
    """(cv argument, description) for ``mfrec cv --split``."""
    from .evaluation import splits as S

    fn_name, fixed, sized, random = _SPLITS[args.split]
    if fn_name is None:
        return args.folds, f"{args.folds}-fold cross-validation"
    kwargs = dict(fixed)
    if sized:
        size = _parse_value(args.test_size)
        if isinstance(size, bool) or not isinstance(size, (int, float)) or (
                isinstance(size, int) and args.split not in ("user", "user-temporal")):
            raise UsageError(f"--test-size must be a fraction in (0, 1)"
                             f"{' or a count per user' if args.split.startswith('user') else ''}"
                             f", got {args.test_size!r}")
        kwargs["test_size"] = size
    n = args.folds if random else 1
    cv = S.RepeatedSplit(getattr(S, fn_name), n, random_state=args.seed, unseen=unseen,
                         **kwargs)
    size = f", test size {kwargs['test_size']}" if sized else ""
    reps = f", {n} repetitions" if n > 1 else ""
    return cv, f"{args.split} split{size}{reps}"


def _parse_grid(items, random):
    import scipy.stats
    grid = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--grid entries are NAME=VALUES, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if not key or not text:
            raise UsageError(f"--grid entries are NAME=VALUES, got {item!r}")
        if ":" in text and "," not in text:
            if not random:
                raise UsageError(f"--grid {item}: a range LOW:HIGH needs --random N")
            parts = text.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
                raise UsageError(f"--grid {item}: ranges are LOW:HIGH or LOW:HIGH:log")
            lo, hi = _parse_value(parts[0]), _parse_value(parts[1])
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) \
                    or not lo < hi:
                raise UsageError(f"--grid {item}: LOW and HIGH must be numbers with LOW < HIGH")
            if len(parts) == 3:
                if lo <= 0:
                    raise UsageError(f"--grid {item}: a log range needs LOW > 0")
                grid[key] = scipy.stats.loguniform(lo, hi)
            elif isinstance(lo, int) and isinstance(hi, int):
                grid[key] = scipy.stats.randint(lo, hi + 1)
            else:
                grid[key] = scipy.stats.uniform(lo, hi - lo)
        else:
            grid[key] = [_parse_value(v) for v in text.split(",") if v.strip()]
    return grid


def cmd_tune(args, hyper):
    from .evaluation import GridSearch, RandomSearch

    metrics = _metric_list(args.metrics)
    scoring = _metric_list(args.scoring)[0] if args.scoring else None
    name, model = _make_model(args, hyper, verbose=False)
    grid = _parse_grid(args.grid, args.random)
    valid = model._param_names()
    for key in grid:
        if key not in valid:
            opts = ", ".join(valid)
            raise UsageError(f"--grid {key}: not a hyperparameter of {type(model).__name__} "
                             f"(its hyperparameters: {opts})")
    if args.folds < 2:
        raise UsageError(f"--folds must be >= 2, got {args.folds}")
    if args.random is not None and args.random < 1:
        raise UsageError(f"--random must be >= 1, got {args.random}")
    _check_outputs(args.output, args.csv, args.plot)
    data = _read(args.data, args)
    common = dict(cv=args.folds, scoring=scoring, metrics=metrics, random_state=args.seed,
                  validation_size=args.validation, refit=bool(args.output),
                  verbose=_progress(args))
    search = (RandomSearch(model, grid, n_iter=args.random, **common) if args.random
              else GridSearch(model, grid, **common))
    try:
        search._candidates(__import__("numpy").random.default_rng(0))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    _note(args, f"{type(search).__name__} of {type(model).__name__}, {args.folds}-fold, on "
                f"{data.nnz} ratings")
    try:
        search.fit(data)
    except (TypeError, ValueError) as exc:
        if "must be" in str(exc) or "not a parameter" in str(exc):
            raise UsageError(str(exc)) from None
        raise
    res = search.cv_results_.sort_values(f"rank_{search.scoring_}", kind="stable")
    if args.csv:
        search.cv_results_.drop(columns=["params"]).to_csv(args.csv, index=False)
    if args.plot:
        from .plots import compare
        compare(search, path=args.plot)
    if args.output:
        search.best_model_.save(args.output)
    if args.json:
        _print_json({"model": name, "scoring": search.scoring_,
                     "best_params": search.best_params_, "best_score": search.best_score_,
                     "results": search.cv_results_.drop(columns=["params"]).to_dict(
                         orient="records"),
                     "saved": args.output})
        return EXIT_OK
    sc = search.scoring_
    others = [c for c in res.columns if c.startswith("mean_") and c != f"mean_{sc}"
              and c not in ("mean_fit_time", "mean_test_time")]
    rows = []
    for _, r in res.iterrows():
        params = ", ".join(f"{k}={_fmt(v, 4) if isinstance(v, float) else v}"
                           for k, v in r["params"].items())
        rows.append([int(r[f"rank_{sc}"]), params,
                     f"{r[f'mean_{sc}']:.4f} ± {r[f'std_{sc}']:.4f}"]
                    + [f"{r[c]:.1f}" if c == "mean_epochs" else _fmt(r[c]) for c in others]
                    + [f"{r['mean_fit_time']:.2f}"])
    print(f"{type(search).__name__} of {type(model).__name__}: {len(res)} candidates, "
          f"{args.folds}-fold, scored by {sc}")
    print(_table(rows, ["rank", "hyperparameters", f"{sc} (mean ± std)"]
                 + [c[5:] for c in others] + ["fit s"],
                 [">", "<", ">"] + [">"] * len(others) + [">"]))
    print(f"Best: {search.best_params_}  {sc} = {search.best_score_:.4f}")
    for what, path in (("Best model saved", args.output), ("Table written", args.csv),
                       ("Plot written", args.plot)):
        if path:
            print(f"{what} to {path}")
    return EXIT_OK


def _read_user_file(path):
    """User ids from a file: one per line, or the first field of a CSV/TSV line."""
    import re
    ids = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            field = re.split(r"[,\t;|]|\s+", line.strip(), maxsplit=1)[0].strip().strip('"')
            if field:
                ids.append(field)
    if ids and ids[0].lower() in ("user", "user_id", "userid", "users", "id"):
        ids = ids[1:]
    if not ids:
        raise ValueError(f"no user ids in {str(path)!r}")
    return ids


def _ranked_rows(queries, ids, scores, query_key, score_key, labels):
    """One record per (query, rank) of a top-n answer, stopping at the first non-finite score;
    a "name" from ``labels`` (when given) for each item."""
    import numpy as np

    rows = []
    for q, row_ids, row_scores in zip(queries, ids, scores):
        for rank, (item, score) in enumerate(zip(row_ids, row_scores), 1):
            if not np.isfinite(score):
                break
            rec = {query_key: q, "rank": rank, "item": item, score_key: float(score)}
            if labels is not None:
                rec["name"] = labels.get(item, "")
            rows.append(rec)
    return rows


def _ranked_table(rows, score_key, labels):
    """Text table of one query's records from :func:`_ranked_rows`."""
    cols = ["rank", "item", score_key] + (["name"] if labels is not None else [])
    return _table([[r[c] if c != score_key else f"{r[c]:.4f}" for c in cols] for r in rows],
                  cols, [">", ">", ">", "<"][:len(cols)])


def cmd_recommend(args):
    import numpy as np

    if not args.user and not args.users:
        raise UsageError("give --user ID (repeatable) or --users FILE")
    if args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    _check_outputs(args.output)
    model = _load_model(args.model_path)
    texts = list(args.user or []) + (_read_user_file(args.users) if args.users else [])
    users = _coerce_ids(texts, model.user_vocab_)
    idx = model.user_vocab_.lookup(np.array(users, dtype=object) if users and isinstance(
        users[0], str) else users, unknown="mask")
    unknown = [t for t, i in zip(texts, idx) if i < 0]
    if unknown:
        msg = (f"{len(unknown)} unknown user id(s) (not in the model's training data): "
               f"{unknown[:5]}")
        if len(unknown) == len(users) or not args.users:
            raise KeyError(msg)
        _note(args, f"note: skipping {msg}")
    known = [u for u, i in zip(users, idx) if i >= 0]
    labels = _read_labels(args.labels, model.item_vocab_) if args.labels else None
    ids, scores = model.recommend(known, n=args.n, exclude_seen=not args.include_seen)
    rows = _ranked_rows(known, ids, scores, "user", "score", labels)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if args.users or args.output:
        import pandas as pd
        frame = pd.DataFrame(rows, columns=["user", "rank", "item", "score"]
                             + (["name"] if labels is not None else []))
        if args.output:
            frame.to_csv(args.output, index=False, float_format="%.6g")
            print(f"Wrote {len(frame)} recommendations for {len(known)} users to {args.output}")
        else:
            frame.to_csv(sys.stdout, index=False, float_format="%.6g")
        return EXIT_OK
    for u in known:
        mine = [r for r in rows if r["user"] == u]
        print(f"Top {len(mine)} for user {u}:")
        print(_ranked_table(mine, "score", labels))
    return EXIT_OK


def cmd_similar(args):
    if args.n < 1:
        raise UsageError(f"-n must be >= 1, got {args.n}")
    model = _load_model(args.model_path)
    items = _coerce_ids(args.item, model.item_vocab_)
    labels = _read_labels(args.labels, model.item_vocab_) if args.labels else None
    ids, scores = model.similar_items(items, n=args.n)
    out = _ranked_rows(items, ids, scores, "query", "similarity", labels)
    if args.json:
        _print_json(out)
        return EXIT_OK
    for q in items:
        mine = [r for r in out if r["query"] == q]
        title = f" ({labels.get(q, '')})" if labels is not None else ""
        print(f"Items most similar to {q}{title}:")
        print(_ranked_table(mine, "similarity", labels))
    return EXIT_OK


def cmd_info(args):
    from .persist import read_header
    header = read_header(args.model_path)
    model = _load_model(args.model_path)
    loss = getattr(model, "loss_history_", None)
    info = {"class": header["class"], "path": str(args.model_path),
            "file_size": os.path.getsize(args.model_path),
            "mfrec_version": header.get("mfrec_version"),
            "format_version": header.get("format_version"), "created": header.get("created"),
            "n_users": int(model.user_factors_.shape[0]),
            "n_items": int(model.item_factors_.shape[0]),
            "n_factors": int(model.item_factors_.shape[1]),
            "n_ratings": int(model.user_items_.nnz) if getattr(model, "user_items_", None)
            is not None else None,
            "rating_range": list(model.rating_range_) if hasattr(model, "rating_range_")
            else None,
            "global_mean": float(model.global_mean_),
            "epochs": len(loss) if loss else None,
            "final_loss": float(loss[-1]) if loss else None,
            "params": model.get_params(), "notes": header.get("notes", [])}
    if args.json:
        _print_json(info)
        return EXIT_OK
    print(f"{info['class']} model  ({info['path']}, {info['file_size'] / 1e6:.2f} MB)")
    lines = [("users", info["n_users"]), ("items", info["n_items"]),
             ("factors", info["n_factors"]), ("training ratings", info["n_ratings"]),
             ("rating range", info["rating_range"]), ("global mean", _fmt(info["global_mean"])),
             ("epochs run", info["epochs"]),
             ("final loss", _fmt(info["final_loss"]) if loss else None),
             ("saved by", f"mfrec {info['mfrec_version']} (format {info['format_version']}) "
                          f"at {info['created']}")]
    for k, v in lines:
        if v is not None:
            print(f"  {k + ':':<18}{v}")
    print("  hyperparameters:")
    for k, v in info["params"].items():
        print(f"    {k} = {v!r}")
    for note in info["notes"]:
        print(f"  note: {note}")
    return EXIT_OK


def cmd_models(args):
    from .models import MODELS, available_models
    have = set(available_models())
    rows = [(name, cls, kind, "yes" if name in have else "no", desc)
            for name, (cls, kind, desc) in MODELS.items()]
    if args.json:
        _print_json([dict(zip(["name", "class", "feedback", "available", "description"], r))
                     for r in rows])
        return EXIT_OK
    print(_table(rows, ["name", "class", "feedback", "available", "description"]))
    return EXIT_OK


# ---------------------------------------------------------------------- main
def main(argv=None):
    """Run the command line; returns the exit code (0, 1 or 2) instead of exiting."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MFREC_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    parser = build_parser()
    try:
        argv, hyper = _split_hyperparameters(parser, argv)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "demo":
            from .demo import run_demo
            run_demo(sys.stdout)
            return EXIT_OK
        handler = {"fit": cmd_fit, "cv": cmd_cv, "tune": cmd_tune}.get(args.command)
        if handler is not None:
            return handler(args, hyper)
        return {"evaluate": cmd_evaluate, "recommend": cmd_recommend, "similar": cmd_similar,
                "info": cmd_info, "models": cmd_models}[args.command](args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        print(f"mfrec: usage error: {exc}", file=sys.stderr)
        if debug:
            raise
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `mfrec recommend ... | head`: stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("mfrec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every other failure is reported, not dumped
        if debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"mfrec: error: {msg or type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
