"""Top-10 for every user: exact streaming to Parquet against the machine's matmul peak, and the
approximate index (mfrec.index.ItemIndex) against exact, seen items excluded in both.

usage: python benchmarks/bench_topn_all.py MODEL.mfrec [--sample 20000] [--lists 447 894 ...]
           [--probes 8 16 24 ...]
           [--all-users [--modes exact,index] [--limit N]] [--skip-sample] [--out FILE.md]

1. The fp32 matrix-multiply peak: a plain NumPy (BLAS) product of a 4096 x k by k x 200,000
   matrix, best of 3, in the same process.
2. ``--lists L ... --probes F ...``: the sweep that chose ``ItemIndex``'s defaults, on a
   *validation* sample of users (disjoint from the test sample): for each number of lists and
   each share of them probed (F lists per 1024), recall@10 against exact and the speed-up over
   exact measured on that sample, with the build time and how unbalanced the lists are.
3. Test sample: exact ``model.recommend`` (its arithmetic rate counted as 2 * users * items * k
   flops), then ``ItemIndex().fit(model)`` with its defaults (build time), recall@10 against
   exact and the speed-up, and where the index's time goes (faiss search against the rest).
4. ``--all-users``: ``recommend_all`` for every user (or the first ``--limit``) to Parquet,
   exact and/or through the index (``--modes``), each in a fresh child process: the seconds of
   ``recommend_all`` itself, the child's peak resident memory (GNU time, which is not inflated
   by this parent's size) and its peak just after loading the model (VmHWM), so that what the
   model takes and what the run adds are told apart. ``--skip-sample`` runs this part alone.

Heavy parts can be run one at a time (each within a few minutes on 2 cores): the sweep and the
test sample, then ``--all-users --skip-sample --modes index``, then ``--modes exact --limit``.
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
limit = int(sys.argv[4])
users = None if limit <= 0 else model.user_vocab_.ids[:limit]
t = time.perf_counter()
n = recommend_all(model, sys.argv[2], n=10, index=index, users=users)
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


class _Timed:
    """Stands in for a faiss object, adding the seconds spent in its methods to ``spent``."""

    def __init__(self, inner, spent):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_spent", spent)

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def timed_call(*a, **kw):
            t = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self._spent[0] += time.perf_counter() - t
        return timed_call

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)


def index_profile(index, users):
    """Seconds of the whole ``recommend`` against the part spent inside faiss (the coarse
    search for the lists to probe and the scan of those lists)."""
    spent = [0.0]
    inner = index._index, index._quantizer
    index._index, index._quantizer = _Timed(inner[0], spent), _Timed(inner[1], spent)
    try:
        _, total = timed(index.recommend, users, n=K)
    finally:
        index._index, index._quantizer = inner
    return total, spent[0]


def sample_part(model, args):
    """Matmul peak, the validation sweep and the test sample: the report's lines."""
    from mfrec.index import ItemIndex

    n_items, k = model.item_factors_.shape
    peak = matmul_peak(k, n_items)
    rng = np.random.default_rng(0)
    order = rng.permutation(model.n_users_)
    m = min(args.sample, model.n_users_ // 2)
    # test and validation samples: disjoint, each in vocabulary order
    test = model.user_vocab_.to_ids(np.sort(order[:m]))
    valid = model.user_vocab_.to_ids(np.sort(order[m:2 * m]))
    model.recommend(test[:2000], n=K)  # compile / warm up (enough users for the Numba path)
    lines = [f"model: {args.model} ({model.n_users_:,} users, {n_items:,} items, k={k}); "
             f"samples of {m:,} users (test and validation, disjoint), top-{K}, seen items "
             f"excluded", ""]
    print("\n".join(lines), flush=True)
    if args.probes:
        (exact_v, _), t_exact_v = timed(model.recommend, valid, n=K)
        lines += [f"Validation sweep (exact {m / t_exact_v:,.0f} users/s on this sample, same "
                  f"run; list sizes: median / largest / share of items in the largest 5% of "
                  f"lists):", "",
                  "| n_lists | build s | list sizes | n_probe | lists per 1024 | recall@10 | "
                  "users/s | x exact |", "|---|---|---|---|---|---|---|---|"]
        print("\n".join(lines[-4:]), flush=True)
        for n_lists in args.lists or [None]:
            index, t_build = timed(ItemIndex(n_lists=n_lists).fit, model)
            L = index.centroids_.shape[0]
            sizes = np.sort(np.bincount(index._item_list, minlength=L))[::-1]
            top = sizes[:max(1, L // 20)].sum() / sizes.sum()
            shape = f"{np.median(sizes):.0f} / {sizes[0]:,} / {top:.0%}"
            for per_1024 in args.probes:
                p = max(1, round(L * per_1024 / 1024))
                index.n_probe = p
                index.recommend(valid[:100], n=K)
                (got, _), t = timed(index.recommend, valid, n=K)
                lines.append(f"| {L:,} | {t_build:.1f} | {shape} | {p} | {1024 * p / L:.1f} | "
                             f"{recall_at(got, exact_v):.4f} | {m / t:,.0f} | "
                             f"{t_exact_v / t:.1f} |")
                print(lines[-1], flush=True)
            del index
        lines.append("")
    (exact, _), t_exact = timed(model.recommend, test, n=K)
    gflops = 2 * m * n_items * k / t_exact / 1e9
    index, t_build = timed(ItemIndex().fit, model)
    n_lists, n_probe = index._check_params(n_items)
    index.recommend(test[:100], n=K)
    (approx, _), t_approx = timed(index.recommend, test, n=K)
    total, in_faiss = index_profile(index, test)
    table = [
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
        f"| `ItemIndex` share of its time inside faiss (coarse search and scan; second run) | "
        f"{in_faiss / total:.0%} |",
    ]
    print("\n".join(table), flush=True)
    return lines + table


def main():
    import mfrec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--sample", type=int, default=20000)
    ap.add_argument("--probes", type=float, nargs="*", default=[],
                    help="lists probed per 1024 lists, for the validation sweep (none: no sweep)")
    ap.add_argument("--lists", type=int, nargs="*", default=[],
                    help="n_lists values for the sweep (default: ItemIndex's default only)")
    ap.add_argument("--all-users", action="store_true")
    ap.add_argument("--modes", default="exact,index", help="recommend_all runs: exact, index")
    ap.add_argument("--limit", type=int, default=0,
                    help="recommend_all for the first LIMIT users only (0: all)")
    ap.add_argument("--skip-sample", action="store_true",
                    help="only the --all-users runs (no matmul peak, sweep or test sample)")
    ap.add_argument("--out")
    args = ap.parse_args()
    model = mfrec.load(args.model)
    n_items, k = model.item_factors_.shape
    lines = [f"Produced by `{command_line()}` on "
             f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
             f"Machine: {machine_info()}.", ""]
    if not args.skip_sample:
        lines += sample_part(model, args)
    else:
        lines += [f"model: {args.model} ({model.n_users_:,} users, {n_items:,} items, k={k}), "
                  f"top-{K}, seen items excluded", "", "| measure | value |", "|---|---|"]
    del model
    if args.all_users:
        work = os.path.join(os.path.dirname(__file__), "_work")
        os.makedirs(work, exist_ok=True)
        for mode in args.modes.split(","):
            out = os.path.join(work, f"recs_{mode}.parquet")
            run = run_measured([sys.executable, "-c", CHILD, args.model, out, mode,
                                str(args.limit)])
            if run["returncode"] != 0:
                raise RuntimeError(f"recommend_all child failed: {run['stderr'][-2000:]}")
            res = json.loads(run["stdout"].strip().splitlines()[-1])
            lines.append(
                f"| `recommend_all` {mode}, {'all ' if args.limit <= 0 else 'first '}"
                f"{res['users']:,} users to Parquet | "
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
