"""The protocol that chooses mfrec's defaults, over the panel of ``panel.py``.

Protocol (written out in ``results/defaults.md``):

1. Every panel set is split once, deterministically: per-user holdout (20% of each user's items,
   users with >= 3) for ranking models, a random 10% of the entries for rating models. Models are
   fitted on the rest; Gowalla's test.txt is never read while choosing.
2. Ranking models are scored with the LightGCN protocol on the validation part: all items
   ranked, training items masked, recall@20 = hits / number of held items, NDCG@20 with the ideal
   DCG of min(held, 20) hits (at most 10,000 users per set, sampled once). Rating models by RMSE.
3. Each model runs its current default, the candidate default and a small grid; a candidate
   becomes the default only if it is within 1% of the best grid point on every set (or the best
   by the mean rank over sets), and never worse than popularity.

usage::

    flock /tmp/mfrec-bench.lock python benchmarks/bench_defaults.py implicit-als [--sets ...]
    flock /tmp/mfrec-bench.lock python benchmarks/bench_defaults.py gowalla-test   # report only
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import panel  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "_work"


# ---------------------------------------------------------------------- metrics
def rank_metrics(P, Q, train, test, k=20, max_users=10_000, seed=0, item_bias=None,
                 chunk=1024):
    """LightGCN recall@k and NDCG@k of scores ``P @ Q.T (+ item_bias)``.

    ``train`` and ``test`` are csr matrices of the same shape; every user with a test item is
    evaluated (at most ``max_users``, sampled once with ``seed``), all items ranked, training
    items masked.
    """
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    rec, nd = [], []
    P = np.asarray(P, np.float32)
    Q = np.asarray(Q, np.float32)
    for s in range(0, users.size, chunk):
        u = users[s:s + chunk]
        S = P[u] @ Q.T if P.shape[1] else np.zeros((u.size, Q.shape[0]), np.float32)
        if item_bias is not None:
            S += np.asarray(item_bias, np.float32)
        tr = train[u]
        S[np.repeat(np.arange(u.size), np.diff(tr.indptr)), tr.indices] = -np.inf
        top = np.argpartition(-S, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, top, 1), axis=1)
        top = np.take_along_axis(top, order, 1)
        te = test[u]
        rel = np.zeros(S.shape, bool)
        rel[np.repeat(np.arange(u.size), np.diff(te.indptr)), te.indices] = True
        hits = np.take_along_axis(rel, top, 1)
        n_rel = np.diff(te.indptr)
        rec.append(hits.sum(1) / n_rel)
        ideal = np.cumsum(disc)[np.minimum(n_rel, k) - 1]
        nd.append((hits * disc).sum(1) / ideal)
    return float(np.concatenate(rec).mean()), float(np.concatenate(nd).mean())


def popularity_metrics(train, test, **kw):
    counts = np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float32)
    n = train.shape[0]
    return rank_metrics(np.zeros((n, 0), np.float32), np.zeros((train.shape[1], 0), np.float32),
                        train, test, item_bias=counts / max(counts.max(), 1), **kw)


def rmse(model, test):
    coo = test.tocoo()
    pred = model._score_pairs(coo.row, coo.col)
    lo, hi = model.rating_range_
    pred = np.clip(pred, lo, hi)
    return float(np.sqrt(np.mean((pred - coo.data) ** 2)))


def ratings_of(csr):
    import mfrec
    coo = csr.tocoo()
    return mfrec.Ratings.from_indices(coo.row, coo.col, coo.data, shape=csr.shape)


# ---------------------------------------------------------------------- running
_SPLITS = {}


def split_of(ps):
    if ps.name not in _SPLITS:
        f = panel.ranking_split if ps.kind == "implicit" else panel.rating_split
        _SPLITS[ps.name] = f(ps.csr, seed=0)
    return _SPLITS[ps.name]


def fit_rank(cls, params, ps, **kw):
    tr, va = split_of(ps)
    t = time.perf_counter()
    m = cls(**params).fit(ratings_of(tr))
    fit_s = time.perf_counter() - t
    r, n = rank_metrics(m.user_factors_, m.item_factors_, tr, va, item_bias=m.item_bias_, **kw)
    return dict(recall=r, ndcg=n, fit_s=fit_s, model=m)


def fit_rmse(cls, params, ps):
    tr, va = split_of(ps)
    t = time.perf_counter()
    m = cls(**params).fit(ratings_of(tr))
    fit_s = time.perf_counter() - t
    return dict(rmse=rmse(m, va), fit_s=fit_s, model=m)


def log(rec, path):
    WORK.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


# ---------------------------------------------------------------------- anchors
def fit_implicit_lib(name, ps, threads=2, **kw):
    """implicit's ALS or BPR at its own defaults, on the same split, same metrics."""
    import implicit
    from threadpoolctl import threadpool_limits
    tr, va = split_of(ps)
    cls = (implicit.cpu.als.AlternatingLeastSquares if name == "als"
           else implicit.cpu.bpr.BayesianPersonalizedRanking)
    m = cls(num_threads=threads, random_state=0)
    t = time.perf_counter()
    with threadpool_limits(1, "blas"):
        m.fit(tr.astype(np.float32), show_progress=False)
    fit_s = time.perf_counter() - t
    P, Q = np.asarray(m.user_factors), np.asarray(m.item_factors)
    r, n = rank_metrics(P, Q, tr, va, **kw)
    return dict(recall=r, ndcg=n, fit_s=fit_s)


