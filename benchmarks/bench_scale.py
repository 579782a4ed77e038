"""Scale: reading, set-up, epoch time and peak memory at 5M, 25M and 100M ratings, beside implicit.

usage: python benchmarks/bench_scale.py [SIZE ...] [--models biased-mf,als,implicit-als,bpr]
       [--no-implicit] [--threads 2] [--out scale.md]

SIZE is 5m, 25m or 100m (default: all three; the data are the deterministic synthetic ratings of
``../shared/bench/synth.py``, generated once into ``benchmarks/data/synth{SIZE}.parquet`` as in
``bench_read.py``: 100M is 1.82M users x 200k items, about the size of the Netflix prize data).
Run it alone on the machine: the 100M rows need about 6 GB to generate and each fit process up to
3.2 GB.

Every figure comes from a fresh process that does what a user does: import mfrec, read the
Parquet file into a ``Ratings`` (``Ratings.from_file``), build the model with ``n_factors=64``
and fit it with 2 threads. The process fits the model three times on the data it read, with
1, 3 and 1 epochs (iterations): half the difference of the last two fit times is one epoch,
and the last 1-epoch fit minus one epoch is the *set-up* (validation, vocabularies, blocking,
sorting, transposes, the final checks; not Numba compilation, nor loading the kernels from
Numba's cache, which an unmeasured fit on 3 ratings does first); what the first fit took
beyond the last is reported apart (first-use costs of the process). Peaks are the process's
VmHWM: once after reading the data, then, after resetting it (Linux
``/proc/self/clear_refs``), during the fits (the whole process: the data it holds included).
``fixed MB`` is a process that imports mfrec and fits the same model on 3 ratings: the
interpreter, NumPy, Numba and the compiled kernels, a cost that does not grow with the data;
``fit B/rating`` divides the fit's peak by the ratings, ``working B/rating`` the same minus the
fixed part.

The anchor is implicit 0.7.3 (``pip install implicit``) on the same file and thread count, for
the two operations it has (``AlternatingLeastSquares``, ``BayesianPersonalizedRanking``), fed a
SciPy CSR matrix built from the pyarrow columns (values as confidences, as in its docs).
Figures for the models that can exceed memory at this scale (SVDpp, BayesianMF, NMF, SVD) are
the up-front estimates of :mod:`mfrec.models._memory`: a fit either starts because the estimate
fits or refuses before allocating anything.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_read import SIZES, ensure_data  # noqa: E402
from common import command_line, write_table  # noqa: E402

MODELS = {"biased-mf": "BiasedMF", "als": "ALS", "implicit-als": "ImplicitALS", "bpr": "BPR"}
IMPLICIT = {"implicit-als": "AlternatingLeastSquares", "bpr": "BayesianPersonalizedRanking"}
ESTIMATED = ("SVDpp", "BayesianMF", "NMF", "SVD")
K = 64

#: what both measured processes start with: their peak memory, a way to reset it, their arguments
CHILD_PRELUDE = r"""import json, sys, time
def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
def reset_peak():
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS, so the next reading is
    # the peak of what follows (the fit), not of the data reading before it
    import gc
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
path, cls, threads = sys.argv[1], sys.argv[2], int(sys.argv[4])
epoch_list = [int(e) for e in sys.argv[3].split(",")]
"""

MFREC_CHILD = CHILD_PRELUDE + r"""
import mfrec
Model = getattr(mfrec, cls)
def make(epochs):
    return Model(n_factors=%(k)d, n_epochs=epochs, num_threads=threads, random_state=0)
tiny = mfrec.Ratings.from_indices([0, 1, 1], [0, 0, 1], [1.0, 2.0, 3.0])
if path == "tiny":
    r = tiny
    read_s = 0.0
else:
    make(1).fit(tiny)  # loads the kernels from Numba's cache, as any earlier fit would have
    t0 = time.perf_counter()
    r = mfrec.Ratings.from_file(path)
    read_s = time.perf_counter() - t0
read_peak = hwm()
reset_peak()
# BiasedMF: the seconds spent inside its epoch kernel, per fit, timed from inside the fit
kernel_s = None
if cls == "BiasedMF":
    import mfrec.kernels.sgd as sgd_kernels
    kernel_s = []
    untimed_epoch = sgd_kernels.sgd_epoch
    def timed_epoch(*args, **kwargs):
        t = time.perf_counter()
        try:
            return untimed_epoch(*args, **kwargs)
        finally:
            kernel_s[-1] += time.perf_counter() - t
    sgd_kernels.sgd_epoch = timed_epoch  # train_sgd looks it up on the module at every epoch
