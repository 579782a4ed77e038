"""Plots (extra ``plot``: ``pip install 'mfrec[plot]'``); matplotlib is imported on first use.

Every function draws on ``ax`` when given, else on a new figure of ``figsize`` inches at ``dpi``
(made without pyplot, so no display is needed), writes it to ``path`` when given, and returns
the figure.

- :func:`learning_curve`: training loss (and validation metric) per epoch of a fitted model.
- :func:`item_map`: a 2-D PCA map of the item factors, most popular items labelled.
- :func:`compare`: a chart of :func:`~mfrec.evaluation.cross_validate` results (one model, or a
  dict of several) or of a search's ``cv_results_``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["learning_curve", "item_map", "compare", "fit_report"]

# cross_validate columns that are not metrics
_NOT_METRICS = ("fit_time", "test_time", "n_train", "n_test", "unseen_ratings", "epochs")


def _mpl():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'mfrec[plot]'") from None
    return matplotlib, Figure


def _figure(ax, figsize, dpi):
    if ax is not None:
        return ax.figure, ax
    _, Figure = _mpl()
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig, path, dpi):
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _histories(model):
    loss = getattr(model, "loss_history_", None)
    if loss is None or len(loss) == 0:
        raise ValueError(f"{type(model).__name__} has no loss_history_ to plot (it is not fitted, "
                         f"or it is not an iterative model)")
    loss = np.asarray(loss, dtype=float)
    val = getattr(model, "validation_history_", None)
    curves = {}
    if val is not None and len(val):
        first = val[0]
        if isinstance(first, dict):
            for key in first:
                curves[str(key)] = np.array([float(v.get(key, np.nan)) for v in val])
        else:
            curves["validation"] = np.asarray(val, dtype=float)
    return loss, curves


def learning_curve(model, *, ax=None, path=None, figsize=(8, 5), dpi=100, title=None):
    """Training loss per epoch, and the validation metric(s) on a second axis when recorded.

    Parameters
    ----------
    model : fitted FactorModel
        Needs ``loss_history_``; ``validation_history_`` (numbers, or dicts of metric -> value
        per epoch) is drawn when present.
    ax : matplotlib Axes, optional
    path : str or Path, optional
        Write the figure here (the suffix picks the format: .png, .svg, .pdf).
    figsize : (float, float), default=(8, 5)
    dpi : int, default=100
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    loss, curves = _histories(model)
    fig, ax = _figure(ax, figsize, dpi)
    epochs = np.arange(1, loss.size + 1)
    lines = ax.plot(epochs, loss, color="C0", marker="o" if loss.size < 30 else None,
                    label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    if curves:
        ax2 = ax.twinx()
        for k, (name, values) in enumerate(curves.items()):
            label = "validation" if name == "validation" else f"validation {name}"
            lines += ax2.plot(np.arange(1, values.size + 1), values, color=f"C{k + 1}",
                              linestyle="--", label=label)
        ax2.set_ylabel("validation")
    best = getattr(model, "best_epoch_", None)
    if isinstance(best, (int, np.integer)):
        lines.append(ax.axvline(best + 1, color="grey", linestyle=":",
                                label=f"kept: epoch {best + 1}"))
    ax.legend(lines, [ln.get_label() for ln in lines], loc="best")
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{type(model).__name__}: learning curve")
    return _finish(fig, path, dpi)


def _label_lookup(labels):
    if labels is None:
        return lambda raw: str(raw)
    if callable(labels):
        return lambda raw: str(labels(raw))
    mapping = labels.to_dict() if isinstance(labels, pd.Series) else dict(labels)
    return lambda raw: str(mapping.get(raw, raw))


def item_map(model, *, labels=None, n_labels=15, ax=None, path=None, figsize=(8, 8), dpi=100,
             title=None):
    """2-D map of the item factors (first two principal components), sized by popularity.

    Parameters
    ----------
    model : fitted FactorModel
    labels : mapping, pandas.Series or callable, optional
        Raw item id -> name (e.g. movie titles); default the raw ids.
    n_labels : int, default=15
        Label this many of the most popular items (by training interactions).
    ax, path, figsize, dpi, title
        As in :func:`learning_curve`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    model._check_fitted()
    Q = np.asarray(model.item_factors_, dtype=np.float64)
    Qc = Q - Q.mean(axis=0)
    _, S, Vt = np.linalg.svd(Qc, full_matrices=False)
    xy = Qc @ Vt[:2].T
    if xy.shape[1] < 2:  # one factor: the map is a line
        xy = np.c_[xy, np.zeros(len(xy))]
    share = S ** 2 / max(float((S ** 2).sum()), 1e-300)
    ui = getattr(model, "user_items_", None)
    pop = (np.bincount(ui.indices, minlength=Q.shape[0]) if ui is not None and ui.format == "csr"
           else np.zeros(Q.shape[0]))
    fig, ax = _figure(ax, figsize, dpi)
    size = 4 + 60 * np.sqrt(pop / pop.max()) if pop.max() > 0 else 8
    ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.45, color="C0", linewidths=0)
    name = _label_lookup(labels)
    n_labels = max(0, min(int(n_labels), Q.shape[0]))
    top = np.argsort(-pop, kind="stable")[:n_labels]
    ax.scatter(xy[top, 0], xy[top, 1], s=24, color="C3")
    for j in top:
        ax.annotate(name(model.item_vocab_.ids[j])[:40], xy[j], fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
    pct = [f" ({100 * share[k]:.0f}% of variance)" if k < share.size else "" for k in range(2)]
    ax.set_xlabel("component 1" + pct[0])
    ax.set_ylabel("component 2" + pct[1])
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{type(model).__name__}: item factors, {n_labels} most popular "
                          f"labelled")
    return _finish(fig, path, dpi)


def _cv_metrics(table):
    return [c for c in table.columns if c not in _NOT_METRICS]


def compare(results, *, metric=None, ax=None, path=None, figsize=(8, 5), dpi=100, title=None):
    """Bar chart of cross-validation or search results (mean with a standard-deviation bar).

    Parameters
    ----------
    results : DataFrame, dict of str -> DataFrame, or a fitted GridSearch / RandomSearch
        - a :func:`~mfrec.evaluation.cross_validate` table: one bar per metric, fold values as
          dots (or only ``metric``);
        - a dict name -> such table: one bar per model for ``metric`` (default the first);
        - a search, or its ``cv_results_``: one bar per candidate for ``metric`` (default the
          search's scoring), best first.
    metric : str, optional
    ax, path, figsize, dpi, title
        As in :func:`learning_curve`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    scoring = getattr(results, "scoring_", None)
    if hasattr(results, "cv_results_"):
        results = results.cv_results_
    own = ax is None
    fig, ax = _figure(ax, figsize, dpi)
    if isinstance(results, dict):
        if not results:
            raise ValueError("results is an empty dict")
        tables = {str(k): v for k, v in results.items()}
        metric = metric or _cv_metrics(next(iter(tables.values())))[0]
        for name, t in tables.items():
            if metric not in t.columns:
                raise ValueError(f"metric {metric!r} is not in the results of {name!r} "
                                 f"(columns: {list(t.columns)})")
        names = list(tables)
        means = [float(t.loc["mean", metric]) for t in tables.values()]
        stds = [float(t.loc["std", metric]) for t in tables.values()]
        _bars(ax, names, means, stds, metric)
        ax.set_title(title or f"{metric} by model (cross-validated)")
    elif isinstance(results, pd.DataFrame) and "params" in results.columns:
        metrics = [c[5:] for c in results.columns if c.startswith("mean_")
                   and c not in ("mean_fit_time", "mean_test_time", "mean_epochs")]
        metric = metric or scoring or metrics[0]
        if f"mean_{metric}" not in results.columns:
            raise ValueError(f"metric {metric!r} is not in the search results (have {metrics})")
        order = results[f"mean_{metric}"].to_numpy()
        from .evaluation.cross_validation import greater_is_better
        idx = np.argsort(-order if greater_is_better(metric) else order, kind="stable")
        names = [_short(results["params"].iloc[i]) for i in idx]
        _bars(ax, names, results[f"mean_{metric}"].to_numpy()[idx],
              results[f"std_{metric}"].to_numpy()[idx], metric, highlight=0)
        ax.set_title(title or f"{metric} by candidate (best first)")
    elif isinstance(results, pd.DataFrame) and "mean" in results.index:
        metrics = [metric] if metric else _cv_metrics(results)
        folds = results.drop(index=["mean", "std"], errors="ignore")
        if own and len(metrics) > 1:  # one panel per metric: each keeps its own scale
            fig.clear()
            axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        else:
            axes = [ax] * len(metrics)
        for a, m in zip(axes, metrics):
            _fold_panel(a, folds[m].to_numpy(dtype=float), float(results.loc["mean", m]),
                        float(results.loc["std", m]), m)
        if own and len(metrics) > 1:
            fig.suptitle(title or f"cross-validation, {len(folds)} folds")
        else:
            ax.set_title(title or f"cross-validation, {len(folds)} folds")
    else:
        raise TypeError("results must be a cross_validate table, a dict of them, or a search "
                        f"(or its cv_results_), got {type(results).__name__}")
    return _finish(fig, path, dpi)


def _fold_panel(ax, values, mean, std, metric):
    x = np.arange(1, values.size + 1)
    ax.axhspan(mean - std, mean + std, color="C0", alpha=0.15, label="mean ± std")
    ax.axhline(mean, color="C0", label=f"mean {mean:.4g}")
    ax.plot(x, values, "o", color="k", label="folds")
    ax.set_xticks(x)
    ax.set_xlabel("fold")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: {mean:.4g} ± {std:.2g}", fontsize=10)
    ax.margins(x=0.2, y=0.3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _short(params):
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in dict(params).items())


def _bars(ax, names, means, stds, ylabel, highlight=None):
    """Means as points with standard-deviation bars; the axis is fitted to the values (not
    started at zero) so that small differences between candidates stay visible."""
    x = np.arange(len(names))
    means, stds = np.asarray(means, dtype=float), np.nan_to_num(np.asarray(stds, dtype=float))
    ax.errorbar(x, means, yerr=stds, fmt="o", color="C0", capsize=5, markersize=7)
    if highlight is not None and len(names):
        ax.plot(x[highlight], means[highlight], "o", color="C2", markersize=11, zorder=3,
                label="best")
        ax.legend(loc="best")
    for xi, m in zip(x, means):
        ax.annotate(f"{m:.4g}", (xi, m), ha="left", va="bottom", fontsize=8,
                    xytext=(6, 2), textcoords="offset points")
    ax.set_xticks(x)
    long = len(names) > 3 or max((len(n) for n in names), default=0) > 20
    ax.set_xticklabels(names, rotation=30 if long else 0, ha="right" if long else "center",
                       fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def fit_report(model, path, *, labels=None, n_labels=15, figsize=(14, 6), dpi=100):
    """One figure for ``mfrec fit --plot``: learning curve (when the model is iterative) beside
    the item map. Returns the figure."""
    _, Figure = _mpl()
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    has_curve = getattr(model, "loss_history_", None) is not None and len(model.loss_history_)
    if has_curve:
        a1, a2 = fig.subplots(1, 2)
        learning_curve(model, ax=a1)
    else:
        a2 = fig.add_subplot()
    item_map(model, labels=labels, n_labels=n_labels, ax=a2)
    return _finish(fig, path, dpi)