def ials_rule(ps, c, lam_r, k=64):
    """ImplicitALS hyperparameters from the rule: unobserved weight ``c * density`` relative to
    a mean observation, regularization ``lam_r * (1 + alpha)`` (used before the rule was the
    default, to search it)."""
    tr, _ = split_of(ps)
    dens = tr.nnz / (tr.shape[0] * tr.shape[1])
    mean = float(tr.data.mean())
    a0 = min(c * dens, 0.5)
    alpha = (1 / a0 - 1) / mean
    return dict(n_factors=k, alpha=alpha, regularization=lam_r * (1 + alpha * mean))


def implicit_grid(sets, out, ks=(64, 128), cs=(3, 10, 30), lams=(0.003, 0.01, 0.03)):
    import mfrec
    for ps in sets:
        tr, va = split_of(ps)
        base = dict(set=ps.name)
        log(dict(base, model="Popularity", params="", **dict(zip(
            ("recall", "ndcg"), popularity_metrics(tr, va)))), out)
        for lib in ("als", "bpr"):
            log(dict(base, model=f"implicit {lib} (defaults)", params="",
                     **fit_implicit_lib(lib, ps)), out)
        r = fit_rank(mfrec.ImplicitALS, dict(random_state=0), ps)
        r.pop("model")
        log(dict(base, model="ImplicitALS", params="defaults", **r), out)
        for k in ks:
            for c in cs:
                for lam in lams:
                    p = ials_rule(ps, c, lam, k)
                    r = fit_rank(mfrec.ImplicitALS, dict(p, random_state=0), ps)
                    r.pop("model")
                    log(dict(base, model="ImplicitALS", params=f"k={k} c={c} lamR={lam}",
                             alpha=p["alpha"], **r), out)


def implicit_refine(sets, out, points=((64, 20, 0.01), (64, 30, 0.005), (64, 10, 0.02))):
    """Second round: points between the first round's best (k, c, lamR)."""
    import mfrec
    for ps in sets:
        for k, c, lam in points:
            p = ials_rule(ps, c, lam, k)
            r = fit_rank(mfrec.ImplicitALS, dict(p, random_state=0), ps)
            r.pop("model")
            log(dict(set=ps.name, model="ImplicitALS", params=f"k={k} c={c} lamR={lam}",
                     alpha=p["alpha"], **r), out)


