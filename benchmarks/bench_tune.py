"""Automatic tuning: ``mfrec tune --auto`` on Gowalla (LightGCN's split) with a 600 s budget.

For each model asked (ImplicitALS, BPR), one command

    mfrec tune gowalla/train.txt --format adjacency -m MODEL --auto --time-budget 600
          --metric recall@20 --seed 0 -o best.mfrec --json

carves its validation split from train.txt (a per-user holdout), searches, refits the best
setting on all of train.txt and saves it; the command's wall time is measured from outside.
Only then is the saved model scored on test.txt — for reporting: nothing is chosen on it —
with LightGCN's protocol (all items not trained on are ranked; recall@20 and NDCG@20 as the
paper defines them, averaged over the test users). In the same run, the anchors: each model
at its defaults, fitted on train.txt and scored the same way, and Popularity.

``--compare SECONDS`` adds a small study of the search method on MovieLens 100K u1.base as
binary interactions (ImplicitALS, ndcg@10 on the carved validation split, and u1.test for
reporting): TPE or random sampling, with or without successive halving, two seeds each, each
run given SECONDS.

usage: flock /tmp/mfrec-bench.lock python benchmarks/bench_tune.py [--budget 600]
       [--models implicit-als,bpr] [--compare 30]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PUBLISHED = ("LightGCN (Table 3 of He et al. 2020): recall@20 0.1830, NDCG@20 0.1554; NGCF "
             "0.1570 / 0.1327; Mult-VAE 0.1641 / 0.1335; MF-BPR (NGCF paper) 0.1291 / 0.1109.")


def gowalla_dir():
    env = os.environ.get("MFREC_DATA_DIR")
    for c in ([Path(env) / "gowalla"] if env else []) + [common.ROOT.parent / "shared" / "data"
                                                           / "gowalla"]:
        if (c / "train.txt").exists():
            return c
    raise FileNotFoundError("Gowalla not found: set MFREC_DATA_DIR or place ../shared/data/gowalla")


def score_on_test(model, test_path):
    """recall@20 and ndcg@20 of a fitted model on test.txt (LightGCN's protocol)."""
    from mfrec.datasets import load_adjacency
    from mfrec.evaluation.ranking import evaluate_ranking

    test = load_adjacency(test_path, user_vocab=model.user_vocab_, item_vocab=model.item_vocab_)
    return evaluate_ranking(model, test, k=20, metrics=["recall", "ndcg"])


def run_auto(model, train_path, budget, work):
    out = Path(work) / f"best-{model}.mfrec"
    argv = [sys.executable, "-m", "mfrec.cli", "tune", str(train_path), "--format", "adjacency",
            "-m", model, "--auto", "--time-budget", str(budget), "--metric", "recall@20",
            "--seed", "0", "-o", str(out), "--json"]
    res = common.run_measured(argv, timeout=budget * 1.5 + 120)
    if res["returncode"] != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res['returncode']}): "
                           f"{res['stderr'][-2000:]}")
    return json.loads(res["stdout"]), res, out


def _left(until):
    """Seconds from now to ``until`` (HH:MM, UTC, today); infinite without one."""
    if not until:
        return float("inf")
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    hh, mm = (int(x) for x in until.split(":"))
    return (now.replace(hour=hh, minute=mm, second=0, microsecond=0) - now).total_seconds()


def _late(until, seconds):
    """Whether a step of ``seconds`` would end after ``until``."""
    return seconds > _left(until)


def gowalla(models, budget, rows, notes, until=None):
    import mfrec
    from mfrec.datasets import load_adjacency
    from mfrec.models import get_model_class

    folder = gowalla_dir()
    train_path, test_path = folder / "train.txt", folder / "test.txt"
    train = load_adjacency(train_path)
    t0 = time.perf_counter()
    pop = mfrec.Popularity().fit(train)
    fit_s = time.perf_counter() - t0
    rows.append({"model": "Popularity", "how": "no hyperparameters", "time s": fit_s,
                 "trials": "", **score_on_test(pop, test_path), "hyperparameters": ""})
    with tempfile.TemporaryDirectory(dir="/tmp") as work:
        for name in models:
            # a shared machine may start this late: then the search gets what is left before
            # --until (said in the table), never less than 180 s
            run_budget = min(budget, _left(until) - 180)
            if run_budget < 180:
                notes.append(f"{name}: not run, it would have ended after --until {until}.")
                yield
                continue
            cls = get_model_class(name)
            t0 = time.perf_counter()
            default = cls(random_state=0).fit(train)
            fit_s = time.perf_counter() - t0
            rows.append({"model": cls.__name__, "how": "defaults (anchor)", "time s": fit_s,
                         "trials": "", **score_on_test(default, test_path),
                         "hyperparameters": _params(default, cls)})
            yield
            info, run, path = run_auto(name, train_path, run_budget, work)
            best = mfrec.load(path)
            n = info["n_trials"]
            rows.append({"model": cls.__name__, "how": f"--auto, {run_budget:.0f} s budget",
                         "time s": run["wall_s"],
                         "trials": f"{n} ({info['n_complete']} complete, {info['n_pruned']} "
                                   f"pruned)",
                         **score_on_test(best, test_path),
                         "validation recall@20": info["best_score"],
                         "hyperparameters": ", ".join(f"{k}={_short(v)}" for k, v in
                                                      info["best_params"].items()),
                         "refitted with": ", ".join(
                             f"{k}={_short(v)}" for k, v in info.get("refit_params", {}).items()
                             if v != info["best_params"].get(k))})
            notes.append(f"{cls.__name__} --auto: search {info['search_time']:.0f} s, refit on "
                         f"all of train.txt {info['refit_time']:.0f} s, the command "
                         f"{run['wall_s']:.0f} s in all (data reading included), peak RSS "
                         f"{run['peak_rss_mb']:.0f} MB.")
            yield


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _params(model, cls):
    from mfrec.evaluation.tuning import SEARCH_SPACES
    names = list(SEARCH_SPACES[cls.__name__].params) + ["n_epochs"]
    return ", ".join(f"{k}={_short(getattr(model, k))}" for k in names if hasattr(model, k))