fit_s = []
for epochs in epoch_list:
    if kernel_s is not None:
        kernel_s.append(0.0)
    t1 = time.perf_counter()
    make(epochs).fit(r)
    fit_s.append(time.perf_counter() - t1)
print(json.dumps({"read_s": read_s, "fit_s": fit_s, "kernel_s": kernel_s,
                  "read_peak_mb": read_peak, "fit_peak_mb": hwm(), "nnz": r.nnz,
                  "n_users": r.n_users, "n_items": r.n_items}))
""" % {"k": K}

IMPLICIT_CHILD = CHILD_PRELUDE + r"""
import numpy as np, scipy.sparse as sp, pyarrow.parquet as pq
import implicit.cpu.als, implicit.cpu.bpr
Model = {"AlternatingLeastSquares": implicit.cpu.als.AlternatingLeastSquares,
         "BayesianPersonalizedRanking": implicit.cpu.bpr.BayesianPersonalizedRanking}[cls]
if path == "tiny":
    m = sp.csr_matrix(np.array([[1.0, 0.0], [2.0, 3.0]], dtype=np.float32))
    read_s = 0.0
else:
    t0 = time.perf_counter()
    t = pq.read_table(path)
    u = t.column("user").to_numpy(); i = t.column("item").to_numpy()
    v = t.column("rating").to_numpy().astype(np.float32)
    del t
    m = sp.csr_matrix((v, (u, i)), shape=(int(u.max()) + 1, int(i.max()) + 1))
    del u, i, v
    read_s = time.perf_counter() - t0
def make(epochs):
    kw = dict(factors=%(k)d, iterations=epochs, num_threads=threads, random_state=0)
    if cls == "AlternatingLeastSquares":
        kw["calculate_training_loss"] = False
    return Model(**kw)
read_peak = hwm()
reset_peak()
fit_s = []
for epochs in epoch_list:
    t1 = time.perf_counter()
    make(epochs).fit(m, show_progress=False)
    fit_s.append(time.perf_counter() - t1)
print(json.dumps({"read_s": read_s, "fit_s": fit_s, "read_peak_mb": read_peak,
                  "fit_peak_mb": hwm(), "nnz": int(m.nnz), "n_users": m.shape[0],
                  "n_items": m.shape[1]}))
