"""Hyperparameter search in the scikit-learn manner: :class:`GridSearch`, :class:`RandomSearch`.

Every candidate is cross-validated on the same folds, so their scores differ only by the
hyperparameters. Early stopping is respected: with ``validation_size`` each training part gives
up a validation part to ``fit(validation=...)``, and the epochs actually run are reported.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .._validation import check_bool, check_float, check_int, rng_from, seed_from
from ..data import as_ratings
from .cross_validation import (_fit_one, check_choice_unseen, default_metrics,
                               greater_is_better, parse_metrics, run_folds)
from .splits import check_cv

__all__ = ["GridSearch", "RandomSearch", "parameter_grid"]


def _as_list_of_dicts(spec, what):
    if isinstance(spec, dict):
        spec = [spec]
    if not isinstance(spec, (list, tuple)) or not spec or not all(isinstance(d, dict)
                                                                 for d in spec):
        raise TypeError(f"{what} must be a dict of name -> values (or a list of such dicts), "
                        f"got {spec!r}")
    return list(spec)


def _plain(value):
    """numpy scalars -> Python scalars, so parameters print and save cleanly."""
    return value.item() if isinstance(value, np.generic) else value


def parameter_grid(param_grid):
    """Every combination of a grid: a list of dicts (in the order of the grid's keys).

    Parameters
    ----------
    param_grid : dict of str -> list, or list of such dicts
        Each value lists the settings to try; a list of dicts is the union of their grids.
    """
    out = []
    for grid in _as_list_of_dicts(param_grid, "param_grid"):
        keys = list(grid)
        values = []
        for key in keys:
            v = grid[key]
            if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                raise TypeError(f"param_grid[{key!r}] must be a list of values, got {v!r}")
            v = [_plain(x) for x in v]
            if not v:
                raise ValueError(f"param_grid[{key!r}] is empty")
            values.append(v)
        out.extend(dict(zip(keys, combo)) for combo in itertools.product(*values))
    return out


class _Search:
    """Shared machinery; subclasses say which candidates to try."""

    def __init__(self, model, *, cv=3, scoring=None, metrics=None, refit=True, random_state=None,
                 unseen="keep", validation_size=None, fit_params=None, exclude_seen=True,
                 verbose=False):
        self.model = model
        self.cv = cv
        self.scoring = scoring
        self.metrics = metrics
        self.refit = refit
        self.random_state = random_state
        self.unseen = unseen
        self.validation_size = validation_size
        self.fit_params = fit_params
        self.exclude_seen = exclude_seen
        self.verbose = verbose

    def _candidates(self, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, data=None):
        """Cross-validate every candidate, pick the best by ``scoring``, refit it on all data.

        Parameters
        ----------
        data : Ratings or anything :func:`mfrec.as_ratings` accepts
            May be omitted when ``cv`` is a list of (train, test) pairs (then ``refit`` is
            skipped unless data is given).

        Returns
        -------
        self
        """
        check_bool("refit", self.refit)
        check_choice_unseen(self.unseen)
        if self.validation_size is not None:
            check_float("validation_size", self.validation_size, low=0.0, high=1.0,
                        low_open=True)
        metrics = parse_metrics(default_metrics(self.model) if self.metrics is None
                                else self.metrics)
        scoring = parse_metrics([self.scoring if self.scoring is not None else metrics[0]])[0]
        if scoring not in metrics:
            metrics = [scoring] + metrics
        rng = rng_from(self.random_state)
        candidates = self._candidates(rng)
        valid = self.model._param_names()
        for params in candidates:  # bad names or values fail before any fitting
            bad = [k for k in params if k not in valid]
            if bad:
                raise ValueError(f"{bad[0]!r} is not a parameter of {type(self.model).__name__}; "
                                 f"valid parameters: {valid}")
            trial = self.model.clone().set_params(**params)
            if hasattr(trial, "_validate_params"):
                trial._validate_params()
        splitter = check_cv(self.cv, random_state=seed_from(rng), unseen=self.unseen)
        ratings = None if data is None else as_ratings(data)
        if ratings is None and not hasattr(splitter, "pairs"):
            raise ValueError("data is required unless cv is a list of (train, test) pairs")
        splits = list(splitter.split(ratings))
        fit_seed = seed_from(rng)
        progress = None
        if self.verbose:
            from tqdm.auto import tqdm
            progress = tqdm(total=len(candidates) * len(splits), desc=type(self).__name__,
                            unit="fit")
        rows = []
        try:
            for params in candidates:
                est = self.model.clone().set_params(**params)
                folds = run_folds(est, splits, metrics, fit_params=self.fit_params,
                                  validation_size=self.validation_size, random_state=fit_seed,
                                  exclude_seen=self.exclude_seen, progress=progress)
                rows.append(self._row(params, folds, metrics))
        finally:
            if progress is not None:
                progress.close()
        res = pd.DataFrame(rows)
        mean = res[f"mean_{scoring}"]
        best = int(np.argmax(mean.to_numpy()) if greater_is_better(scoring)
                   else np.argmin(mean.to_numpy()))
        res[f"rank_{scoring}"] = mean.rank(ascending=not greater_is_better(scoring),
                                          method="min").astype(int)
        self.cv_results_ = res
        self.scoring_ = scoring
        self.best_index_ = best
        self.best_params_ = dict(candidates[best])
        self.best_score_ = float(mean.iloc[best])
        self.n_splits_ = len(splits)
        if self.refit and ratings is not None:
            est = self.model.clone().set_params(**self.best_params_)
            self.best_model_ = _fit_one(est, ratings, fit_params=self.fit_params,
                                        validation_size=self.validation_size,
                                        rng=rng_from(fit_seed))
        return self

    @staticmethod
    def _row(params, folds, metrics):
        row = {"params": dict(params)}
        for k, v in params.items():
            row[f"param_{k}"] = v
        for m in metrics:
            vals = np.array([f[m] for f in folds], dtype=float)
            row[f"mean_{m}"] = float(vals.mean())
            row[f"std_{m}"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
            for j, v in enumerate(vals):
                row[f"split{j}_{m}"] = float(v)
        row["mean_fit_time"] = float(np.mean([f["fit_time"] for f in folds]))
        row["mean_test_time"] = float(np.mean([f["test_time"] for f in folds]))
        if all("epochs" in f for f in folds):
            row["mean_epochs"] = float(np.mean([f["epochs"] for f in folds]))
        return row

    @property
    def best_estimator_(self):
        """scikit-learn's name for :attr:`best_model_`."""
        return self.best_model_

    def _fitted_best(self):
        if not hasattr(self, "best_model_"):
            raise AttributeError(f"{type(self).__name__} has no refitted model; call fit(data) "
                                 f"with refit=True")
        return self.best_model_

    def predict(self, users, items, **kwargs):
        """``best_model_.predict``."""
        return self._fitted_best().predict(users, items, **kwargs)

    def recommend(self, users, **kwargs):
        """``best_model_.recommend``."""
        return self._fitted_best().recommend(users, **kwargs)


class GridSearch(_Search):
    """Exhaustive search over a grid of hyperparameters, cross-validated.

    Parameters
    ----------
    model : FactorModel
        The template; every candidate is ``model.clone().set_params(**candidate)``.
    param_grid : dict of str -> list, or list of such dicts
        E.g. ``{"n_factors": [20, 50], "regularization": [0.02, 0.05]}``.
    cv : int, splitter or list of (train, test), default=3
        As in :func:`~mfrec.evaluation.cross_validate`; the same folds serve every candidate.
    scoring : str, optional
        The metric that picks the best candidate (lower is better for rmse and mae, higher for
        ranking metrics); default the first of ``metrics``.
    metrics : list of str, optional
        Metrics recorded for every candidate; default as in :func:`~mfrec.evaluation.evaluate`.
    refit : bool, default=True
        Refit the best candidate on all of ``data`` as ``best_model_``.
    random_state : int, Generator or None
        Seeds the folds and validation holdouts.
    unseen : {"keep", "drop"}, default="keep"
    validation_size : float in (0, 1), optional
        Held out of each training part for ``fit(validation=...)`` (early stopping).
    fit_params : dict, optional
    exclude_seen : bool, default=True
    verbose : bool, default=False

    Attributes
    ----------
    cv_results_ : pandas.DataFrame
        One row per candidate: ``params``, ``param_<name>``, ``mean_<metric>``,
        ``std_<metric>``, ``split<j>_<metric>``, ``mean_fit_time``, ``mean_test_time``,
        ``mean_epochs`` (iterative models), ``rank_<scoring>``.
    best_params_ : dict
    best_score_ : float
        Mean cross-validated ``scoring`` of the best candidate.
    best_index_ : int
        Its row in ``cv_results_``.
    best_model_ : FactorModel
        Refitted on all data (``refit=True``); also as ``best_estimator_``.

    Examples
    --------
    >>> from mfrec import BiasedMF  # doctest: +SKIP
    >>> search = GridSearch(BiasedMF(), {"n_factors": [20, 50]}, cv=3)  # doctest: +SKIP
    >>> search.fit(ratings)  # doctest: +SKIP
    >>> search.best_params_  # doctest: +SKIP
    """

    def __init__(self, model, param_grid, *, cv=3, scoring=None, metrics=None, refit=True,
                 random_state=None, unseen="keep", validation_size=None, fit_params=None,
                 exclude_seen=True, verbose=False):
        super().__init__(model, cv=cv, scoring=scoring, metrics=metrics, refit=refit,
                         random_state=random_state, unseen=unseen,
                         validation_size=validation_size, fit_params=fit_params,
                         exclude_seen=exclude_seen, verbose=verbose)
        self.param_grid = param_grid

    def _candidates(self, rng):
        return parameter_grid(self.param_grid)


class RandomSearch(_Search):
    """Search over ``n_iter`` random draws of hyperparameters, cross-validated.

    Parameters
    ----------
    model : FactorModel
    param_distributions : dict of str -> list or distribution, or list of such dicts
        A list is drawn from uniformly; a distribution is anything with ``rvs(random_state=)``
        (``scipy.stats.loguniform(1e-3, 1e-1)``, ``scipy.stats.randint(10, 200)``). With a list
        of dicts, each draw first picks one dict.
    n_iter : int >= 1, default=10
        Candidates drawn. When every value is a list, draws are distinct combinations and
        ``n_iter`` is capped at the size of the grid.
    cv, scoring, metrics, refit, random_state, unseen, validation_size, fit_params,
    exclude_seen, verbose
        As in :class:`GridSearch`.

    Attributes
    ----------
    As in :class:`GridSearch`.
    """

    def __init__(self, model, param_distributions, *, n_iter=10, cv=3, scoring=None,
                 metrics=None, refit=True, random_state=None, unseen="keep",
                 validation_size=None, fit_params=None, exclude_seen=True, verbose=False):
        super().__init__(model, cv=cv, scoring=scoring, metrics=metrics, refit=refit,
                         random_state=random_state, unseen=unseen,
                         validation_size=validation_size, fit_params=fit_params,
                         exclude_seen=exclude_seen, verbose=verbose)
        self.param_distributions = param_distributions
        self.n_iter = n_iter

    def _candidates(self, rng):
        n_iter = check_int("n_iter", self.n_iter, low=1)
        dists = _as_list_of_dicts(self.param_distributions, "param_distributions")
        for d in dists:
            for key, v in d.items():
                if not (hasattr(v, "rvs") or (hasattr(v, "__iter__")
                                               and not isinstance(v, (str, bytes)) and len(v))):
                    raise TypeError(f"param_distributions[{key!r}] must be a non-empty list or a "
                                    f"distribution with rvs(), got {v!r}")
        if all(not hasattr(v, "rvs") for d in dists for v in d.values()):
            grid = parameter_grid(dists)
            pick = rng.choice(len(grid), size=min(n_iter, len(grid)), replace=False)
            return [grid[int(j)] for j in pick]
        out = []
        for _ in range(n_iter):
            d = dists[int(rng.integers(len(dists)))]
            params = {}
            for key, v in d.items():
                if hasattr(v, "rvs"):
                    params[key] = _plain(v.rvs(random_state=seed_from(rng)))
                else:
                    params[key] = _plain(list(v)[int(rng.integers(len(v)))])
            out.append(params)
        return out