def compare(seconds, rows):
    """TPE vs random, with and without halving, on ML-100K u1 as binary interactions."""
    import mfrec
    from mfrec.evaluation.ranking import evaluate_ranking
    from mfrec.evaluation.tuning import auto_tune

    train_df, test_df = common.load_ml100k_split("u1")
    train = mfrec.Ratings.from_frame(train_df.assign(rating=1.0)[["user", "item", "rating"]])
    test = test_df.assign(rating=1.0)[["user", "item", "rating"]]
    for sampler in ("tpe", "random"):
        for pruner in ("halving", "none"):
            for seed in (0, 1):
                res = auto_tune("implicit-als", train, metric="ndcg@10", time_budget=seconds,
                                sampler=sampler, pruner=pruner, random_state=seed)
                t = res.trials
                with_warnings_off = evaluate_ranking(res.best_model_, test, k=10,
                                                     metrics=["ndcg"])
                rows.append({"sampler": sampler, "pruner": pruner, "seed": seed,
                             "trials": len(t), "complete": int((t.state == "complete").sum()),
                             "validation ndcg@10": res.best_score_,
                             "u1.test ndcg@10": with_warnings_off["ndcg@10"],
                             "time s": res.elapsed_})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=600)
    ap.add_argument("--models", default="implicit-als,bpr")
    ap.add_argument("--out", default="tune.md", help="results file under benchmarks/results/")
    ap.add_argument("--until", metavar="HH:MM",
                    help="UTC time by which the run must end: later steps are skipped")
    ap.add_argument("--compare", type=float, metavar="SECONDS",
                    help="also compare search methods on ML-100K, SECONDS per run")
    args = ap.parse_args()
    command = "flock /tmp/mfrec-bench.lock " + common.command_line()
    rows, notes = [], []
    base_notes = [
        f"Machine: {common.machine_info()}. The machine was shared with other work while this "
        f"ran, so times are indicative.",
        "Data: Gowalla as split by LightGCN (../shared/data/gowalla: 29,858 users, 40,981 items, "
        "810,128 train and 217,242 test interactions). `--auto` sees train.txt only and carves "
        "its validation split from it (20% of each user's items); test.txt is read afterwards, "
        "for this table only. Test metrics: every item not in the user's train.txt items is "
        "ranked; recall@20 = hits / test items, NDCG@20 = DCG / ideal DCG of min(test items, "
        "20) hits, averaged over the 29,858 test users (mfrec.evaluation.ranking).",
        "'time s' is the wall time of the whole `mfrec tune --auto` command measured from "
        "outside (reading train.txt, the search, the refit on all of train.txt, saving), or of "
        "the fit for the defaults and Popularity.",
        f"Published, same split and protocol: {PUBLISHED}",
    ]

    def write():
        common.write_table(args.out, "Automatic tuning on Gowalla: `mfrec tune --auto`",
                           rows, command, notes=base_notes + notes)

    for _ in gowalla([m.strip() for m in args.models.split(",") if m.strip()], args.budget,
                     rows, notes, args.until):
        write()  # after every step: a partial table survives an interrupted run
    if args.compare and not _late(args.until, 8 * args.compare + 60):
        crow = []
        compare(args.compare, crow)
        write()
        common.write_table("tune_methods.md", "Search methods of `auto_tune` on ML-100K u1 "
                           "(ImplicitALS, binary)", crow, command, notes=[
                               f"Machine: {common.machine_info()}; shared with other work.",
                               f"Each run: auto_tune('implicit-als', u1.base as binary "
                               f"interactions, metric='ndcg@10', time_budget={args.compare:g}) "
                               f"with the sampler and pruner shown; 'validation ndcg@10' is on "
                               f"the split carved from u1.base, 'u1.test ndcg@10' is reporting "
                               f"only."])
    print(open(common.RESULTS_DIR / args.out).read())


if __name__ == "__main__":
    main()
