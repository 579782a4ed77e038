"""``mfrec fit``: fit a model to a ratings file and save it."""
from __future__ import annotations

import time

from ._common import (EXIT_OK, UsageError, _check_outputs, _data_options, _model_options, _note,
                      _output_options, _print_json, _progress, _read, _read_labels,
                      _require_plot)
from ._params import _make_model


def register(sub):
    p = sub.add_parser("fit", help="fit a model to a ratings file and save it",
                       description="Fit a model and save it to one file (-o).", allow_abbrev=False)
    p.set_defaults(run=cmd_fit, takes_hyperparameters=True)
    p.add_argument("data", metavar="DATA", help="ratings file (user, item, rating[, timestamp])")
    _model_options(p)
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="where to save the model (e.g. movies.mfrec)")
    p.add_argument("--validation", metavar="FRACTION|FILE",
                   help="hold out this fraction of DATA (or read this file) as validation data "
                        "for the progress bar and early stopping")
    p.add_argument("--plot", metavar="FILE.png", help="write learning curve and item map")
    p.add_argument("--labels", metavar="FILE", help="item names for the plot (id, name)")
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="train here (default) or with Spark MLlib's ALS through mfrec.spark "
                        "(-m als or implicit-als; the spark extra and Java; DATA may then be "
                        "a Parquet folder or any path Spark reads)")
    p.add_argument("--spark-master", metavar="URL",
                   help="with --engine spark: local[2], spark://host:7077, yarn, ... "
                        "(default local[*])")
    _data_options(p)
    _output_options(p)


def _fit_showing_warnings(model, data, fit_kwargs):
    """Fit; each FitWarning (a collapsed or useless fit, see mfrec.models._guard) is printed as
    one line on stderr, other warnings as Python shows them."""
    import sys
    import warnings

    from ..models._guard import FitWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        model.fit(data, **fit_kwargs)
    for w in caught:
        if issubclass(w.category, FitWarning):
            print(f"mfrec: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def cmd_fit(args, hyper):
    from ..evaluation.cross_validation import _accepts
    from ..evaluation.splits import train_test_split

    verbose = _progress(args)
    name, model = _make_model(args, hyper, verbose)
    if args.engine == "spark":
        from ..spark import SPARK_MODELS, cli_fit
        if name not in SPARK_MODELS:
            raise UsageError(f"--engine spark fits -m {' or '.join(SPARK_MODELS)}, got {name}")
        if args.validation is not None:
            raise UsageError("--validation is not available with --engine spark")
        _check_outputs(args.plot, saved=args.output)
        return cli_fit(args, name, model)
    if args.spark_master:
        raise UsageError("--spark-master needs --engine spark")
    _check_outputs(args.plot, saved=args.output)
    _require_plot(args.plot)
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
    _fit_showing_warnings(model, data, fit_kwargs)
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
        from ..plots import fit_report
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

