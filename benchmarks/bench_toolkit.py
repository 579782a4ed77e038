"""The working toolkit against Surprise's, in one run on the same data: cross-validation, grid
search and model files.

Sections (each writes ``benchmarks/results/toolkit_<section>.md``):

- ``cv``: 5-fold cross-validation on all of MovieLens 100K ``u.data``: mfrec ``cross_validate``
  of ``BiasedMF`` set to Surprise SVD's defaults (100 factors, 20 epochs, learning rate 0.005,
  regularization 0.02, init std 0.1, no learning-rate decay, no early stopping) on 1 thread and
  on all cores, against ``surprise.model_selection.cross_validate(SVD())``. Each library draws
  its own shuffled folds of the same ratings.
- ``grid``: 3-fold grid search over n_factors {20, 50} x regularization {0.02, 0.05} with the
  same settings, mfrec ``GridSearch`` against Surprise ``GridSearchCV`` (refit on all data).
- ``files``: save and load of a fitted model: mfrec's file (arrays + JSON, no pickle) against
  ``surprise.dump`` (pickle), on ML-100K; then mfrec alone on the 5M synthetic set (Surprise
  needs many minutes to fit there, so it has no anchor row).

usage: flock /tmp/mfrec-bench.lock .venv/bin/python benchmarks/bench_toolkit.py [section ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, load_synth, ml100k_dir, timer, write_table  # noqa: E402

SECTIONS = ("cv", "grid", "files")
SEED = 0
SURPRISE_SVD = dict(n_factors=100, n_epochs=20, learning_rate=0.005, learning_rate_decay=1.0,
                    regularization=0.02, bias_regularization=0.02, init_std=0.1,
                    early_stopping=None)


def _mfrec_ratings():
    import mfrec
    return mfrec.Ratings.from_file(ml100k_dir() / "u.data")


def _surprise_data():
    from surprise import Dataset, Reader
    return Dataset.load_from_file(str(ml100k_dir() / "u.data"),
                                  reader=Reader("ml-100k"))


def _warm_up(ratings):
    # compile (or load from cache) the Numba kernels outside the timed region
    from mfrec import BiasedMF
    BiasedMF(**{**SURPRISE_SVD, "n_epochs": 1}, random_state=SEED).fit(ratings)


def section_cv():
    from surprise import SVD
    from surprise.model_selection import cross_validate as s_cv

    from mfrec import BiasedMF
    from mfrec.evaluation import cross_validate

    ratings = _mfrec_ratings()
    _warm_up(ratings)
    rows = []
    for threads in (1, None):
        model = BiasedMF(**SURPRISE_SVD, random_state=SEED, num_threads=threads)
        with timer() as t:
            res = cross_validate(model, ratings, cv=5, metrics=["rmse", "mae"],
                                 random_state=SEED)
        rows.append({"library": "mfrec", "call": "cross_validate(BiasedMF)",
                     "threads": threads or os.cpu_count(), "total s": f"{t.seconds:.2f}",
                     "fit s/fold": f"{res.loc['mean', 'fit_time']:.2f}",
                     "test s/fold": f"{res.loc['mean', 'test_time']:.3f}",
                     "RMSE": f"{res.loc['mean', 'rmse']:.4f} ± {res.loc['std', 'rmse']:.4f}",
                     "MAE": f"{res.loc['mean', 'mae']:.4f} ± {res.loc['std', 'mae']:.4f}"})
    data = _surprise_data()
    with timer() as t:
        res = s_cv(SVD(random_state=SEED), data, measures=["rmse", "mae"], cv=5, verbose=False)
    rows.append({"library": "Surprise", "call": "cross_validate(SVD)", "threads": 1,
                 "total s": f"{t.seconds:.2f}",
                 "fit s/fold": f"{np.mean(res['fit_time']):.2f}",
                 "test s/fold": f"{np.mean(res['test_time']):.3f}",
                 "RMSE": f"{np.mean(res['test_rmse']):.4f} ± "
                         f"{np.std(res['test_rmse'], ddof=1):.4f}",
                 "MAE": f"{np.mean(res['test_mae']):.4f} ± {np.std(res['test_mae'], ddof=1):.4f}"})
    write_table("toolkit_cv.md", "5-fold cross-validation, MovieLens 100K u.data", rows,
                command_line(), notes=[
                    "Same model on both sides: biased MF with Surprise SVD's defaults (100 "
                    "factors, 20 epochs, lr 0.005, reg 0.02, init std 0.1). Each library shuffles "
                    "its own folds. ± is the sample standard deviation over folds. 'total s' "
                    "includes splitting and scoring. Other engineers' jobs may have been running "
                    "on this 2-core machine (benchmarks themselves ran one at a time under a "
                    "lock)."])


def section_grid():
    from surprise import SVD
    from surprise.model_selection import GridSearchCV

    from mfrec import BiasedMF
    from mfrec.evaluation import GridSearch

    ratings = _mfrec_ratings()
    _warm_up(ratings)
    rows = []
    grid = {"n_factors": [20, 50], "regularization": [0.02, 0.05]}
    for threads in (1, None):
        model = BiasedMF(**SURPRISE_SVD, random_state=SEED, num_threads=threads)
        with timer() as t:
            s = GridSearch(model, grid, cv=3, metrics=["rmse"], random_state=SEED).fit(ratings)
        rows.append({"library": "mfrec", "call": "GridSearch(BiasedMF)",
                     "threads": threads or os.cpu_count(), "total s": f"{t.seconds:.2f}",
                     "best params": str(s.best_params_), "best RMSE": f"{s.best_score_:.4f}"})
    data = _surprise_data()
    with timer() as t:
        gs = GridSearchCV(SVD, {"n_factors": [20, 50], "reg_all": [0.02, 0.05],
                                "random_state": [SEED]}, measures=["rmse"], cv=3, refit=True,
                          n_jobs=1)
        gs.fit(data)
    best = {k: v for k, v in gs.best_params["rmse"].items() if k != "random_state"}
    rows.append({"library": "Surprise", "call": "GridSearchCV(SVD)", "threads": 1,
                 "total s": f"{t.seconds:.2f}", "best params": str(best),
                 "best RMSE": f"{gs.best_score['rmse']:.4f}"})
    write_table("toolkit_grid.md", "3-fold grid search (4 candidates + refit), MovieLens 100K",
                rows, command_line(), notes=[
                    "Grid: n_factors {20, 50} x regularization (Surprise reg_all) {0.02, 0.05}; "
                    "other settings as Surprise SVD's defaults on both sides; both refit the "
                    "best on all data. Other jobs may have been running on the machine."])


def section_files():
    from surprise import SVD, dump

    import mfrec
    from mfrec import BiasedMF

    rows = []
    ratings = _mfrec_ratings()
    _warm_up(ratings)
    model = BiasedMF(**SURPRISE_SVD, random_state=SEED).fit(ratings)
    algo = SVD(random_state=SEED)
    algo.fit(_surprise_data().build_full_trainset())
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.mfrec"
        with timer() as ts:
            model.save(p)
        with timer() as tl:
            back = mfrec.load(p)
        same = np.array_equal(back.predict([1, 2], [3, 4]), model.predict([1, 2], [3, 4]))
        rows.append({"data": "ML-100K", "library": "mfrec", "format": "zip of .npy + JSON",
                     "save s": f"{ts.seconds:.3f}", "load s": f"{tl.seconds:.3f}",
                     "MB": f"{p.stat().st_size / 1e6:.2f}", "same predictions": same})
        q = Path(tmp) / "s.pkl"
        with timer() as ts:
            dump.dump(str(q), algo=algo)
        with timer() as tl:
            _, back_s = dump.load(str(q))
        same = back_s.predict("1", "3").est == algo.predict("1", "3").est
        rows.append({"data": "ML-100K", "library": "Surprise", "format": "pickle (dump)",
                     "save s": f"{ts.seconds:.3f}", "load s": f"{tl.seconds:.3f}",
                     "MB": f"{q.stat().st_size / 1e6:.2f}", "same predictions": same})
        users, items, vals = load_synth()
        big = mfrec.Ratings.from_indices(users, items, vals, duplicates="last")
        m5 = BiasedMF(n_factors=64, n_epochs=3, random_state=SEED).fit(big)
        p = Path(tmp) / "big.mfrec"
        with timer() as ts:
            m5.save(p)
        with timer() as tl:
            back = mfrec.load(p)
        u = np.arange(1000)
        same = np.array_equal(back.recommend(u, n=10)[0], m5.recommend(u, n=10)[0])
        rows.append({"data": f"synthetic {big.nnz / 1e6:.1f}M (k=64)", "library": "mfrec",
                     "format": "zip of .npy + JSON", "save s": f"{ts.seconds:.3f}",
                     "load s": f"{tl.seconds:.3f}", "MB": f"{p.stat().st_size / 1e6:.1f}",
                     "same predictions": same})
    write_table("toolkit_files.md", "Model files: save and load", rows, command_line(), notes=[
        "mfrec's file holds factors, biases, id vocabularies and the training interactions "
        "(for excluding seen items), loads with allow_pickle=False and checks every entry's "
        "CRC. Surprise's dump pickles the whole algorithm object, trainset included. The "
        "synthetic row has no anchor: Surprise takes many minutes to fit 5M ratings. Other "
        "jobs may have been running on the machine."])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help=f"any of {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args(argv)
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        parser.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    for name in args.sections or SECTIONS:
        print(f"== {name}", flush=True)
        globals()[f"section_{name}"]()


if __name__ == "__main__":
    main()
