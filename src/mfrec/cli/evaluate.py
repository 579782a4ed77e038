"""``mfrec evaluate`` (a saved model on held-out ratings) and ``mfrec cv`` (cross-validation)."""
from __future__ import annotations

import time

from ._common import (EXIT_OK, UsageError, _check_outputs, _data_options, _fmt, _load_model,
                      _metric_list, _model_options, _note, _output_options, _parse_value,
                      _print_json, _progress, _read, _require_plot, _table)
from ._params import _make_model

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


def register(sub):
    p = sub.add_parser("evaluate", help="score a saved model on held-out ratings",
                       allow_abbrev=False)
    p.set_defaults(run=cmd_evaluate)
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--metrics", help="comma-separated, e.g. rmse,mae,ndcg@10 (default: rating "
                                     "and ranking metrics for rating models)")
    p.add_argument("--include-seen", action="store_true",
                   help="ranking metrics: do not exclude the training items")
    _data_options(p)
    _output_options(p)

    p = sub.add_parser("cv", help="cross-validate a model", allow_abbrev=False)
    p.set_defaults(run=cmd_cv, takes_hyperparameters=True)
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
    from ..evaluation import evaluate
    from ..models import is_implicit

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
    from ..evaluation import cross_validate

    metrics = _metric_list(args.metrics)
    name, model = _make_model(args, hyper, verbose=False)
    _check_outputs(args.csv, args.plot)
    _require_plot(args.plot)
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
        from ..plots import compare
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
    from ..evaluation import splits as S

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

