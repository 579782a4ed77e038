"""Automatic hyperparameter tuning within a wall-clock budget: :func:`auto_tune`.

One call searches a model's documented ranges (:data:`SEARCH_SPACES`, one table for every model)
on a validation split carved from the training data, refits the best setting on all of it and
returns it, never running past ``time_budget`` seconds, refit included.

How the search spends its budget
--------------------------------
- **Sampler**: Optuna's TPE (a model of good and bad regions built from the finished trials,
  multivariate so that correlated hyperparameters such as ``regularization`` and ``alpha`` are
  modelled together). The model's own defaults are the first trial, so the result is never
  worse than the defaults on the validation data.
- **Pruner**: successive halving on the number of epochs. Models trained by epochs are fitted
  at rungs of ``n_epochs`` growing by a factor 3 (e.g. 2, 6, 18 for ImplicitALS); after each
  rung a trial continues only if it is in the best third of the trials that reached that rung.
  mfrec's models are not fitted incrementally, so a rung refits from scratch: a trial that runs
  to the end costs about 1.5 times its last rung, and a bad one only its first, small rung.
- **Early stopping**: models that take ``validation=`` (BiasedMF, SVDpp, Baseline) get the
  validation part and stop on it; the refit then runs the number of epochs that was best.
- **Carry-over**: the refit uses the best values in the sense they had on the carved part.
  A model whose hyperparameters scale with the data says how (``_carry_params``): for
  ImplicitALS a numeric ``alpha`` and ``regularization`` are multiplied by the ratio of their
  ``"auto"`` values on all the data and on the carved part, so that the unobserved cells and the
  penalty weigh the same against a row's observations after the refit as during the search
  (the carved part is less dense: the same ``alpha`` would weigh them differently).
- **Budget**: before every fit the time it will take is predicted from the fits already
  measured (scaled by epochs and by ``n_factors``), and a fit that would leave too little time
  for the final refit on all the data is not started. The first fit of the first trial is the
  only one run without a prediction (nothing has been measured yet).

Why TPE with halving: a budget of minutes affords tens of trials, too few for random sampling
to land often near a good point in three or four dimensions spanning orders of magnitude, while
TPE concentrates its proposals where the finished trials scored well; halving lets the same
budget screen about twice as many candidates as full fits would, since most are dropped after
a ninth of the epochs. ``sampler="random"``, ``pruner="hyperband"`` and ``pruner="none"`` are
there to compare; ``benchmarks/bench_tune.py --compare`` measures them side by side.

Optuna is an optional dependency: ``pip install 'mfrec[tune]'``.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_choice, check_float, check_int, rng_from, seed_from
from ..data import as_ratings

__all__ = ["auto_tune", "AutoTuneResult", "Dim", "Space", "SEARCH_SPACES", "format_trials",
           "plot_trials"]


# ---------------------------------------------------------------------- the search spaces
@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter.

    Attributes
    ----------
    kind : {"int", "float", "choice"}
    low, high : float
        Inclusive range of "int" and "float" dimensions.
    log : bool
        Sample uniformly in ``log(value)`` (scales such as regularization or learning rate).
    choices : tuple
        Values of a "choice" dimension.
    """

    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()


@dataclass(frozen=True)
class Space:
    """How one model is searched.

    Attributes
    ----------
    params : dict of str -> Dim
        The searched hyperparameters and their ranges.
    epochs : int or None
        The most ``n_epochs`` a trial runs; None for models that are not trained by epochs.
    early_stopping : bool
        Whether ``fit`` takes ``validation=`` and stops on it (then there are no rungs: one fit
        per trial, up to ``epochs``).
    """

    params: dict
    epochs: int | None = None
    early_stopping: bool = False


def _i(low, high, log=True):
    return Dim("int", low, high, log)


def _f(low, high, log=True):
    return Dim("float", low, high, log)


