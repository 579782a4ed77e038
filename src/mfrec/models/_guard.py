"""A guard against fits that silently went wrong.

After every fit of an mfrec model, :func:`check_fit` looks at the learned state and warns with a
:class:`FitWarning` when

- the factors blew up (non-finite, or scores far beyond the scale of the data),
- the factors collapsed towards zero (their part of the scores is negligible next to the scale
  of the data: the model is, in effect, unpersonalized), or
- the model fits its own training data no better than the trivial baseline: for ranking models
  (implicit feedback) the popularity ranking, for rating models the mean rating (or 0 when the
  blanks are read as zeros).

Each message names the hyperparameters to move and in which direction. The checks are bounded:
at most ``_MAX_PAIRS`` training pairs and ``_MAX_USERS`` users, fewer on catalogues so large that
they would need more than ``_MAX_CELLS`` scores (scored in chunks of at most ``_CHUNK_CELLS``),
so they cost a fraction of any fit.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

from .._validation import count_nonfinite, row_norms
from ..data import column_counts

__all__ = ["FitWarning", "check_fit", "diagnose"]


class FitWarning(UserWarning):
    """A fit finished but its result is probably useless; the message says what to change."""


#: models that rank (implicit feedback): their scores are compared with popularity
_RANKING = frozenset({"ImplicitALS", "BPR"})
#: models checked at all (the fitted mfrec models; a hand-built FactorModel is not checked)
_CHECKED = frozenset({"ImplicitALS", "BPR", "ALS", "BiasedMF", "SVDpp", "BayesianMF", "NMF",
                      "SVD", "GradientDescent", "Baseline"})
_MAX_PAIRS = 50_000
_MAX_NORM_ROWS = 100_000
_MAX_USERS = 2000
_CHUNK_CELLS = 1 << 22
_MAX_CELLS = 200_000_000
_COLLAPSE = 1e-3   # factor part of the scores below this fraction of the data's scale
_BLOWUP = 1e3      # scores above this many times the data's scale


def check_fit(model):
    """Warn (:class:`FitWarning`) when ``model``'s fit collapsed, blew up or learned nothing.

    Called at the end of every fit; returns the list of messages (empty when healthy).
    """
    if type(model).__name__ not in _CHECKED or type(model).__module__.split(".")[0] != "mfrec":
        return []
    try:
        # (fits call this after _check_finite_fit: the factors are finite)
        messages = diagnose(model, factors_checked=True)
    except Exception:  # the guard must never break a fit that succeeded
        return []
    for msg in messages:
        warnings.warn(msg, FitWarning, stacklevel=_caller_level())
    return messages


def _caller_level():
    """The stack level of the first frame outside mfrec (the user's ``fit`` call)."""
    f, level = sys._getframe(1), 1
    while f is not None and f.f_globals.get("__name__", "").startswith("mfrec"):
        f, level = f.f_back, level + 1
    return level


def _hint(model, moves):
    """``"lower regularization (now 0.025) or reg_exponent (now 1.0)"`` for the parameters of
    ``moves`` (name, direction) that the model has."""
    params = model.get_params()
    parts = []
    for name, direction in moves:
        if name not in params or (direction == "lower" and params[name] == 0):
            continue
        now = repr(params[name])
        resolved = getattr(model, name + "_", None)  # e.g. ImplicitALS's alpha_ for "auto"
        if isinstance(params[name], str) and isinstance(resolved, (int, float)):
            now += f", i.e. {resolved:.3g}"
        parts.append(f"{direction} {name} (now {now})")
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _training_pairs(csr, rng):
    nnz = csr.nnz
    pick = np.arange(nnz) if nnz <= _MAX_PAIRS else np.sort(rng.choice(nnz, _MAX_PAIRS,
                                                                       replace=False))
    # sorted: the binary searches (and the later gathers of factor rows) walk forwards, which
    # at 100M ratings took a third of the time of random order (10 ms against 30 ms)
    rows = np.searchsorted(csr.indptr, pick, side="right") - 1
    return rows, csr.indices[pick], csr.data[pick].astype(np.float64)


def diagnose(model, *, factors_checked=False):
    """The guard's findings for a fitted model, as messages (empty when healthy).

    ``factors_checked``: the factor arrays are known to be finite (a pass over each is skipped).
    """
    name = type(model).__name__
    P, Q = model.user_factors_, model.item_factors_
    csr = getattr(model, "user_items_", None)
    if csr is None or csr.nnz == 0 or csr.shape != (P.shape[0], Q.shape[0]):
        return []
    ranking = name in _RANKING
    rng = np.random.default_rng(0)
    u, i, r = _training_pairs(csr, rng)
    dots = np.empty(u.size)
    step = max(1, _CHUNK_CELLS // max(P.shape[1], 1))  # bounded gathers, whatever the width
    for s in range(0, u.size, step):
        dots[s:s + step] = np.einsum("ij,ij->i", P[u[s:s + step]], Q[i[s:s + step]],
                                     dtype=np.float64)
    full = dots + model.global_mean_ + model.user_bias_[u] + model.item_bias_[i]
    # the data's scale: preferences are 0/1 for ranking models; ratings vary by their spread
    # (or, read with blanks as zeros, by their size)
    zero_blanks = getattr(model, "missing", "ignore") == "zero"
    if ranking:
        scale = 1.0
    elif zero_blanks:
        scale = float(np.sqrt(np.mean(r ** 2))) or 1.0
    else:
        scale = float(np.std(r)) or float(np.mean(np.abs(r))) or 1.0
    finite = not ((not factors_checked and (count_nonfinite(P) or count_nonfinite(Q)))
                  or count_nonfinite(full))
    if not finite or np.percentile(np.abs(full), 99) > _BLOWUP * max(scale, 1.0):
        what = "non-finite values" if not finite else (
            f"scores up to {np.abs(full).max():.3g} for data of scale {scale:.3g}")
        hint = _hint(model, [("learning_rate", "lower"), ("regularization", "raise"),
                             ("init_std", "lower"), ("init_scale", "lower")])
        return [f"{name} factors blew up ({what}): {hint}".rstrip(": ")]
    messages = []
    if P.shape[1] > 0:
        rated = np.flatnonzero(np.diff(csr.indptr) > 0)
        if rated.size > _MAX_NORM_ROWS:  # a median needs no pass over 100M ratings' users
            rated = np.sort(rng.choice(rated, _MAX_NORM_ROWS, replace=False))
        user_norm = float(np.median(row_norms(P, rated)))
        part = float(np.sqrt(np.mean(dots ** 2)))
        if part < _COLLAPSE * scale:
            hint = _hint(model, [("regularization", "lower"), ("reg_exponent", "lower"),
                                 ("n_epochs", "raise")])
            messages.append(
                f"{name} factors collapsed (median user norm {user_norm:.2g}, factor part of the "
                f"scores {part:.2g} next to a data scale of {scale:.3g}): the model is not "
                f"personalized; {hint}")
            return messages
    if ranking:
        m_hit, p_hit = _training_hit_rates(model, csr, rng)
        if m_hit is not None and m_hit <= p_hit:
            hint = _hint(model, [("regularization", "lower"), ("alpha", "raise"),
                                 ("n_factors", "raise"), ("n_epochs", "raise")])
            messages.append(
                f"{name} ranks its own training items no better than popularity (hit rate "
                f"{m_hit:.3f} vs {p_hit:.3f} over {_MAX_USERS} users at most): {hint}")
    elif P.shape[1] > 0:
        base = 0.0 if zero_blanks else float(np.mean(r))
        pred = full if not model._clip_predictions else np.clip(full, *model.rating_range_)
        m_rmse = float(np.sqrt(np.mean((pred - r) ** 2)))
        b_rmse = float(np.sqrt(np.mean((base - r) ** 2)))
        if m_rmse >= b_rmse:
            hint = _hint(model, [("regularization", "lower"), ("n_epochs", "raise"),
                                 ("learning_rate", "lower")])
            messages.append(
                f"{name} fits its training ratings no better than the constant "
                f"{base:.3g} (RMSE {m_rmse:.4f} vs {b_rmse:.4f}): {hint}")
    return messages


def _training_hit_rates(model, csr, rng):
    """Mean share of each sampled user's training items in its top ``n_u`` (no masking), for
    the model and for the popularity ranking; (None, None) on too little data."""
    n_users, n_items = csr.shape
    counts = np.diff(csr.indptr)
    # users whose items do not cover most of the catalogue: elsewhere any ranking does well
    eligible = np.flatnonzero((counts >= 2) & (counts <= n_items // 2))
    if eligible.size < 20 or n_items < 20:
        return None, None
    # at most _MAX_CELLS scores in all: fewer users on a very large catalogue
    n_sample = min(_MAX_USERS, max(100, _MAX_CELLS // n_items))
    users = (eligible if eligible.size <= n_sample
             else np.sort(rng.choice(eligible, n_sample, replace=False)))
    pop = column_counts(csr.indices, n_items).astype(np.float64)  # (no int64 copy of indices)
    pop_order = np.argsort(-pop, kind="stable")
    pop_rank = np.empty(n_items, np.int64)
    pop_rank[pop_order] = np.arange(n_items)
    P, Q, bias = model.user_factors_, model.item_factors_, model.item_bias_
    chunk = max(1, _CHUNK_CELLS // n_items)
    m_hits = p_hits = 0.0
    for s in range(0, users.size, chunk):
        us = users[s:s + chunk]
        S = P[us] @ Q.T + bias
        for row, u in enumerate(us):
            items = csr.indices[csr.indptr[u]:csr.indptr[u + 1]]
            n = items.size
            m_hits += np.mean(S[row, items] >= np.partition(S[row], n_items - n)[n_items - n])
            p_hits += np.mean(pop_rank[items] < n)
    return m_hits / users.size, p_hits / users.size
