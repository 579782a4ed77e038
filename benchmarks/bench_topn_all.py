"""Top-10 for every user: exact streaming to Parquet against the machine's matmul peak, and the
approximate index (mfrec.index.ItemIndex) against exact, seen items excluded in both.

usage: python benchmarks/bench_topn_all.py MODEL.mfrec [--sample 20000] [--probes 8 16 28 ...]
                                           [--all-users] [--out results/topn_all.md]

1. The fp32 matrix-multiply peak: a plain NumPy (BLAS) product of a 4096 x k by k x 200,000
   matrix, best of 3, in the same process.
2. ``--probes P ...``: the probe-count sweep that chose ``ItemIndex``'s default, on a
   *validation* sample of users (disjoint from the test sample): for each ``n_probe``, recall@10
   against exact and the speed-up over exact measured on that sample.
3. Test sample: exact ``model.recommend`` (its arithmetic rate counted as 2 * users * items * k
   flops), then ``ItemIndex().fit(model)`` with its defaults (build time), recall@10 against
   exact and the speed-up, and where the index's time goes (faiss search against the rest).
4. ``--all-users``: ``recommend_all`` for every user to Parquet, exact and through the index,
   each in a fresh child process: the seconds of ``recommend_all`` itself, the child's peak
   resident memory (GNU time, which is not inflated by this parent's size) and its peak just
   after loading the model (VmHWM), so that what the model takes and what the run adds are
   told apart.
"""
import argparse
import datetime as dt
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

from common import command_line, machine_info, run_measured  # noqa: E402

K = 10

CHILD = r"""
import json, sys, time
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM:"))
t = time.perf_counter()
import mfrec
from mfrec.bulk import recommend_all
model = mfrec.load(sys.argv[1])
t_load, hwm_load = time.perf_counter() - t, hwm()
index, t_build = None, 0.0
if sys.argv[3] == "index":
    from mfrec.index import ItemIndex
    t = time.perf_counter()
    index = ItemIndex().fit(model)
    t_build = time.perf_counter() - t
hwm_ready = hwm()
t = time.perf_counter()
n = recommend_all(model, sys.argv[2], n=10, index=index)
dt = time.perf_counter() - t
print(json.dumps({"users": n, "seconds": dt, "load_s": t_load, "build_s": t_build,
                  "hwm_load_mb": hwm_load, "hwm_ready_mb": hwm_ready, "hwm_end_mb": hwm()}))
"""


def matmul_peak(k, n_items):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4096, k), dtype=np.float32)
    B = rng.standard_normal((k, n_items), dtype=np.float32)
    A @ B
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        A @ B
        best = min(best, time.perf_counter() - t)
    return 2 * 4096 * k * n_items / best / 1e9


def recall_at(approx, exact):
    return float(np.mean([len(set(a) & set(e)) / K for a, e in zip(approx, exact)]))


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def index_profile(index, users):
    """Seconds of the whole ``recommend`` against the part spent inside faiss's search."""
    inner = index._index
    spent = [0.0]

    class Timed:
        nprobe = property(lambda s: inner.nprobe, lambda s, v: setattr(inner, "nprobe", v))

        def search(self, *a):
            t = time.perf_counter()
            try:
                return inner.search(*a)
            finally:
                spent[0] += time.perf_counter() - t
    index._index = Timed()
    try:
        _, total = timed(index.recommend, users, n=K)
    finally:
        index._index = inner
    return total, spent[0]