def ml100k_checks(out):
    """The figures the issue pins on ML-100K: u1 ndcg@10 of ImplicitALS() and BPR() (u1.base
    ratings as strengths, every u1.test pair relevant, as benchmarks/bench_implicit.py)."""
    import mfrec
    from mfrec.evaluation.ranking import evaluate_ranking
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common
    train_df, test_df = common.load_ml100k_split("u1")
    train = mfrec.Ratings.from_frame(train_df)
    for name, model in [("ImplicitALS()", mfrec.ImplicitALS(random_state=0)),
                        ("ImplicitALS(n_factors=64)", mfrec.ImplicitALS(n_factors=64,
                                                                        random_state=0)),
                        ("BPR()", mfrec.BPR(random_state=0))]:
        t = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t
        res = evaluate_ranking(model, test_df, k=10, metrics=["ndcg", "precision"])
        log(dict(set="ml100k-u1", model=name, fit_s=fit_s, **res), out)


def gowalla_test(out, threads=2):
    """The final report: defaults fitted on all of train.txt, scored once on test.txt with the
    LightGCN protocol (every test user, all items, training items masked)."""
    import mfrec
    g = panel.gowalla_train()
    test = panel.gowalla_test_csr(g.csr.shape)
    ps = panel.PanelSet("gowalla-test", g.csr, "implicit")
    _SPLITS[ps.name] = (g.csr, test)   # train on all of train.txt, score on test.txt
    kw = dict(max_users=10 ** 9)
    r, n = popularity_metrics(g.csr, test, **kw)
    log(dict(set="gowalla-test", model="Popularity", recall=r, ndcg=n, fit_s=0.0), out)
    for lib in ("als", "bpr"):
        res = fit_implicit_lib(lib, ps, threads, **kw)
        log(dict(set="gowalla-test", model=f"implicit {lib} (defaults)", **res), out)
    for name, cls in [("ImplicitALS()", mfrec.ImplicitALS), ("BPR()", mfrec.BPR)]:
        res = fit_rank(cls, dict(random_state=0), ps, **kw)
        res.pop("model")
        log(dict(set="gowalla-test", model=name, **res), out)


def fit_surprise(name, ps):
    """Surprise's SVD, NMF or BaselineOnly at its own defaults, RMSE on the same split."""
    import pandas as pd
    import surprise
    tr, va = split_of(ps)
    c = tr.tocoo()
    frame = pd.DataFrame({"u": c.row, "i": c.col, "r": c.data.astype(float)})
    reader = surprise.Reader(rating_scale=(float(c.data.min()), float(c.data.max())))
    trainset = surprise.Dataset.load_from_df(frame, reader).build_full_trainset()
    algo = {"SVD": surprise.SVD, "NMF": surprise.NMF, "BaselineOnly": surprise.BaselineOnly}[name]
    algo = algo(random_state=0) if name != "BaselineOnly" else algo(verbose=False)
    t = time.perf_counter()
    algo.fit(trainset)
    fit_s = time.perf_counter() - t
    v = va.tocoo()
    pred = np.array([algo.predict(u, i).est for u, i in zip(v.row, v.col)])
    return dict(rmse=float(np.sqrt(np.mean((pred - v.data) ** 2))), fit_s=fit_s)


#: explicit models: the default (first) and a coarse grid around its main knob
EXPLICIT_GRID = {
    "BiasedMF": [{}, {"regularization": 0.02}, {"regularization": 0.15}],
    "SVDpp": [{}, {"regularization": 0.02}, {"regularization": 0.15}],
    "ALS": [{}, {"regularization": 0.03}, {"regularization": 0.3}],
    "Baseline": [{}],
    "BayesianMF": [{}],
    "NMF": [{}],
    "SVD": [{}, {"missing": "ignore", "n_factors": 10}],
    "GradientDescent": [{}, {"regularization": 1.0}, {"regularization": 5.0},
                        {"regularization": 20.0}],
}
#: sets on which the slow notebook models (full-batch GradientDescent, 1000 iterations, and the
#: dense SVD) are run: every explicit panel set (each is at most 305k ratings)
GD_SETS = ("ml100k-ratings", "synth-dense-ratings", "synth-wide-ratings", "synth-tall-ratings")