#: class name -> Space. The ranges are those the models' docstrings call usual, widened so
#: that a data set unlike MovieLens still has its optimum inside.
SEARCH_SPACES = {
    "ImplicitALS": Space({"n_factors": _i(16, 512), "regularization": _f(1e-3, 100.0),
                          "alpha": _f(0.1, 1000.0)}, epochs=18),
    "BPR": Space({"n_factors": _i(16, 512), "learning_rate": _f(1e-3, 0.2),
                  "regularization": _f(1e-5, 0.1),
                  "negative_sampling": Dim("choice", choices=("uniform", "popularity"))},
                 epochs=100),
    "BiasedMF": Space({"n_factors": _i(4, 256), "learning_rate": _f(2e-3, 0.05),
                       "regularization": _f(1e-3, 0.3), "bias_regularization": _f(1e-3, 0.3)},
                      epochs=100, early_stopping=True),
    "SVDpp": Space({"n_factors": _i(4, 256), "learning_rate": _f(2e-3, 0.05),
                    "regularization": _f(1e-3, 0.3), "implicit_regularization": _f(1e-3, 0.3),
                    "bias_regularization": _f(1e-3, 0.3)}, epochs=60, early_stopping=True),
    "ALS": Space({"n_factors": _i(4, 256), "regularization": _f(1e-3, 10.0)}, epochs=15),
    "BayesianMF": Space({"n_factors": _i(2, 64)}, epochs=200),
    "Baseline": Space({"regularization": _f(0.1, 100.0)}, early_stopping=False),
    "SVD": Space({"n_factors": _i(1, 300)}),
    "NMF": Space({"n_factors": _i(2, 100), "regularization": _f(1e-4, 10.0)}, epochs=200),
    "GradientDescent": Space({"n_factors": _i(1, 50), "regularization": _f(1e-3, 10.0)},
                             epochs=1000),
    "Popularity": Space({"score": Dim("choice", choices=("count", "mean")),
                         "weighted": Dim("choice", choices=(False, True)),
                         "damping": _f(0.0, 100.0, log=False)}),
}

_ETA = 3  # successive halving: keep the best third at every rung, epochs x3 between rungs


def _rungs(max_epochs, eta=_ETA, n_rungs=3):
    """Epoch counts of the rungs: ``max / eta**(n-1), ..., max / eta, max`` (at least 1)."""
    first = max(1, math.ceil(max_epochs / eta ** (n_rungs - 1)))
    out = [first * eta ** j for j in range(n_rungs) if first * eta ** j < max_epochs]
    return out + [max_epochs]


# ---------------------------------------------------------------------- the result
@dataclass
class AutoTuneResult:
    """What :func:`auto_tune` found.

    Attributes
    ----------
    best_params_ : dict
        The searched hyperparameters of the best trial (with ``n_epochs`` as refitted).
    best_score_ : float
        Its validation score.
    best_model_ : FactorModel
        The best setting refitted on all of the training data.
    trials : pandas.DataFrame
        One row per trial: ``number``, ``state`` ("complete", "pruned", "failed", "skipped"),
        ``value`` (the score at the last rung it reached), ``epochs`` (that rung), one
        ``param_<name>`` column per searched hyperparameter, ``fit_time``, ``eval_time``
        (seconds, summed over its rungs) and ``error`` for failed ones.
    metric : str
    greater_is_better : bool
    model_name : str
    n_train, n_validation : int
        Ratings in the carved training and validation parts.
    search_time_, refit_time_, elapsed_ : float
        Seconds spent searching, refitting (and saving) and in all.
    time_budget : float
    study : optuna.study.Study
    refit_params_ : dict
        The hyperparameters of ``best_model_``: ``best_params_`` carried over to all of the
        training data (they differ only for hyperparameters whose meaning scales with the data,
        such as ImplicitALS's ``alpha`` and ``regularization``; see :func:`auto_tune`).
    """

    best_params_: dict
    best_score_: float
    best_model_: object
    trials: object
    metric: str
    greater_is_better: bool
    model_name: str
    n_train: int
    n_validation: int
    search_time_: float
    refit_time_: float
    elapsed_: float
    time_budget: float
    study: object = field(repr=False, default=None)
    refit_params_: dict = field(default_factory=dict)

    def __repr__(self):
        return (f"AutoTuneResult({self.model_name}, {self.metric}={self.best_score_:.4f}, "
                f"best_params_={self.best_params_}, trials={len(self.trials)}, "
                f"elapsed_={self.elapsed_:.1f}s of {self.time_budget:g}s)")


