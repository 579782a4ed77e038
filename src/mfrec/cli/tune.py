"""``mfrec tune``: cross-validated grid or random search of hyperparameters."""
from __future__ import annotations

from ._common import (EXIT_OK, UsageError, _check_outputs, _data_options, _fmt, _metric_list,
                      _model_options, _note, _output_options, _parse_value, _print_json,
                      _progress, _read, _require_plot, _table)
from ._params import _make_model


def register(sub):
    p = sub.add_parser("tune", help="grid or random search of hyperparameters",
                       allow_abbrev=False,
                       description="Cross-validated search. Example: mfrec tune u.data "
                                   "--model biased-mf --grid n_factors=20,50 "
                                   "regularization=0.02,0.05. Or automatic, within a time "
                                   "budget: mfrec tune TRAIN -m implicit-als --auto "
                                   "--time-budget 600 --metric recall@20 -o best.mfrec")
    p.set_defaults(run=cmd_tune, takes_hyperparameters=True)
    p.add_argument("data", metavar="DATA")
    _model_options(p)
    p.add_argument("--grid", nargs="+", action="extend", metavar="NAME=VALUES",
                   help="NAME=V1,V2,... (a list) or, with --random, NAME=LOW:HIGH[:log] "
                        "(a range); required unless --auto")
    p.add_argument("--auto", action="store_true",
                   help="search the model's documented ranges automatically (Optuna TPE with "
                        "successive halving) on a validation split carved from DATA, within "
                        "--time-budget, then refit the best on all DATA; pip install "
                        "'mfrec[tune]'")
    p.add_argument("--time-budget", type=float, default=600, metavar="SECONDS",
                   help="--auto: wall-clock seconds for everything from reading DATA to "
                        "saving the refitted model (Python's own start-up, a second or two, "
                        "is not counted; default: 600)")
    p.add_argument("--metric", help="--auto: the metric to optimise, e.g. recall@20, ndcg@10, "
                                    "rmse (default: recall@20 for implicit-feedback models, "
                                    "rmse for the others)")
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
    import time

    from ..evaluation import GridSearch, RandomSearch

    if args.auto:
        return _cmd_tune_auto(args, hyper, time.perf_counter())
    if not args.grid:
        raise UsageError("--grid is required (or --auto, to search the model's own ranges)")
    if args.metric is not None:
        raise UsageError("--metric is for --auto; a grid search is scored by --scoring")
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
    _check_outputs(args.csv, args.plot, saved=args.output)
    _require_plot(args.plot)
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
        from ..plots import compare
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


def _cmd_tune_auto(args, hyper, started):
    """``mfrec tune --auto``: :func:`mfrec.evaluation.tuning.auto_tune` within --time-budget."""
    import time

    from ..evaluation.tuning import auto_tune, format_trials
    from ..models import is_implicit

    if args.grid or args.random is not None:
        raise UsageError("--auto searches the model's own ranges: drop --grid and --random")
    if args.time_budget is None or args.time_budget <= 0:
        raise UsageError(f"--time-budget must be a number of seconds > 0, got {args.time_budget}")
    name, model = _make_model(args, hyper, verbose=False)
    metric = _metric_list(args.metric or ("recall@20" if is_implicit(model) else "rmse"))
    if len(metric) != 1:
        raise UsageError(f"--metric takes one metric, got {args.metric!r}")
    _check_outputs(args.csv, args.plot, saved=args.output)
    _require_plot(args.plot)
    fixed = {k: v for k, v in model.get_params().items()
             if k in hyper or (k == "num_threads" and args.threads is not None)}
    data = _read(args.data, args)
    left = args.time_budget - (time.perf_counter() - started)  # reading the data counts too
    if left <= 0:
        raise RuntimeError(f"reading {args.data} took the whole --time-budget "
                           f"({args.time_budget:g} s)")
    _note(args, f"auto-tuning {type(model).__name__} for {metric[0]} on {data.nnz} ratings "
                f"({data.n_users} users x {data.n_items} items) within {left:.0f} s")
    try:
        res = auto_tune(model, data, metric=metric[0], time_budget=left, fixed=fixed,
                        validation_size=args.validation or 0.2, random_state=args.seed or 0,
                        output=args.output, plot=args.plot, verbose=_progress(args))
    except ValueError as exc:
        if "must be" in str(exc) or "not a hyperparameter" in str(exc):
            raise UsageError(str(exc)) from None
        raise
    if args.csv:
        res.trials.to_csv(args.csv, index=False)
    states = res.trials.state.value_counts().to_dict()
    elapsed = time.perf_counter() - started
    if args.json:
        _print_json({"model": name, "metric": res.metric, "best_params": res.best_params_,
                     "refit_params": res.refit_params_, "best_score": res.best_score_, "n_trials": len(res.trials),
                     "n_complete": states.get("complete", 0), "n_pruned": states.get("pruned", 0),
                     "time_budget": args.time_budget, "elapsed": elapsed,
                     "search_time": res.search_time_, "refit_time": res.refit_time_,
                     "n_train": res.n_train, "n_validation": res.n_validation,
                     "saved": args.output, "plot": args.plot,
                     "trials": res.trials.to_dict(orient="records")})
        return EXIT_OK
    print(f"Auto-tuned {type(model).__name__} for validation {res.metric}: {len(res.trials)} "
          f"trials ({', '.join(f'{v} {k}' for k, v in states.items())}) in {elapsed:.0f} s of "
          f"{args.time_budget:g} s")
    print(format_trials(res))
    print(f"Best: {res.best_params_}  {res.metric} = {res.best_score_:.4f} (validation: "
          f"{res.n_validation} of the training ratings held out), refitted on all {data.nnz}")
    if res.refit_params_ and any(res.refit_params_.get(k) != v
                                 for k, v in res.best_params_.items()):
        print(f"Refitted with {res.refit_params_} (the same values carried over to all the "
              f"data)")
    for what, path in (("Best model saved", args.output), ("Table written", args.csv),
                       ("Plot written", args.plot)):
        if path:
            print(f"{what} to {path}")
    return EXIT_OK