def main():
    import mfrec
    from mfrec.index import ItemIndex

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--sample", type=int, default=20000)
    ap.add_argument("--probes", type=int, nargs="*", default=[],
                    help="n_probe values for the validation sweep (none: no sweep)")
    ap.add_argument("--all-users", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    model = mfrec.load(args.model)
    n_items, k = model.item_factors_.shape
    peak = matmul_peak(k, n_items)
    rng = np.random.default_rng(0)
    order = rng.permutation(model.n_users_)
    m = min(args.sample, model.n_users_ // 2)
    # test and validation samples: disjoint, each in vocabulary order
    test = model.user_vocab_.to_ids(np.sort(order[:m]))
    valid = model.user_vocab_.to_ids(np.sort(order[m:2 * m]))
    model.recommend(test[:2000], n=K)  # compile / warm up (enough users for the Numba path)
    lines = [f"Produced by `{command_line()}` on "
             f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
             f"Machine: {machine_info()}.", "",
             f"model: {args.model} ({model.n_users_:,} users, {n_items:,} items, k={k}); "
             f"samples of {m:,} users (test and validation, disjoint), top-{K}, seen items "
             f"excluded", ""]
    print("\n".join(lines), flush=True)
    t_build = None
    if args.probes:
        (exact_v, _), t_exact_v = timed(model.recommend, valid, n=K)
        index, t_build = timed(ItemIndex().fit, model)
        n_lists = index.centroids_.shape[0]
        lines += [f"Validation sweep ({n_lists:,} lists; exact {m / t_exact_v:,.0f} users/s "
                  f"on this sample, same run):", "",
                  "| n_probe | lists per 1024 | recall@10 | users/s | x exact |",
                  "|---|---|---|---|---|"]
        print("\n".join(lines[-4:]), flush=True)
        for p in args.probes:
            index.n_probe = p
            index.recommend(valid[:100], n=K)
            (got, _), t = timed(index.recommend, valid, n=K)
            lines.append(f"| {p} | {1024 * p / n_lists:.1f} | {recall_at(got, exact_v):.4f} | "
                         f"{m / t:,.0f} | {t_exact_v / t:.1f} |")
            print(lines[-1], flush=True)
        lines.append("")
        del index
    (exact, _), t_exact = timed(model.recommend, test, n=K)
    gflops = 2 * m * n_items * k / t_exact / 1e9
    index, t_build = timed(ItemIndex().fit, model)
    n_lists, n_probe = index._check_params(n_items)
    index.recommend(test[:100], n=K)
    (approx, _), t_approx = timed(index.recommend, test, n=K)
    total, in_faiss = index_profile(index, test)
    lines += [
        f"Test sample, `ItemIndex()` defaults ({n_lists:,} lists, n_probe {n_probe}):", "",
        "| measure | value |", "|---|---|",
        f"| NumPy fp32 matmul peak (4096 x {k} @ {k} x {n_items}) | {peak:.1f} GFLOP/s |",
        f"| exact `recommend`: users/s | {m / t_exact:,.0f} |",
        f"| exact `recommend`: GFLOP/s (share of matmul peak) | {gflops:.1f} "
        f"({gflops / peak:.0%}) |",
        f"| `ItemIndex().fit(model)` build | {t_build:.1f} s |",
        f"| `ItemIndex` users/s | {m / t_approx:,.0f} |",
        f"| `ItemIndex` speed-up over exact | {t_exact / t_approx:.1f}x |",
        f"| `ItemIndex` recall@10 against exact | {recall_at(approx, exact):.4f} |",
        f"| `ItemIndex` time inside faiss's search (second run) | {in_faiss / total:.0%} |",
    ]
    print("\n".join(lines[-9:]), flush=True)
    if args.all_users:
        work = os.path.join(os.path.dirname(__file__), "_work")
        os.makedirs(work, exist_ok=True)
        for mode in ("exact", "index"):
            out = os.path.join(work, f"recs_{mode}.parquet")
            run = run_measured([sys.executable, "-c", CHILD, args.model, out, mode])
            if run["returncode"] != 0:
                raise RuntimeError(f"recommend_all child failed: {run['stderr'][-2000:]}")
            res = json.loads(run["stdout"].strip().splitlines()[-1])
            lines.append(
                f"| `recommend_all` {mode}, all {res['users']:,} users to Parquet | "
                f"{res['seconds']:.1f} s ({res['users'] / res['seconds']:,.0f} users/s); peak RSS "
                f"{run['peak_rss_mb']:,.0f} MB, of which {res['hwm_load_mb']:,.0f} MB after "
                f"loading the model ({res['load_s']:.1f} s)"
                + (f" and {res['hwm_ready_mb']:,.0f} MB after building the index "
                   f"({res['build_s']:.1f} s)" if mode == "index" else "") + " |")
            print(lines[-1], flush=True)
            os.unlink(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Top-N for every user: exact and approximate\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
