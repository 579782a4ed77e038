"""mfrec.spark against plain pyspark on the synthetic 5M set, local[2], k=64.

1. ``fit``: ``mfrec.spark.fit`` (ratings to the driver, vocabularies, encoding, seen-items
   matrix, biases, Spark's ALS on the residuals, factors to the driver) against plain
   ``pyspark.ml.recommendation.ALS().fit`` on the same Parquet file, same rank, regParam and
   iterations — once with the block counts mfrec.spark uses (one per core: the same ALS work, so
   the difference is mfrec's overhead) and once with Spark's default 10 blocks (what a user of
   plain pyspark gets). A small warm-up fit of each comes first, so neither measured fit pays
   for the JVM's first compilation of the ALS code. mfrec's phases are timed separately, so the
   share of the fit that is not Spark's ALS is reported.
2. ``recommend``: ``mfrec.spark.recommend_all`` (top 10, seen items excluded) against Spark's
   ``ALSModel.recommendForAllUsers(10)`` (which cannot exclude them), both written to Parquet,
   from the two models the ``fit`` part saved (``--work``).

usage: python benchmarks/bench_spark.py [--data PATH] [--iters 3] [--rank 64]
       [--part all|fit|recommend] [--master local[2]] [--driver-memory 4g]

``--part fit`` then ``--part recommend`` run the halves in separate processes (each holding the
machine for less time); every part stores its figures under ``--work`` and the results table is
rewritten from all stored figures of the same data and settings, with every command that made
them. The data file is made by ``../shared/bench/synth.py 5000000 200000 40000 PATH`` when
missing. Run it alone (``flock /tmp/mfrec-heavy.lock``): timings on a busy machine are indicative
only.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA_DIR, SYNTH_SCRIPT, command_line, write_table  # noqa: E402


class _Phases(logging.Handler):
    """Collects mfrec.spark's "phase <name> <seconds>" debug records."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.phases = {}

    def emit(self, record):
        if record.msg.startswith("phase "):
            name, seconds = record.args
            self.phases[name] = self.phases.get(name, 0.0) + float(seconds)


def part_fit(args, spark, data, work):
    """Warm-up, plain ALS with mfrec's blocks, mfrec.spark.fit, plain ALS with Spark's default
    blocks; saves both measured models for the recommend part."""
    import mfrec.spark as ms
    from pyspark.ml.recommendation import ALS

    handler = _Phases()
    log = logging.getLogger("mfrec.spark")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    blocks = spark.sparkContext.defaultParallelism  # what mfrec.spark.fit passes to Spark

    def plain_fit(frame, iters, **kw):
        return ALS(rank=args.rank, maxIter=iters, regParam=args.reg, userCol="user",
                   itemCol="item", ratingCol="rating", seed=0, **kw).fit(frame)

    full = spark.read.parquet(str(data))
    n_ratings = full.count()  # warms the file cache
    warm = full.limit(200_000)
    plain_fit(warm, 1, numUserBlocks=blocks, numItemBlocks=blocks).userFactors.count()
    ms.fit(warm, "als", spark=spark, n_factors=args.rank, n_epochs=1,
           regularization=args.reg, random_state=0)
    handler.phases.clear()

    t = time.perf_counter()
    plain = plain_fit(spark.read.parquet(str(data)), args.iters, numUserBlocks=blocks,
                      numItemBlocks=blocks)
    plain.userFactors.count()  # fit is eager in Spark; this only confirms the factors exist
    plain_s = time.perf_counter() - t

    t = time.perf_counter()
    model = ms.fit(str(data), "als", spark=spark, n_factors=args.rank, n_epochs=args.iters,
                   regularization=args.reg, random_state=0)
    ours_s = time.perf_counter() - t
    ph = dict(handler.phases)

    t = time.perf_counter()
    default = plain_fit(spark.read.parquet(str(data)), args.iters)
    default.userFactors.count()
    default_s = time.perf_counter() - t

    plain.write().overwrite().save(str(work / "plain_als"))
    model.save(work / "mfrec_als.mfrec")

    task = f"fit, {args.iters} iterations"
    rows = [
        {"task": task, "engine": f"pyspark ALS, {blocks} user/item blocks (as mfrec)",
         "seconds": plain_s, "s / iteration": plain_s / args.iters, "ratio to plain": 1.0},
        {"task": task, "engine": "mfrec.spark.fit", "seconds": ours_s,
         "s / iteration": ours_s / args.iters, "ratio to plain": ours_s / plain_s},
        {"task": task, "engine": "pyspark ALS, Spark's default 10 blocks", "seconds": default_s,
         "s / iteration": default_s / args.iters, "ratio to plain": default_s / plain_s},
    ]
    als_s = ph.get("spark ALS", float("nan"))
    overhead = ours_s - als_s
    phase_text = ", ".join(f"{k} {v:.1f} s" for k, v in ph.items())
    notes = [
        f"mfrec.spark.fit phases: {phase_text}. Everything but Spark's ALS (ratings to the "
        f"driver, checks, vocabularies, encoding, seen-items matrix, biases, residuals to Spark, "
        f"factors to the driver, model) took {overhead:.1f} s = {100 * overhead / ours_s:.0f}% "
        f"of the fit (goal <= 20%); fit / plain = {ours_s / plain_s:.2f}x with the same blocks, "
        f"{ours_s / default_s:.2f}x against Spark's defaults (goal <= 1.2x).",
        f"Data: {n_ratings:,} ratings, {model.n_users_:,} users, {model.n_items_:,} items; "
        f"rank {args.rank}, regParam {args.reg}; train RMSE of the mfrec.spark model "
        f"{model.train_rmse_history_[-1]:.4f}. Each fit measured once, after a warm-up fit of "
        f"each on 200,000 ratings.",
    ]
    return rows, notes