# ---------------------------------------------------------------------- time prediction
class _Clock:
    """Predicts fit and evaluation seconds from the fits measured so far."""

    def __init__(self):
        self.fits = []   # (n_factors or None, epochs, n_ratings, seconds)
        self.evals = []  # (n_factors or None, seconds)

    @staticmethod
    def _ratio(k, k_obs, power):
        if not k or not k_obs:
            return 1.0
        return (max(k, 1) / max(k_obs, 1)) ** power

    def fit_time(self, k, epochs, n_ratings):
        """Predicted seconds, or None before any measurement.

        A fit costs ``a + c * epochs * (n_factors / 64)**1.5`` seconds (a fixed part: data
        preparation, initialisation; and a part per epoch between CG's ``k`` and a dense
        solve's ``k**2``), both growing with the number of ratings. ``a`` and ``c`` are fitted
        (non-negative least squares) to every fit measured; with one kind of fit only, the time
        is taken as proportional to the epochs.
        """
        if not self.fits:
            return None
        from scipy.optimize import nnls

        def work(k_, e_):
            return max(e_ or 1, 1) * (max(k_ or 64, 1) / 64.0) ** 1.5

        n_ref = self.fits[-1][2]
        X = np.array([[n / n_ref, work(k_, e_) * n / n_ref] for k_, e_, n, _ in self.fits])
        y = np.array([sec for *_, sec in self.fits])
        scale = n_ratings / n_ref
        if np.unique(X[:, 1]).size >= 2:
            (a, c), _ = nnls(X, y)
        else:
            a, c = 0.0, float(np.mean(y / X[:, 1]))
        return 1.2 * scale * (a + c * work(k, epochs))

    def eval_time(self, k):
        if not self.evals:
            return None
        return 1.25 * max(sec * max(1.0, self._ratio(k, k0, 1.0)) for k0, sec in self.evals)


# ---------------------------------------------------------------------- helpers
def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError("auto tuning needs optuna: pip install 'mfrec[tune]'") from None
    return optuna


def _resolve_model(model):
    """(registry name, class, base params) from a name, a class or an instance."""
    from ..models import get_model_class, model_name
    from ..models.base import FactorModel

    if isinstance(model, str):
        name = model_name(model)
        return name, get_model_class(name), {}
    if isinstance(model, type) and issubclass(model, FactorModel):
        return model.__name__, model, {}
    if isinstance(model, FactorModel):
        return type(model).__name__, type(model), model.get_params()
    raise TypeError(f"model must be a model name (e.g. 'implicit-als'), a model class or an "
                    f"unfitted model, got {model!r}")


def _space_for(cls, fixed, data_shape, space=None):
    """The Space of ``cls`` with fixed and unknown hyperparameters removed and n_factors capped
    by the data."""
    if space is None:
        space = SEARCH_SPACES.get(cls.__name__)
        if space is None:
            raise ValueError(f"no search space is defined for {cls.__name__}; pass space=Space("
                             f"...) (known: {', '.join(SEARCH_SPACES)})")
    valid = cls._param_names()
    params = {}
    for name, dim in space.params.items():
        if name not in valid or name in fixed:
            continue
        if name == "n_factors" and dim.kind == "int":
            cap = max(1, min(data_shape) - 1) if cls.__name__ == "SVD" else max(1, min(data_shape))
            hi = min(dim.high, cap)
            dim = Dim("int", min(dim.low, hi), hi, dim.log)
        params[name] = dim
    epochs = space.epochs if ("n_epochs" in valid and "n_epochs" not in fixed) else None
    return Space(params, epochs, space.early_stopping and epochs is not None)


def _suggest(trial, name, dim):
    if dim.kind == "int":
        if dim.low == dim.high:
            return int(dim.low)
        return trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
    if dim.kind == "float":
        return trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
    if dim.kind == "choice":
        return trial.suggest_categorical(name, list(dim.choices))
    raise ValueError(f"search dimension {name!r} has unknown kind {dim.kind!r}")


def _in_range(value, dim):
    """Whether a default value can be enqueued as a point of ``dim``."""
    if dim.kind == "choice":
        return value in dim.choices
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return False
    if dim.kind == "int" and not float(value).is_integer():
        return False
    return dim.low <= value <= dim.high


