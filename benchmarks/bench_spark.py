"""mfrec.spark against plain pyspark on the synthetic 5M set, local[2], k=64, in one Spark session.

1. ``mfrec.spark.fit`` (vocabularies, encoding, seen-items matrix, biases, Spark's ALS on the
   residuals, factors to the driver) vs plain ``pyspark.ml.recommendation.ALS().fit`` on the same
   Parquet file, same rank, regParam and iterations. mfrec's phases are timed separately, so the
   vocabulary and conversion share of the fit is reported.
2. ``mfrec.spark.recommend_all`` (top 10, seen items excluded) vs Spark's
   ``ALSModel.recommendForAllUsers(10)`` (which cannot exclude them), both written to Parquet.

usage: python benchmarks/bench_spark.py [--data PATH] [--iters 3] [--rank 64]
       [--master local[2]] [--driver-memory 4g]

The data file is made by ``../shared/bench/synth.py 5000000 200000 40000 PATH`` when missing.
Run it alone (``flock /tmp/mfrec-bench.lock``): timings on a busy machine are indicative only.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SYNTH_SCRIPT, command_line, write_table  # noqa: E402


class _Phases(logging.Handler):
    """Collects mfrec.spark's "phase <name> <seconds>" debug records."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.phases = {}

    def emit(self, record):
        if record.msg.startswith("phase "):
            name, seconds = record.args
            self.phases[name] = self.phases.get(name, 0.0) + float(seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "mfrec-spark"
                                          / "synth5m.parquet"))
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--reg", type=float, default=0.05)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--out", default="spark.md")
    args = ap.parse_args()

    data = Path(args.data)
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(SYNTH_SCRIPT), "5000000", "200000", "40000",
                        str(data)], check=True)

    import mfrec.spark as ms
    from pyspark.ml.recommendation import ALS

    spark = ms.session(args.master, driver_memory=args.driver_memory, shuffle_partitions=8,
                       conf={"spark.ui.enabled": "false",
                             "spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    handler = _Phases()
    log = logging.getLogger("mfrec.spark")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    work = Path(tempfile.mkdtemp(prefix="mfrec-bench-spark-"))
    rows, notes = [], []
    try:
        n_ratings = spark.read.parquet(str(data)).count()  # warm the JVM and the file cache

        # ---- fit
        t = time.perf_counter()
        plain = ALS(rank=args.rank, maxIter=args.iters, regParam=args.reg, userCol="user",
                    itemCol="item", ratingCol="rating", seed=0).fit(spark.read.parquet(str(data)))
        plain.userFactors.count()  # the factors exist (fit is eager in Spark, this is cheap)
        plain_s = time.perf_counter() - t

        t = time.perf_counter()
        model = ms.fit(str(data), "als", spark=spark, n_factors=args.rank,
                       n_epochs=args.iters, regularization=args.reg, random_state=0)
        ours_s = time.perf_counter() - t
        ph = handler.phases
        als_s = ph.get("spark ALS", float("nan"))
        overhead = ours_s - als_s
        rows.append({"task": f"fit, {args.iters} iterations", "engine": "pyspark ALS (plain)",
                     "seconds": plain_s, "s / iteration": plain_s / args.iters,
                     "ratio to plain": 1.0})
        rows.append({"task": f"fit, {args.iters} iterations", "engine": "mfrec.spark.fit",
                     "seconds": ours_s, "s / iteration": ours_s / args.iters,
                     "ratio to plain": ours_s / plain_s})
        phase_text = ", ".join(f"{k} {v:.1f} s" for k, v in ph.items())
        notes.append(f"mfrec.spark.fit phases: {phase_text}. Everything but Spark's ALS "
                     f"(vocabularies, encoding, seen-items matrix to the driver, "
                     f"bias passes, factors to the driver, model) took {overhead:.1f} s = "
                     f"{100 * overhead / ours_s:.0f}% of the fit (goal <= 20%); fit / plain = "
                     f"{ours_s / plain_s:.2f}x (goal <= 1.2x).")
        notes.append(f"Data: {n_ratings:,} ratings, {model.n_users_:,} users, "
                     f"{model.n_items_:,} items; rank {args.rank}, regParam {args.reg}; train "
                     f"RMSE of the mfrec.spark model {model.train_rmse_history_[-1]:.4f}.")

        # ---- recommend for all users
        out_plain = work / "plain.parquet"
        t = time.perf_counter()
        plain.recommendForAllUsers(args.n).write.parquet(str(out_plain))
        rec_plain_s = time.perf_counter() - t
        out_ours = work / "ours.parquet"
        t = time.perf_counter()
        ms.recommend_all(model, n=args.n, spark=spark, output=str(out_ours))
        rec_ours_s = time.perf_counter() - t
        n_rows = spark.read.parquet(str(out_ours)).count()
        rows.append({"task": f"top {args.n} for all users", "engine":
                     "pyspark recommendForAllUsers (seen items not excluded)",
                     "seconds": rec_plain_s, "s / iteration": None, "ratio to plain": 1.0})
        rows.append({"task": f"top {args.n} for all users", "engine":
                     "mfrec.spark.recommend_all (seen items excluded)",
                     "seconds": rec_ours_s, "s / iteration": None,
                     "ratio to plain": rec_ours_s / rec_plain_s})
        notes.append(f"recommend_all wrote {n_rows:,} rows; it is {rec_plain_s / rec_ours_s:.1f}x "
                     f"faster than recommendForAllUsers (goal >= 3x), both written to Parquet.")
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)

    notes.append(f"pyspark {__import__('pyspark').__version__}, {args.master}, driver memory "
                 f"{args.driver_memory}, one Spark session for every measurement.")
    notes.append("Per-iteration figures are total fit time / iterations (they include each "
                 "fit's fixed costs), measured once.")
    path = write_table(args.out, f"mfrec.spark vs pyspark, {data.name}, {args.master}, "
                       f"k={args.rank}", rows, command_line(), notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