""" % {"k": K}


def _run(code, path, cls, epochs, threads):
    out = subprocess.run([sys.executable, "-c", code, str(path), cls, str(epochs), str(threads)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cls} on {path} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(code, path, cls, threads):
    """Figures of one model on one file: read, set-up and epoch seconds, peaks.

    One process fits the model three times on the data it read, with 1, 3 and again 1 epochs:
    one epoch is half the difference between the 3-epoch fit and the second 1-epoch fit, the
    set-up that 1-epoch fit minus one epoch, and 'first fit extra' what the process's first fit
    took beyond the second (first-use costs: thread pools, memory first touched). Two
    processes, one per fit, gave differences that swung by seconds with other work.
    """
    fixed = _run(code, "tiny", cls, "1", threads)["fit_peak_mb"]
    res = _run(code, path, cls, "1,3,1", threads)
    first, three, one = res["fit_s"]
    epoch = (three - one) / 2
    nnz = res["nnz"]
    read_peak, fit_peak = res["read_peak_mb"], res["fit_peak_mb"]
    peak = max(read_peak, fit_peak)
    inside = {}
    if res.get("kernel_s"):
        # timed inside the fits: immune to the swings between fits that the differences see
        k_first, k_three, k_one = res["kernel_s"]
        inside = {"in-fit set-up s": one - k_one, "in-fit epoch s": k_three / 3,
                  "in-fit set-up / epoch": (one - k_one) / (k_three / 3)}
    return {"read s": res["read_s"], "rows/s (M)": nnz / res["read_s"] / 1e6,
            "set-up s": one - epoch, "epoch s": epoch,
            "set-up / epoch": (one - epoch) / epoch if epoch > 0 else None,
            **inside,
            "first fit extra s": first - one,
            "read peak MB": read_peak, "fit peak MB": fit_peak, "fixed MB": fixed,
            "fit B/rating": fit_peak * 2**20 / nnz, "peak B/rating": peak * 2**20 / nnz,
            "working B/rating": (fit_peak - fixed) * 2**20 / nnz,
            "_shape": (res["n_users"], res["n_items"], nnz)}


def estimates(shape):
    import mfrec
    from mfrec.models._memory import available_bytes, estimate_bytes

    n_users, n_items, nnz = shape
    avail = available_bytes()
    rows = []
    for cls in ESTIMATED:
        model = getattr(mfrec, cls)(n_factors=K) if cls != "SVD" else mfrec.SVD(n_factors=K)
        need = estimate_bytes(model, n_users, n_items, nnz)
        data = 16 * nnz  # the Ratings the fit is given (CSR + CSC), beside its working memory
        verdict = ("fits: the fit starts" if avail is None or need <= avail
                   else "refuses up front (MemoryEstimateError)")
        rows.append({"model": cls, "estimate GB": need / 2**30,
                     "with the data GB": (need + data) / 2**30,
                     "available GB": None if avail is None else avail / 2**30,
                     "verdict": verdict})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", default=["5m", "25m", "100m"], choices=sorted(SIZES))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--no-implicit", action="store_true", help="skip the implicit anchor")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="scale.md")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"--models: unknown model {m!r}; choose from {', '.join(MODELS)}")
    # warm Numba's kernel cache so that no measured process compiles
    for m in models:
        _run(MFREC_CHILD, "tiny", MODELS[m], 1, args.threads)
    rows, est_rows = [], []
    for size in args.sizes:
        path = ensure_data(size, "parquet")
        shape = None
        for m in models:
            r = measure(MFREC_CHILD, path, MODELS[m], args.threads)
            shape = r.pop("_shape")
            rows.append({"size": size, "model": MODELS[m], "engine": "mfrec", **r})
            print(rows[-1], flush=True)
            if m in IMPLICIT and not args.no_implicit:
                a = measure(IMPLICIT_CHILD, path, IMPLICIT[m], args.threads)
                a.pop("_shape")
                a["fit peak vs mfrec"] = a["fit peak MB"] / r["fit peak MB"]
                rows.append({"size": size, "model": IMPLICIT[m], "engine": "implicit 0.7.3", **a})
                print(rows[-1], flush=True)
        for e in estimates(shape):
            est_rows.append({"size": size, **e})
    sizes = ", ".join(f"{s}: {n:,} ratings, {u:,} users, {i:,} items requested"
                      for s, (n, u, i) in SIZES.items() if s in args.sizes)
    notes = [
        f"Data: `../shared/bench/synth.py` at each size ({sizes}), Parquet. k={K}, "
        f"{args.threads} threads, fixed seed. 'read s' is "
        "`Ratings.from_file` (for implicit: pyarrow read plus SciPy CSR construction).",
        "One process per model and size fits three times, with 1, 3 and 1 epochs: 'epoch s' is "
        "half the difference of the last two, 'set-up s' the last 1-epoch fit minus one epoch, "
        "so it holds everything a fit does before and after its epochs; 'first fit extra s' is "
        "what the first 1-epoch fit took beyond the last (first-use costs of the process). "
        "'read peak MB' is the process's peak (VmHWM) after reading; the peak is then reset "
        "(`/proc/self/clear_refs`) and 'fit peak MB' is the whole process's peak during the fits, "
        "the data it holds included. 'fixed MB' is a process fitting 3 ratings; 'fit B/rating' "
        "divides the fit peak by the ratings, 'peak B/rating' the larger of the two peaks, "
        "'working B/rating' the fit peak minus the fixed part.",
        "On this shared VM a fit's time swings by a second or more between identical runs, so "
        "'set-up s', a difference of fit times, is only indicative (a negative value is such a "
        "swing); the peaks and the per-epoch ratios against implicit are the steadier figures.",
        "BiasedMF also has figures timed inside its fits: 'in-fit epoch s' is the time spent in "
        "its epoch kernel (`mfrec.kernels.sgd.sgd_epoch`) during the 3-epoch fit, divided by 3; "
        "'in-fit set-up s' is the last 1-epoch fit minus its time in that kernel, so it also "
        "holds the per-epoch loss bookkeeping (the penalty terms), which the differences count "
        "as epoch time.",
        "Models that may not fit at this scale (estimates by `mfrec.models._memory`, checked "
        "before a fit allocates anything):",
    ]
    est_table = ["| size | model | estimate GB | with the data GB | available GB | verdict |",
                 "|---|---|---|---|---|---|"]
    for e in est_rows:
        avail = "" if e["available GB"] is None else f"{e['available GB']:.1f}"
        est_table.append(f"| {e['size']} | {e['model']} | {e['estimate GB']:.1f} | "
                         f"{e['with the data GB']:.1f} | {avail} | {e['verdict']} |")
    notes.append("\n".join(est_table))
    path = write_table(args.out, "Scale: reading, set-up, epochs and memory, 5M to 100M ratings",
                       rows, command_line(), notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
