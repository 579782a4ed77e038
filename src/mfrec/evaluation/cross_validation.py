"""Scoring a fitted model on held-out ratings, and k-fold cross-validation.

Metric names are the keys of every result: ``"rmse"``, ``"mae"`` (rating metrics, lower is
better) and the ranking metrics of :func:`mfrec.evaluation.ranking.evaluate_ranking` such as
``"ndcg@10"``, ``"precision@5"``, ``"recall@20"``, ``"map@10"``, ``"hit_rate@10"``,
``"coverage@10"``, ``"mrr"``, ``"auc"`` (higher is better).
"""
from __future__ import annotations

import inspect
import re
import time

import numpy as np
import pandas as pd

from .._validation import check_float, rng_from
from ..data import as_ratings
from .metrics import mae, rmse
from .splits import UNSEEN_POLICIES, check_cv, split_report, train_test_split

__all__ = ["evaluate", "cross_validate", "parse_metrics", "greater_is_better",
           "default_metrics", "RATING_METRICS"]

RATING_METRICS = {"rmse": rmse, "mae": mae}
_METRIC_RE = re.compile(r"^([a-z_]+)(?:@([1-9][0-9]*))?$")
# ranking metrics that are defined without a cut-off
_UNCUT = ("mrr", "auc")


def parse_metrics(metrics):
    """Normalise a metric list: ``"rmse,ndcg@10"`` or ``["RMSE", "ndcg@10"]`` -> names.

    Raises ``ValueError`` naming a malformed entry.
    """
    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",")]
    try:
        names = [str(m).strip().lower() for m in metrics]
    except TypeError:
        raise TypeError(f"metrics must be a list of names such as ['rmse', 'ndcg@10'], got "
                        f"{metrics!r}") from None
    if not names:
        raise ValueError("metrics is empty; name at least one, e.g. ['rmse']")
    from .ranking import METRICS as ranking_names

    out = []
    for name in names:
        m = _METRIC_RE.match(name)
        if m is None or (m.group(1) not in RATING_METRICS and m.group(1) not in ranking_names) \
                or (m.group(1) in RATING_METRICS and m.group(2)) or (
                m.group(1) in _UNCUT and m.group(2)):
            raise ValueError(f"metric {name!r} is not understood; use 'rmse', 'mae' or a "
                             f"ranking metric {ranking_names} with a cut-off, such as "
                             f"'ndcg@10', 'precision@5' ('mrr' and 'auc' take none)")
        if m.group(1) not in RATING_METRICS and m.group(1) not in _UNCUT and not m.group(2):
            name = f"{name}@10"  # a cut-off metric named bare gets the usual cut-off
        out.append(name)
    return list(dict.fromkeys(out))


def greater_is_better(metric):
    """Whether a larger value of ``metric`` is better (False for rmse and mae)."""
    return parse_metrics([metric])[0] not in RATING_METRICS


def default_metrics(model):
    """Rating metrics for rating models, ranking metrics for implicit-feedback models."""
    from ..models import is_implicit

    if is_implicit(model):
        return ["ndcg@10", "precision@10", "recall@10"]
    return ["rmse", "mae"]


def _rating_predictions(model, test):
    """Predictions for the test ratings; users or items without a training rating are scored
    with the model's fallback (unknown index), whatever factors the model holds for them."""
    uidx = _model_index(model.user_vocab_, test.user_vocab, test.user_index)
    iidx = _model_index(model.item_vocab_, test.item_vocab, test.item_index)
    seen = getattr(model, "user_items_", None)
    if seen is not None:
        u_cnt = np.diff(seen.indptr) if seen.format == "csr" else np.bincount(
            seen.tocoo().row, minlength=seen.shape[0])
        i_cnt = np.bincount(seen.indices, minlength=seen.shape[1]) if seen.format == "csr" \
            else np.diff(seen.indptr)
        uidx[(uidx >= 0) & (u_cnt[np.maximum(uidx, 0)] == 0)] = -1
        iidx[(iidx >= 0) & (i_cnt[np.maximum(iidx, 0)] == 0)] = -1
    if hasattr(model, "_score_pairs"):
        out = np.asarray(model._score_pairs(uidx, iidx), dtype=np.float64)
        if getattr(model, "_clip_predictions", True):
            np.clip(out, *model.rating_range_, out=out)
        return out
    return np.asarray(model.predict(test.user_vocab.to_ids(test.user_index),
                                    test.item_vocab.to_ids(test.item_index)), dtype=np.float64)


def _model_index(model_vocab, test_vocab, test_index):
    if test_vocab is model_vocab:
        return np.asarray(test_index, dtype=np.int64).copy()
    return model_vocab.lookup(test_vocab.ids, unknown="mask")[test_index]