def part_recommend(args, spark, data, work):
    """recommendForAllUsers on the saved plain model against recommend_all on the saved mfrec
    model, both to Parquet."""
    import mfrec
    import mfrec.spark as ms
    from pyspark.ml.recommendation import ALSModel

    if not (work / "plain_als").exists() or not (work / "mfrec_als.mfrec").exists():
        raise SystemExit(f"no saved models in {work}: run --part fit first")
    plain = ALSModel.load(str(work / "plain_als"))
    model = mfrec.load(work / "mfrec_als.mfrec")
    out = Path(tempfile.mkdtemp(prefix="mfrec-bench-spark-"))
    try:
        t = time.perf_counter()
        plain.recommendForAllUsers(args.n).write.parquet(str(out / "plain.parquet"))
        plain_s = time.perf_counter() - t
        t = time.perf_counter()
        ms.recommend_all(model, n=args.n, spark=spark, output=str(out / "ours.parquet"))
        ours_s = time.perf_counter() - t
        n_rows = spark.read.parquet(str(out / "ours.parquet")).count()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    task = f"top {args.n} for all {model.n_users_:,} users"
    rows = [
        {"task": task, "engine": "pyspark recommendForAllUsers (seen items not excluded)",
         "seconds": plain_s, "s / iteration": None, "ratio to plain": 1.0},
        {"task": task, "engine": "mfrec.spark.recommend_all (seen items excluded)",
         "seconds": ours_s, "s / iteration": None, "ratio to plain": ours_s / plain_s},
    ]
    notes = [f"recommend_all wrote {n_rows:,} rows; it is {plain_s / ours_s:.1f}x faster than "
             f"recommendForAllUsers (goal >= 3x), both from the models of the fit part, both "
             f"written to Parquet."]
    return rows, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "mfrec-spark"
                                          / "synth5m.parquet"))
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--reg", type=float, default=0.05)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--part", choices=("all", "fit", "recommend"), default="all")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--work", default=str(DATA_DIR / "spark-bench"),
                    help="where the parts keep their models and figures")
    ap.add_argument("--out", default="spark.md")
    args = ap.parse_args()

    data = Path(args.data)
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(SYNTH_SCRIPT), "5000000", "200000", "40000",
                        str(data)], check=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    setting = {"data": str(data.resolve()), "iters": args.iters, "rank": args.rank,
               "reg": args.reg, "n": args.n, "master": args.master,
               "driver_memory": args.driver_memory}

    import mfrec.spark as ms

    spark = ms.session(args.master, driver_memory=args.driver_memory, shuffle_partitions=8,
                       conf={"spark.ui.enabled": "false",
                             "spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for name, run in (("fit", part_fit), ("recommend", part_recommend)):
            if args.part in ("all", name):
                rows, notes = run(args, spark, data, work)
                (work / f"{name}.json").write_text(json.dumps(
                    {"setting": setting, "command": command_line(), "rows": rows,
                     "notes": notes}, indent=1))
    finally:
        spark.stop()

    rows, notes, commands = [], [], []
    for name in ("fit", "recommend"):
        path = work / f"{name}.json"
        if not path.exists():
            continue
        stored = json.loads(path.read_text())
        if stored["setting"] != setting:
            continue  # figures of other data or settings are not mixed in
        rows += stored["rows"]
        notes += stored["notes"]
        if stored["command"] not in commands:
            commands.append(stored["command"])
    import pyspark
    notes.append(f"pyspark {pyspark.__version__}, {args.master}, driver memory "
                 f"{args.driver_memory}; each part in one Spark session. Per-iteration figures "
                 f"are total fit time / iterations (they include each fit's fixed costs).")
    path = write_table(args.out, f"mfrec.spark vs pyspark, {data.name}, {args.master}, "
                       f"k={args.rank}", rows, " ; ".join(commands), notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