def explicit_panel(sets, out, models=None):
    import mfrec
    for ps in sets:
        tr, va = split_of(ps)
        base = dict(set=ps.name)
        for name in ("BaselineOnly", "SVD", "NMF"):
            log(dict(base, model=f"Surprise {name} (defaults)", params="",
                     **fit_surprise(name, ps)), out)
        for name, grid in EXPLICIT_GRID.items():
            if models and name not in models:
                continue
            if name in ("GradientDescent", "SVD") and ps.name not in GD_SETS:
                continue
            cls = getattr(mfrec, name)
            for p in grid:
                kw = dict(p)
                if "random_state" in cls().get_params():
                    kw["random_state"] = 0
                res = fit_rmse(cls, kw, ps)
                res.pop("model")
                log(dict(base, model=name, params=json.dumps(p) if p else "defaults", **res), out)


def bpr_panel(sets, out):
    import mfrec
    for ps in sets:
        res = fit_rank(mfrec.BPR, dict(random_state=0), ps)
        res.pop("model")
        log(dict(set=ps.name, model="BPR", params="defaults", **res), out)


def _load(path):
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def table(paths, metric, label=lambda r: (r["model"] + " " + r.get("params", "")).strip(),
          fmt="{:.4f}", best_of=None, lower=False):
    """A markdown table: one row per model/params label, one column per set; with
    ``best_of=model`` an extra row holds that model's best grid point per set."""
    rows = [r for p in paths for r in _load(p) if metric in r]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    labels = list(dict.fromkeys(label(r) for r in rows))
    cell = {(label(r), r["set"]): r for r in rows}
    out = ["| model | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for lab in labels:
        out.append(f"| {lab} | " + " | ".join(
            fmt.format(cell[lab, s][metric]) if (lab, s) in cell else "" for s in sets) + " |")
    for model in best_of or ():
        cells = []
        for s in sets:
            cand = [r for r in rows if r["model"] == model and r["set"] == s]
            if not cand:
                cells.append("")
                continue
            b = (min if lower else max)(cand, key=lambda r: r[metric])
            cells.append(fmt.format(b[metric]) + f" ({b.get('params', '')})")
        out.append(f"| **best {model} found** | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("section")
    ap.add_argument("--sets", nargs="*", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--models", nargs="*", default=None)
    a = ap.parse_args(argv)
    out = a.out or str(WORK / f"{a.section}.jsonl")
    if a.section == "implicit-grid":
        sets = panel.panel("implicit")
        if a.sets:
            sets = [s for n in a.sets for s in sets if s.name == n]
        implicit_grid(sets, out)
    elif a.section == "explicit-panel":
        sets = panel.panel("explicit")
        if a.sets:
            sets = [s for n in a.sets for s in sets if s.name == n]
        explicit_panel(sets, out, a.models)
    elif a.section == "bpr-panel":
        sets = panel.panel("implicit")
        if a.sets:
            sets = [s for n in a.sets for s in sets if s.name == n]
        bpr_panel(sets, out)
    elif a.section == "implicit-refine":
        sets = panel.panel("implicit")
        if a.sets:
            sets = [s for n in a.sets for s in sets if s.name == n]
        implicit_refine(sets, out)
    elif a.section == "ml100k-checks":
        ml100k_checks(out)
    elif a.section == "gowalla-test":
        gowalla_test(out)
    else:
        raise SystemExit(f"unknown section {a.section!r}")


if __name__ == "__main__":
    main()