def _make(cls, base, params, epochs):
    p = {**base, **params}
    if epochs is not None:
        p["n_epochs"] = int(epochs)
        burn = p.get("burn_in", None) if "burn_in" in cls._param_names() else None
        if burn is None and "burn_in" in cls._param_names():
            import inspect
            burn = inspect.signature(cls.__init__).parameters["burn_in"].default
        if isinstance(burn, int) and burn >= epochs:
            # a short rung of a sampler still needs samples after its burn-in
            p["burn_in"] = max(0, int(epochs) // 3)
    return cls(**p)


def _limit_users(val, max_users, rng):
    """The validation part restricted to at most ``max_users`` random users."""
    if max_users is None:
        return val
    users = np.unique(val.user_index)
    if users.size <= max_users:
        return val
    keep = np.zeros(val.n_users, dtype=bool)
    keep[rng.choice(users, size=max_users, replace=False)] = True
    return val.subset(keep[val.user_index])


# ---------------------------------------------------------------------- the search
def auto_tune(model, data, *, metric="recall@20", time_budget=600.0, validation_size=0.2,
              sampler="tpe", pruner="halving", n_trials=None, space=None, fixed=None,
              max_validation_users=10_000, random_state=0, output=None, plot=None,
              verbose=False):
    """Search a model's hyperparameters within a time budget and refit the best on all data.

    Parameters
    ----------
    model : str, model class or unfitted model
        A registry name (``"implicit-als"``, ``"bpr"``, ``"biased-mf"``, ...; see
        :data:`mfrec.models.MODELS`), a class, or an instance whose hyperparameters are the base
        that the search overrides.
    data : Ratings or anything :func:`mfrec.as_ratings` accepts
        All the training data. A validation part is carved from it; nothing else is looked at.
    metric : str, default="recall@20"
        What to optimise: ``"rmse"``, ``"mae"`` (minimised) or a ranking metric such as
        ``"recall@20"``, ``"ndcg@10"``, ``"precision@5"``, ``"map@10"``, ``"hit_rate@10"``,
        ``"mrr"``, ``"auc"`` (maximised), as :func:`mfrec.evaluation.evaluate` computes them
        (all-item ranking with the training items masked).
    time_budget : float, default=600
        Wall-clock seconds for everything: the split, the search, the refit and the saving.
    validation_size : float in (0, 1), default=0.2
        For ranking metrics each user holds out this fraction of their interactions (a per-user
        holdout, :func:`~mfrec.evaluation.user_split`); for rating metrics a random fraction of
        all ratings is held out (:func:`~mfrec.evaluation.train_test_split`).
    sampler : {"tpe", "random"}, default="tpe"
    pruner : {"halving", "hyperband", "none"}, default="halving"
        Successive halving on epochs, Optuna's Hyperband over the same rungs, or full fits.
    n_trials : int, optional
        Stop after this many trials even if time is left.
    space : Space, optional
        Replace the model's entry of :data:`SEARCH_SPACES`.
    fixed : dict, optional
        Hyperparameters held at these values (and not searched), e.g. ``{"num_threads": 2}``.
    max_validation_users : int or None, default=10000
        Score ranking metrics on at most this many random validation users: full ranking costs
        ``n_users x n_items x n_factors``, and this bounds it on large data sets (None: all).
    random_state : int or None, default=0
        Seeds the split, the sampler and every model.
    output : str or Path, optional
        Save the refitted model here.
    plot : str or Path, optional
        Write a chart of the trials here (needs ``pip install 'mfrec[plot]'``, checked before
        the search starts).
    verbose : bool, default=False
        Print a line per trial to stderr.

    Returns
    -------
    AutoTuneResult
        ``best_params_``, ``best_score_``, ``best_model_``, ``trials`` (a DataFrame) and timings.

    Examples
    --------
    >>> from mfrec.evaluation.tuning import auto_tune                   # doctest: +SKIP
    >>> res = auto_tune("implicit-als", train, time_budget=600)        # doctest: +SKIP
    >>> res.best_params_, res.best_score_                                # doctest: +SKIP
    >>> res.best_model_.recommend([0], n=20)                            # doctest: +SKIP
    """
    t_start = time.perf_counter()
    optuna = _optuna()
    import pandas as pd

    from .cross_validation import evaluate, greater_is_better, parse_metrics
    from .splits import train_test_split, user_split

    if plot is not None:
        from ..plots import _mpl
        _mpl()  # fail now, not after the search
    time_budget = check_float("time_budget", time_budget, low=0.0, low_open=True)
    validation_size = check_float("validation_size", validation_size, low=0.0, high=1.0,
                                  low_open=True)
    if validation_size >= 1:
        raise ValueError(f"validation_size must be in (0, 1), got {validation_size!r}")
    check_choice("sampler", sampler, ("tpe", "random"))
    check_choice("pruner", pruner, ("halving", "hyperband", "none"))
    check_int("n_trials", n_trials, low=1, allow_none=True)
    check_int("max_validation_users", max_validation_users, low=1, allow_none=True)
    metric_list = parse_metrics([metric])
    if len(metric_list) != 1:
        raise ValueError(f"metric must name one metric, got {metric!r}")
    metric = metric_list[0]
    maximize = greater_is_better(metric)
    name, cls, base = _resolve_model(model)
    base = dict(base)
    fixed = dict(fixed or {})
    valid = cls._param_names()
    bad = [k for k in fixed if k not in valid]
    if bad:
        raise ValueError(f"fixed: {bad[0]!r} is not a hyperparameter of {cls.__name__} "
                         f"(its hyperparameters: {valid})")
    base.update(fixed)
    if "random_state" in valid and base.get("random_state") is None:
        base["random_state"] = random_state
    cls(**base)._validate_params()  # a bad fixed value fails before any work
    if output is not None:
        from pathlib import Path
        folder = Path(output).parent
        if str(folder) and not folder.is_dir():
            raise FileNotFoundError(f"cannot write {str(output)!r}: folder {str(folder)!r} does "
                                    f"not exist")

    ratings = as_ratings(data)
    rng = rng_from(random_state)
    ranking = metric not in ("rmse", "mae")
    if ranking:
        train, val = user_split(ratings, test_size=validation_size, random_state=rng)
    else:
        train, val = train_test_split(ratings, test_size=validation_size, random_state=rng)
    val_eval = _limit_users(val, max_validation_users, rng) if ranking else val
    sp = _space_for(cls, fixed, ratings.shape, space)
    rungs = [None] if sp.epochs is None else ([sp.epochs] if sp.early_stopping or
                                               pruner == "none" else _rungs(sp.epochs))
    clock = _Clock()
    # a margin for what is not predicted (sampling, saving, the trials table, a busy machine)
    deadline = t_start + time_budget - min(max(0.05 * time_budget, 0.5), 5.0)
    if plot is not None:
        # drawing and writing the chart, one panel per hyperparameter (seconds on a busy machine)
        deadline -= 1.5 + 0.5 * len(sp.params)
    records = {}
    state = {"best": None, "stop": False, "skips": 0, "raw_defaults": False}
    defaults = {n: getattr(cls(**base), n) for n in sp.params}

    def k_of(params):
        k = params.get("n_factors", base.get("n_factors"))
        return k if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else None

    def refit_cost(params, epochs):
        t = clock.fit_time(k_of(params), epochs, ratings.nnz)
        return 0.0 if t is None else t

    def reserve():
        b = state["best"]
        return 0.0 if b is None else refit_cost(b[1], b[2])

    def objective(trial):
        if trial.number == 0 and state["raw_defaults"]:
            # defaults outside the ranges (such as "auto"): trial 0 runs them as they are
            params = dict(defaults)
        else:
            params = {n: _suggest(trial, n, d) for n, d in sp.params.items()}
        rec = {"number": trial.number, "state": "running", "value": np.nan, "epochs": None,
               **{f"param_{n}": v for n, v in params.items()}, "fit_time": 0.0,
               "eval_time": 0.0, "error": None}
        records[trial.number] = rec
        k = k_of(params)
        value = None
        for step, epochs in enumerate(rungs):
            need_fit = clock.fit_time(k, epochs, train.nnz)
            need_eval = clock.eval_time(k)
            if need_fit is not None:
                need = need_fit + (need_eval or 0.0) + max(reserve(), refit_cost(params, rungs[-1]))
                if time.perf_counter() + need > deadline:
                    rec["state"] = "skipped" if step == 0 else "pruned"
                    state["skips"] += 1
                    cheapest = min(f[3] for f in clock.fits)
                    if state["skips"] >= 3 or time.perf_counter() + cheapest + reserve() > deadline:
                        # several proposals in a row did not fit, or nothing could: stop
                        state["stop"] = True
                        trial.study.stop()
                    raise optuna.TrialPruned()
            state["skips"] = 0
            est = _make(cls, base, params, epochs)
            fit_kwargs = {"validation": val} if sp.early_stopping else {}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    est.fit(train, **fit_kwargs)
                    t1 = time.perf_counter()
                    value = float(evaluate(est, val_eval, [metric])[metric])
                    t2 = time.perf_counter()
            except (ValueError, FloatingPointError, ArithmeticError, np.linalg.LinAlgError,
                    MemoryError) as exc:
                rec["state"], rec["error"] = "failed", f"{type(exc).__name__}: {exc}"
                return float("nan")
            ran = getattr(est, "n_epochs_", None) if sp.early_stopping else epochs
            if sp.early_stopping and getattr(est, "best_epoch_", None) is not None:
                ran = int(est.best_epoch_) + 1
            # early stopping: the epochs that ran are what the time paid for
            ran_total = getattr(est, "n_epochs_", None) if sp.early_stopping else epochs
            clock.fits.append((k, ran_total or epochs or 1, train.nnz, t1 - t0))
            clock.evals.append((k, t2 - t1))
            rec["fit_time"] += t1 - t0
            rec["eval_time"] += t2 - t1
            rec["value"], rec["epochs"] = value, ran
            if not np.isfinite(value):
                rec["state"], rec["error"] = "failed", f"{metric} is not finite"
                return float("nan")
            if epochs is not None:
                trial.report(value, epochs)
            if trial.number == 0 and state["raw_defaults"]:
                # what "auto" and the like resolved to, for the sampler (see below)
                state["resolved"] = {n: getattr(est, n + "_", v) for n, v in params.items()}
            # the defaults (trial 0) always run to the end, unless time runs out: the
            # reference every other trial is compared with (their rung values are recorded)
            if step < len(rungs) - 1 and trial.should_prune() and trial.number != 0:
                rec["state"] = "pruned"
                raise optuna.TrialPruned()
        rec["state"] = "complete"
        b = state["best"]
        if b is None or (value > b[0] if maximize else value < b[0]):
            state["best"] = (value, params, rec["epochs"])
        if verbose:
            import sys
            print(f"trial {trial.number}: {metric}={value:.4f} {params} "
                  f"({rec['fit_time']:.1f}+{rec['eval_time']:.1f} s)", file=sys.stderr)
        return value

    # compile the model's kernels on a sliver of the data first, so that the first measured
    # fit (which every time prediction starts from) is not mostly compilation
    few = train.subset(train.user_index < min(200, train.n_users))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _make(cls, base, {}, None if sp.epochs is None else 1).fit(few)
    except Exception:  # noqa: BLE001 - a warm-up that fails only means no warm-up
        pass
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seed = seed_from(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        smp = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True)
               if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
        if pruner == "hyperband" and len(rungs) > 1:
            prn = optuna.pruners.HyperbandPruner(min_resource=rungs[0], max_resource=rungs[-1],
                                                 reduction_factor=_ETA)
        elif pruner == "halving" and len(rungs) > 1:
            prn = optuna.pruners.SuccessiveHalvingPruner(min_resource=rungs[0],
                                                         reduction_factor=_ETA)
        else:
            prn = optuna.pruners.NopPruner()
        study = optuna.create_study(direction="maximize" if maximize else "minimize",
                                    sampler=smp, pruner=prn)
    if all(_in_range(v, sp.params[n]) for n, v in defaults.items()) and sp.params:
        study.enqueue_trial(defaults)
    else:
        state["raw_defaults"] = bool(sp.params)
    if not sp.params:
        n_trials = 1  # nothing to search: one fit measures the defaults
    while not state["stop"]:
        left = deadline - time.perf_counter()
        if left <= 0 or (n_trials is not None and len(records) >= n_trials):
            break
        study.optimize(objective, n_trials=1, timeout=left, gc_after_trial=False)
        if len(study.trials) == 1 and state["raw_defaults"]:
            _tell_resolved_defaults(optuna, study, sp, state.get("resolved"))
        if len(sp.params) and len(study.trials) >= _grid_size(sp):
            break
    search_time = time.perf_counter() - t_start

    done = [r for r in records.values() if r["state"] == "complete"]
    if not done:
        # nothing ran to the last rung: take the best of what was measured at any rung
        done = [r for r in records.values() if r["state"] == "pruned" and np.isfinite(r["value"])]
    if not done:
        raise RuntimeError(f"no trial of {cls.__name__} finished within time_budget="
                           f"{time_budget:g} s (or every trial failed: "
                           f"{[r['error'] for r in records.values() if r['error']][:3]}); "
                           f"give more time")
    pick = max if maximize else min
    best = pick(done, key=lambda r: r["value"])
    best_params = {n: best[f"param_{n}"] for n in sp.params}
    if sp.epochs is not None:
        best_params["n_epochs"] = int(best["epochs"] if sp.early_stopping and best["epochs"]
                                      else rungs[-1])
    t0 = time.perf_counter()
    refit_params = {k: v for k, v in best_params.items() if k != "n_epochs"}
    carry = getattr(cls, "_carry_params", None)
    if carry is not None:
        # the search fitted on the carved part: values whose meaning depends on the data's
        # density or scale are moved to what means the same on all of it
        refit_params = carry({**base, **refit_params}, train, ratings)
        refit_params = {k: refit_params[k] for k in best_params if k != "n_epochs"}
    final = _make(cls, base, refit_params, best_params.get("n_epochs"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        final.fit(ratings)
    if output is not None:
        final.save(output)
    refit_time = time.perf_counter() - t0
    trials = pd.DataFrame(sorted(records.values(), key=lambda r: r["number"]))
    result = AutoTuneResult(best_params_=best_params, best_score_=float(best["value"]),
                            best_model_=final, trials=trials, metric=metric,
                            greater_is_better=maximize, model_name=name, n_train=train.nnz,
                            n_validation=val_eval.nnz, search_time_=search_time,
                            refit_time_=refit_time, elapsed_=time.perf_counter() - t_start,
                            time_budget=time_budget, study=study,
                            refit_params_={**refit_params, **(
                                {"n_epochs": best_params["n_epochs"]}
                                if "n_epochs" in best_params else {})})
    if plot is not None:
        plot_trials(result, path=plot)
        result.elapsed_ = time.perf_counter() - t_start
    return result


def _tell_resolved_defaults(optuna, study, space, resolved):
    """Give the sampler trial 0 again with its symbolic defaults replaced by the numbers they
    resolved to (e.g. ``alpha="auto"`` -> ``alpha_``), as a finished trial: defaults are usually
    good, and TPE can only model numbers. Trial numbers then skip one."""
    first = study.trials[0]
    if resolved is None or first.state != optuna.trial.TrialState.COMPLETE:
        return
    values = {}
    for name, dim in space.params.items():
        v = resolved.get(name)
        if isinstance(v, np.generic):
            v = v.item()
        if dim.kind == "int" and isinstance(v, float) and v.is_integer():
            v = int(v)
        if not _in_range(v, dim):
            return
        values[name] = v
    dists = {}
    for name, dim in space.params.items():
        if dim.kind == "int":
            dists[name] = optuna.distributions.IntDistribution(int(dim.low), int(dim.high),
                                                               log=dim.log)
        elif dim.kind == "float":
            dists[name] = optuna.distributions.FloatDistribution(float(dim.low), float(dim.high),
                                                                 log=dim.log)
        else:
            dists[name] = optuna.distributions.CategoricalDistribution(list(dim.choices))
    study.add_trial(optuna.trial.create_trial(
        params=values, distributions=dists, value=first.value,
        intermediate_values=dict(first.intermediate_values)))


def _grid_size(space):
    """Number of distinct points when every dimension is a choice (else infinite)."""
    n = 1
    for d in space.params.values():
        if d.kind != "choice":
            return math.inf
        n *= len(d.choices)
    return n


# ---------------------------------------------------------------------- reporting
def format_trials(result, max_rows=None):
    """The trials as a plain text table, best first (complete trials, then the others).

    Parameters
    ----------
    result : AutoTuneResult
    max_rows : int, optional
        Show at most this many rows.

    Returns
    -------
    str
    """
    t = result.trials
    params = [c for c in t.columns if c.startswith("param_")]
    order = {"complete": 0, "pruned": 1, "skipped": 2, "failed": 3, "running": 4}
    sign = -1 if result.greater_is_better else 1
    rows = sorted(t.to_dict(orient="records"),
                  key=lambda r: (order.get(r["state"], 5),
                                 sign * r["value"] if np.isfinite(r["value"]) else math.inf))
    if max_rows is not None:
        rows = rows[:max_rows]
    head = ["trial", "state", result.metric, "epochs"] + [c[6:] for c in params] + ["fit s",
                                                                                     "eval s"]

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            if not np.isfinite(v):
                return "-"
            return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        return "-" if v is None else str(v)

    body = [[str(r["number"]), r["state"], fmt(r["value"]), fmt(r["epochs"])]
            + [fmt(r[c]) for c in params] + [f"{r['fit_time']:.1f}", f"{r['eval_time']:.1f}"]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if j not in (1,) else c.ljust(w)
                        for j, (c, w) in enumerate(zip(row, widths))).rstrip() for row in body]
    return "\n".join(lines)


def plot_trials(result, *, path=None, figsize=None, dpi=100):
    """Chart of a search: the score of every trial in order (the best so far as a line), and the
    score against each searched hyperparameter.

    Parameters
    ----------
    result : AutoTuneResult
    path : str or Path, optional
        Write the figure here.
    figsize : (float, float), optional
    dpi : int, default=100

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..plots import _mpl

    _, Figure = _mpl()
    t = result.trials
    params = [c for c in t.columns if c.startswith("param_")]
    n = 1 + len(params)
    # a fixed layout: "constrained" costs seconds per chart, and the chart is inside the budget
    fig = Figure(figsize=figsize or (3.6 * n, 3.6), dpi=dpi)
    axes = fig.subplots(1, n, squeeze=False)[0]
    fig.subplots_adjust(left=0.6 / (3.6 * n) + 0.04, right=0.98, bottom=0.15, top=0.88,
                        wspace=0.35)
    ok = np.isfinite(t["value"].to_numpy(dtype=float))
    colors = {"complete": "tab:blue", "pruned": "tab:gray", "skipped": "tab:gray",
              "failed": "tab:red", "running": "tab:gray"}
    col = [colors.get(s, "tab:gray") for s in t["state"]]
    ax = axes[0]
    ax.scatter(t["number"][ok], t["value"][ok], c=[c for c, o in zip(col, ok) if o], s=18)
    comp = t[t["state"] == "complete"]
    if len(comp):
        vals = comp["value"].to_numpy(dtype=float)
        best = np.maximum.accumulate(vals) if result.greater_is_better else \
            np.minimum.accumulate(vals)
        ax.step(comp["number"], best, where="post", color="tab:orange", label="best so far")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {result.metric}")
    ax.set_title(f"{result.model_name}: {len(t)} trials (grey: pruned)", fontsize=9)
    import pandas as pd

    for ax, c in zip(axes[1:], params):
        x = t[c][ok]
        as_num = pd.to_numeric(x, errors="coerce")
        if as_num.notna().sum() >= max(1, len(x) - 1) and not pd.api.types.is_bool_dtype(x):
            x = as_num  # a numeric range with at most one symbolic default ("auto") left out
        numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
        ax.scatter(x if numeric else x.astype(str), t["value"][ok],
                   c=[cc for cc, o in zip(col, ok) if o], s=18)
        xv = x.dropna() if numeric else x
        if numeric and len(xv) and (xv > 0).all() and xv.max() / max(xv.min(), 1e-300) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(c[6:])
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