def evaluate(model, test, metrics=None, *, exclude_seen=True):
    """Score a fitted model on held-out ratings.

    Parameters
    ----------
    model : fitted FactorModel
    test : Ratings or anything :func:`mfrec.as_ratings` accepts
        Held-out ratings; raw ids are matched to the model's. Users or items the model never saw
        in training are scored with its fallback (global mean plus the known bias).
    metrics : list of str, optional
        Names such as ``["rmse", "mae", "ndcg@10"]``; default rmse and mae for rating models,
        ranking metrics for implicit-feedback models.
    exclude_seen : bool, default=True
        For ranking metrics: leave the training interactions out of each user's list.

    Returns
    -------
    dict
        Metric name -> float, in the order asked.

    Examples
    --------
    >>> from mfrec.evaluation import evaluate  # doctest: +SKIP
    >>> evaluate(model, test, ["rmse", "ndcg@10"])  # doctest: +SKIP
    {'rmse': 0.93, 'ndcg@10': 0.11}
    """
    if hasattr(model, "_check_fitted"):
        model._check_fitted()
    test = as_ratings(test)
    names = parse_metrics(default_metrics(model) if metrics is None else metrics)
    out = {}
    rating = [n for n in names if n in RATING_METRICS]
    if rating:
        pred = _rating_predictions(model, test)
        for n in rating:
            out[n] = RATING_METRICS[n](test.values, pred)
    ranking = [n for n in names if n not in RATING_METRICS]
    if ranking:
        out.update(_ranking_metrics(model, test, ranking, exclude_seen))
    return {n: float(out[n]) for n in names}


def _ranking_metrics(model, test, names, exclude_seen):
    from .ranking import evaluate_ranking  # lands separately; imported on first use

    by_k = {}
    for n in names:
        m = _METRIC_RE.match(n)
        k = int(m.group(2)) if m.group(2) else None
        by_k.setdefault(k, []).append(n)
    if None in by_k:  # cut-off-free metrics ride along with any k
        uncut = by_k.pop(None)
        by_k.setdefault(next(iter(by_k), 10), []).extend(uncut)
    out = {}
    for k, group in by_k.items():
        bases = list(dict.fromkeys(n.split("@")[0] for n in group))
        res = evaluate_ranking(model, test, k=k, metrics=bases, exclude_seen=exclude_seen)
        for n in group:
            if n not in res:
                raise ValueError(f"ranking metric {n!r} is not computed by evaluate_ranking "
                                 f"(available: {sorted(res)})")
            out[n] = res[n]
    return out


# ---------------------------------------------------------------------- folds
def _accepts(fn, name):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _fit_one(model, train, *, fit_params=None, validation_size=None, rng=None):
    """Fit ``model`` on ``train``; with ``validation_size`` a random part of ``train`` is given
    to ``fit(validation=...)`` for early stopping (never the test part)."""
    fit_params = dict(fit_params or {})
    if validation_size is not None:
        if not _accepts(model.fit, "validation"):
            raise ValueError(f"validation_size={validation_size} needs a model whose fit accepts "
                             f"validation=; {type(model).__name__}.fit does not")
        train, val = train_test_split(train, test_size=validation_size, random_state=rng)
        fit_params["validation"] = val
    return model.fit(train, **fit_params) or model


def _n_epochs_run(model):
    n = getattr(model, "n_epochs_", None)
    if isinstance(n, (int, np.integer)):
        return int(n)
    hist = getattr(model, "loss_history_", None)
    try:
        return len(hist) if hist is not None and len(hist) else None
    except TypeError:
        return None


def run_folds(model, splits, metrics, *, fit_params=None, validation_size=None,
              random_state=None, exclude_seen=True, progress=None, return_models=False):
    """Fit a clone of ``model`` on each (train, test) pair and score it; list of row dicts."""
    rng = rng_from(random_state)
    rows, models = [], []
    for fold, (train, test) in enumerate(splits):
        est = model.clone()
        t0 = time.perf_counter()
        est = _fit_one(est, train, fit_params=fit_params, validation_size=validation_size,
                       rng=rng)
        t1 = time.perf_counter()
        scores = evaluate(est, test, metrics, exclude_seen=exclude_seen)
        t2 = time.perf_counter()
        rep = split_report(train, test)
        row = {**scores, "fit_time": t1 - t0, "test_time": t2 - t1, "n_train": rep["n_train"],
               "n_test": rep["n_test"], "unseen_ratings": rep["unseen_ratings"]}
        epochs = _n_epochs_run(est)
        if epochs is not None:
            row["epochs"] = epochs
        rows.append(row)
        if return_models:
            models.append(est)
        if progress is not None:
            progress.update(1)
            progress.set_postfix({m: f"{scores[m]:.4f}" for m in list(scores)[:2]})
    return (rows, models) if return_models else rows


