"""Check mfrec's up-front memory estimates against measured peaks: each model is fitted in a
fresh process on synthetic ratings, and the peak resident memory above the process's resident
memory just before ``fit`` (data loaded, kernels compiled by a tiny warm-up fit) is compared with
``mfrec.models._memory.estimate_bytes``. An estimate must not be below the measured working set.

usage: python benchmarks/bench_memory_estimate.py [N_RATINGS] [--out results/memory_estimate.md]
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

MODELS = {
    "SVD": "SVD(n_factors=32, random_state=0)",
    "NMF": "NMF(n_factors=32, n_epochs=5, random_state=0)",
    "GradientDescent": "GradientDescent(n_factors=32, n_epochs=5, random_state=0)",
    "SVDpp": "SVDpp(n_factors=32, n_epochs=2, random_state=0)",
    "BayesianMF": "BayesianMF(n_factors=32, n_epochs=4, burn_in=2, random_state=0)",
    "BiasedMF": "BiasedMF(n_factors=32, n_epochs=2, random_state=0)",
    "ALS": "ALS(n_factors=32, n_epochs=2, random_state=0)",
    "ImplicitALS": "ImplicitALS(n_factors=32, n_epochs=2, random_state=0)",
    "BPR": "BPR(n_factors=32, n_epochs=2, random_state=0)",
}

CHILD = r"""
import json, sys, warnings
import numpy as np
sys.path.insert(0, sys.argv[3])
warnings.simplefilter("ignore")
import mfrec
from mfrec.models._memory import estimate_bytes
from synth_shim import generate
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
n = int(sys.argv[2])
u, i, r = generate(n, n // 20, n // 100)
data = mfrec.Ratings.from_indices(u, i, r)
_ = data.csc
make = lambda: eval("mfrec." + sys.argv[1])
small = mfrec.Ratings.from_indices(u[:2000] % 50, i[:2000] % 40, r[:2000], duplicates="last")
make().fit(small)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark to the current resident size
base = rss()
model = make()
model.fit(data)
print(json.dumps({"measured": hwm() - base, "estimate": estimate_bytes(
    model, data.n_users, data.n_items, data.nnz)}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=2_000_000)
    ap.add_argument("--out")
    args = ap.parse_args()
    shim = os.path.join(os.path.dirname(__file__), "_work")
    os.makedirs(shim, exist_ok=True)
    synth = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench", "synth.py")
    with open(os.path.join(shim, "synth_shim.py"), "w") as f:
        f.write(open(synth).read())
    rows = ["| model | measured working set | estimate | estimate / measured |", "|---|---|---|---|"]
    for name, ctor in MODELS.items():
        out = subprocess.run([sys.executable, "-c", CHILD, ctor, str(args.n), shim],
                             capture_output=True, text=True)
        if out.returncode:
            rows.append(f"| {name} | failed: {out.stderr.strip().splitlines()[-1]} | | |")
        else:
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(f"| {name} | {res['measured'] / 2**20:,.0f} MB | "
                        f"{res['estimate'] / 2**20:,.0f} MB | "
                        f"{res['estimate'] / max(res['measured'], 1):.2f} |")
        print(rows[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# Up-front memory estimates against measured fits\n\n"
                    f"`python benchmarks/bench_memory_estimate.py {args.n}` (synthetic ratings "
                    f"from ../shared/bench/synth.py: {args.n:,} ratings, {args.n // 20:,} users, "
                    f"{args.n // 100:,} items; k=32)\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