def cross_validate(model, data=None, cv=5, metrics=None, *, random_state=None, unseen="keep",
                   fit_params=None, validation_size=None, exclude_seen=True,
                   return_models=False, verbose=False):
    """Cross-validate a model: fit a clone on each training part, score it on the test part.

    Parameters
    ----------
    model : FactorModel
        Not modified; each fold fits ``model.clone()``.
    data : Ratings or anything :func:`mfrec.as_ratings` accepts
        May be omitted when ``cv`` is a list of ready (train, test) pairs.
    cv : int, splitter or iterable of (train, test), default=5
        An int is the number of shuffled :class:`~mfrec.evaluation.KFold` folds; any object with
        ``split(data)`` (:class:`~mfrec.evaluation.ShuffleSplit`, ...) or a list of pairs (e.g.
        MovieLens ``u1``..``u5``) also works.
    metrics : list of str, optional
        Rating and ranking metrics alike (``"rmse"``, ``"mae"``, ``"ndcg@10"``, ...); default as
        in :func:`evaluate`.
    random_state : int, Generator or None
        Seeds the folds (for an int ``cv``) and the validation holdout.
    unseen : {"keep", "drop"}, default="keep"
        Test ratings of users or items with no training rating (for an int ``cv``): keep and
        score them with the model's fallback, or drop them.
    fit_params : dict, optional
        Extra keyword arguments for ``fit``.
    validation_size : float in (0, 1), optional
        Hold this fraction of each training part out and pass it as ``fit(validation=...)`` so
        models with early stopping can use it; the test part is never seen during fitting.
    exclude_seen : bool, default=True
        For ranking metrics.
    return_models : bool, default=False
        Also return the fitted model of each fold.
    verbose : bool, default=False
        Show a progress bar over folds.

    Returns
    -------
    results : pandas.DataFrame
        One row per fold (index 1..k) then ``"mean"`` and ``"std"`` (sample standard deviation)
        rows; columns are the metrics, then ``fit_time`` and ``test_time`` (seconds),
        ``n_train``, ``n_test``, ``unseen_ratings`` (test ratings with a user or item unseen in
        training) and, for iterative models, ``epochs`` (epochs run, fewer under early
        stopping).
    models : list of FactorModel
        Only with ``return_models=True``.

    Examples
    --------
    >>> from mfrec import BiasedMF  # doctest: +SKIP
    >>> cross_validate(BiasedMF(), "u.data", cv=5, metrics=["rmse", "ndcg@10"])  # doctest: +SKIP
    """
    check_choice_unseen(unseen)
    if validation_size is not None:
        validation_size = check_float("validation_size", validation_size, low=0.0, high=1.0,
                                      low_open=True)
    splitter = check_cv(cv, random_state=random_state, unseen=unseen)
    if data is None and not hasattr(splitter, "pairs"):
        raise ValueError("data is required unless cv is a list of (train, test) pairs")
    ratings = None if data is None else as_ratings(data)
    names = parse_metrics(default_metrics(model) if metrics is None else metrics)
    if hasattr(model, "_validate_params"):
        model.clone()._validate_params()  # bad hyperparameters fail before any fold runs
    progress = None
    if verbose:
        from tqdm.auto import tqdm
        progress = tqdm(total=splitter.get_n_splits(ratings), desc="cross-validation",
                        unit="fold")
    try:
        out = run_folds(model, splitter.split(ratings), names, fit_params=fit_params,
                        validation_size=validation_size, random_state=random_state,
                        exclude_seen=exclude_seen, progress=progress,
                        return_models=return_models)
    finally:
        if progress is not None:
            progress.close()
    rows, models = out if return_models else (out, None)
    table = summarize_folds(rows)
    return (table, models) if return_models else table


def check_choice_unseen(unseen):
    if unseen not in UNSEEN_POLICIES:
        raise ValueError(f"unseen must be one of {UNSEEN_POLICIES}, got {unseen!r}")


def summarize_folds(rows):
    """Fold rows -> DataFrame with 1..k, then mean and std rows."""
    folds = pd.DataFrame(rows, index=pd.RangeIndex(1, len(rows) + 1))
    stats = pd.DataFrame([folds.mean(numeric_only=True), folds.std(numeric_only=True)],
                         index=["mean", "std"])
    if len(rows) == 1:
        stats.loc["std"] = 0.0
    table = pd.concat([folds.astype(float), stats])
    table.index.name = "fold"
    return table
