"""Model files at 100M-rating size: load time and peak memory, mfrec's zip of ``.npy`` files
(the 0.1 loader and this tree's validating loader) beside safetensors, plus which malformed
files each format refuses on its own.

The model is what a fit on 100M ratings leaves: 1.82M users x 200k items x 64 float32 factors,
float32 biases, int64 id vocabularies and the 100M-entry ``user_items_`` CSR (float32 data, int32
indices and indptr) that a model file stores to exclude seen items. Arrays are synthetic (the
size is what matters); the CSR is canonical (sorted indices within rows) like ``Ratings.csr``.

Every load runs in a fresh process (peak RSS from ``/usr/bin/time``) after one warm-up read, so
the page cache holds the file for all of them alike.

Usage::

    flock /tmp/mfrec-bench.lock python benchmarks/bench_model_files.py [--nnz 100000000]

Writes ``benchmarks/results/model_files.md``; the files go to ``benchmarks/_work/`` (ignored).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, command_line, run_measured, write_table  # noqa: E402

WORK = ROOT / "benchmarks" / "_work" / "model_files"
#: the commit whose persist.py is mfrec 0.1's model format (before the loader was hardened)
V01_COMMIT = "2638e81"


def v01_module_path():
    """mfrec 0.1's persist.py, from git, as a file a child process can import."""
    dst = WORK / "persist_v01.py"
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{V01_COMMIT}:src/mfrec/persist.py"],
                         check=True, capture_output=True, text=True).stdout
    dst.write_text(src)
    return dst


_IMPORT_V01 = """
import importlib.util, sys
import mfrec
spec = importlib.util.spec_from_file_location("mfrec._persist_v01", {path!r})
v01 = importlib.util.module_from_spec(spec); sys.modules[spec.name] = v01
spec.loader.exec_module(v01)
"""


def make_model(n_users, n_items, k, nnz, seed=0):
    """An ALS model holding the state a 100M-rating fit leaves (arrays set directly)."""
    import scipy.sparse as sp

    from mfrec import ALS
    from mfrec.data import Vocabulary

    rng = np.random.default_rng(seed)
    counts = rng.poisson(nnz / n_users, n_users).astype(np.int64)
    counts = np.minimum(counts, n_items)
    diff = nnz - int(counts.sum())
    # spread the rounding difference over the first rows, one rating each
    step = 1 if diff > 0 else -1
    idx = np.flatnonzero(counts < n_items if diff > 0 else counts > 0)[:abs(diff)]
    counts[idx] += step
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    # row r: offset_r + j * stride_r, j < count_r: strictly increasing, < n_items
    stride = np.maximum(n_items // np.maximum(counts, 1), 1)
    offset = rng.integers(0, stride)
    j = np.arange(nnz, dtype=np.int64) - np.repeat(indptr[:-1], counts)
    indices = (np.repeat(offset, counts) + j * np.repeat(stride, counts)).astype(np.int32)
    del j
    data = rng.integers(1, 6, nnz).astype(np.float32)
    csr = sp.csr_matrix((data, indices, indptr.astype(np.int32)), shape=(n_users, n_items))
    m = ALS(n_factors=k)
    m.user_vocab_ = Vocabulary(np.arange(n_users, dtype=np.int64) * 3 + 1, name="user")
    m.item_vocab_ = Vocabulary(np.arange(n_items, dtype=np.int64) * 7 + 2, name="item")
    m.rating_range_ = (1.0, 5.0)
    m.user_items_ = csr
    m.user_factors_ = rng.standard_normal((n_users, k), dtype=np.float32)
    m.item_factors_ = rng.standard_normal((n_items, k), dtype=np.float32)
    m.user_bias_ = rng.standard_normal(n_users, dtype=np.float32)
    m.item_bias_ = rng.standard_normal(n_items, dtype=np.float32)
    m.global_mean_ = 3.5
    m.regularization_ = 0.1
    m.loss_history_ = [1.0, 0.9]
    m.train_rmse_history_ = [1.0, 0.9]
    return m


def safetensors_arrays(model):
    from mfrec.persist import _fitted_attributes

    out = {}
    for name, v in _fitted_attributes(model).items():
        if isinstance(v, np.ndarray):
            out[name] = v
        elif hasattr(v, "ids"):
            out[name] = np.ascontiguousarray(v.ids)
        elif hasattr(v, "indptr"):
            for part in ("data", "indices", "indptr"):
                out[f"{name}.{part}"] = getattr(v, part)
    return out


def build(args):
    from safetensors.numpy import save_file

    WORK.mkdir(parents=True, exist_ok=True)
    mod = v01_module_path()
    t = time.perf_counter()
    model = make_model(args.users, args.items, args.factors, args.nnz)
    print(f"built the model state in {time.perf_counter() - t:.1f} s", flush=True)
    code = _IMPORT_V01.format(path=str(mod))
    ns = {}
    exec(code, ns)
    saves = {}
    t = time.perf_counter()
    ns["v01"].save_model(model, WORK / "v01.mfrec")
    saves["v01"] = time.perf_counter() - t
    import mfrec.persist
    t = time.perf_counter()
    mfrec.persist.save_model(model, WORK / "new.mfrec")
    saves["new"] = time.perf_counter() - t
    arrays = safetensors_arrays(model)
    t = time.perf_counter()
    save_file(arrays, str(WORK / "model.safetensors"), metadata={"class": "ALS"})
    saves["safetensors"] = time.perf_counter() - t
    return saves


LOADERS = {
    "mfrec 0.1 loader (testzip, then read_array per member)": _IMPORT_V01 + """
import time
t = time.perf_counter(); m = v01.load({file!r}); print(time.perf_counter() - t)
""",
    "mfrec loader, this tree (bounded, validated, one pass)": """
import time, mfrec
t = time.perf_counter(); m = mfrec.load({file!r}); print(time.perf_counter() - t)
""",
    "safetensors.numpy.load_file (no semantic checks)": """
import time
from safetensors.numpy import load_file
t = time.perf_counter(); d = load_file({file!r}); print(time.perf_counter() - t)
""",
    "safetensors safe_open (mmap) + validation-like full pass": """
import time, numpy as np
from safetensors import safe_open
t = time.perf_counter()
with safe_open({file!r}, framework="np") as f:
    d = {{k: f.get_tensor(k) for k in f.keys()}}
ok = all(np.isfinite(v).all() for k, v in d.items() if v.dtype.kind == "f")
print(time.perf_counter() - t)
""",
}


def baseline_code(kind, mod):
    """Imports only: the child's resident size before it loads anything."""
    if kind.startswith("mfrec 0.1"):
        return _IMPORT_V01.format(path=str(mod))
    if kind.startswith("mfrec"):
        return "import mfrec, mfrec.persist, mfrec.models.als"
    return "import numpy, safetensors.numpy"


def measure(args):
    mod = WORK / "persist_v01.py"
    rows = []
    files = {"mfrec 0.1": WORK / "v01.mfrec", "mfrec loader": WORK / "v01.mfrec",
             "safetensors": WORK / "model.safetensors"}
    for f in set(files.values()):
        with open(f, "rb") as fh:  # warm the page cache for every reader alike
            while fh.read(1 << 26):
                pass
    for kind, tmpl in LOADERS.items():
        file = next(v for k, v in files.items() if kind.startswith(k))
        base = run_measured([sys.executable, "-c", baseline_code(kind, mod)])
        times, peaks = [], []
        for _ in range(args.repeat):
            code = tmpl.format(file=str(file), path=str(mod))
            r = run_measured([sys.executable, "-c", code])
            if r["returncode"] != 0:
                raise RuntimeError(f"{kind} failed: {r['stderr'][-2000:]}")
            times.append(float(r["stdout"].strip().splitlines()[-1]))
            peaks.append(r["peak_rss_mb"])
        rows.append({"reader": kind, "file": file.name,
                     "file MB": round(file.stat().st_size / 2**20),
                     "load s (best of %d)" % args.repeat: round(min(times), 2),
                     "load s (all)": " / ".join(f"{x:.2f}" for x in times),
                     "peak RSS MB": round(max(peaks)),
                     "RSS after imports MB": round(base["peak_rss_mb"]),
                     "peak - imports MB": round(max(peaks) - base["peak_rss_mb"])})
        print(rows[-1], flush=True)
    return rows


# ---------------------------------------------------------------------- malformed files
def _st_bytes(header, payload=b""):
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + payload


def malformed_cases(tmp):
    """(case, safetensors outcome, mfrec zip outcome) for files each format might be handed."""
    import io
    import zipfile

    from safetensors.numpy import load_file, save_file

    import mfrec
    from mfrec.persist import HEADER, ModelFileError

    model = make_model(40, 30, 4, 300, seed=1)
    good_zip = tmp / "good.mfrec"
    mfrec.persist.save_model(model, good_zip)
    arrays = safetensors_arrays(model)
    good_st = tmp / "good.safetensors"
    save_file(arrays, str(good_st))

    def st_outcome(raw_or_arrays):
        p = tmp / "case.safetensors"
        if isinstance(raw_or_arrays, bytes):
            p.write_bytes(raw_or_arrays)
        else:
            save_file(raw_or_arrays, str(p))
        try:
            load_file(str(p))
        except Exception as exc:  # noqa: BLE001 - recording what the library raises
            return f"refused ({type(exc).__name__})"
        return "loaded"

    def zip_outcome(edit):
        p = tmp / "case.mfrec"
        with zipfile.ZipFile(good_zip) as zin, zipfile.ZipFile(p, "w") as zout:
            for info in zin.infolist():
                raw = zin.read(info.filename)
                raw = edit(info.filename, raw)
                if raw is not None:
                    zout.writestr(info.filename, raw)
        return _try_load(p)

    def _try_load(p):
        try:
            mfrec.load(p)
        except ModelFileError as exc:
            what = re.sub(r"^'[^']*'(: | )", "", str(exc))
            return f"refused (ModelFileError: {what[:70]}...)"
        except Exception as exc:  # noqa: BLE001
            return f"WRONG ({type(exc).__name__})"
        return "loaded"

    def npy(a):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, a, allow_pickle=False)
        return buf.getvalue()

    def replace(key, arr):
        return lambda name, raw: npy(arr) if name == f"attr.{key}.npy" else raw

    def with_array(key, arr):
        a = dict(arrays)
        a[key] = arr
        return a

    st_hdr = json.loads(good_st.read_bytes()[8:8 + int.from_bytes(good_st.read_bytes()[:8],
                                                                       "little")])
    payload = good_st.read_bytes()[8 + int.from_bytes(good_st.read_bytes()[:8], "little"):]
    rows = []

    def add(case, st, z):
        rows.append({"malformed input": case, "safetensors load_file": st, "mfrec loader": z})

    # format level
    add("header declaring 2**40 bytes (safetensors) / a 17 MB header (mfrec)",
        st_outcome((2**40).to_bytes(8, "little") + b"{}"),
        zip_outcome(lambda n, r: b" " * (17 << 20) + r if n == HEADER else r))
    bad = dict(st_hdr)
    k0 = next(k for k in bad if k != "__metadata__")
    bad[k0] = dict(bad[k0], data_offsets=[0, 10**12])
    add("a tensor's offsets beyond the file / a member larger than the file",
        st_outcome(_st_bytes(bad, payload)),
        "refused (see test_memory_bombs_are_refused_before_allocating)")
    bad = dict(st_hdr)
    bad[k0] = dict(bad[k0], shape=[10**6, 10**6])
    add("shape promising 1e12 elements", st_outcome(_st_bytes(bad, payload)),
        zip_outcome(lambda n, r: r.replace(b"(40, 4)", b"(1000000, 1000000)")
                    if n == "attr.user_factors_.npy" else r))
    deep = b'{"__metadata__": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    add("deeply nested JSON header (100000 levels)", st_outcome(
        len(deep).to_bytes(8, "little") + deep),
        zip_outcome(lambda n, r: r.replace(b'"params": {', b'"params": {"x": '
                                           + b"[" * 100_000 + b"]" * 100_000 + b", ")
                    if n == HEADER else r))
    add("truncated file", st_outcome(good_st.read_bytes()[:-100]), _try_load(_truncated(
        good_zip, tmp)))
    # content level: what only the model knows
    n_items = 30
    ui = model.user_items_
    add("user_items_ indptr entry 2**40", st_outcome(with_array(
        "user_items_.indptr", np.r_[ui.indptr[:-1].astype(np.int64), 2**40])),
        zip_outcome(replace("user_items_.indptr", np.r_[ui.indptr[:-1].astype(np.int64),
                                                        2**40])))
    add("user_items_ indices out of range (1e9)", st_outcome(with_array(
        "user_items_.indices", np.full_like(ui.indices, 10**9))),
        zip_outcome(replace("user_items_.indices", np.full_like(ui.indices, 10**9))))
    add("NaN in item factors", st_outcome(with_array(
        "item_factors_", np.full((n_items, 4), np.nan, np.float32))),
        zip_outcome(replace("item_factors_", np.full((n_items, 4), np.nan, np.float32))))
    add("user/item factor widths differ", st_outcome(with_array(
        "item_factors_", np.zeros((n_items, 3), np.float32))),
        zip_outcome(replace("item_factors_", np.zeros((n_items, 3), np.float32))))
    add("3-D factors", st_outcome(with_array("item_factors_", np.zeros((n_items, 4, 1),
                                                                       np.float32))),
        zip_outcome(replace("item_factors_", np.zeros((n_items, 4, 1), np.float32))))
    add("complex factors", st_outcome(with_array("item_factors_",
                                                 np.zeros((n_items, 4), np.complex64))),
        zip_outcome(replace("item_factors_", np.zeros((n_items, 4), np.complex64))))
    add("string ids", "(no string dtype: ids would need an encoding)", "loaded (valid: str ids)")
    return rows


def _truncated(src, tmp):
    p = tmp / "trunc.mfrec"
    raw = src.read_bytes()
    p.write_bytes(raw[:len(raw) // 2])
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1_820_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--nnz", type=int, default=100_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-build", action="store_true", help="reuse the files in _work/")
    ap.add_argument("--out", default="model_files.md")
    ap.add_argument("--cases-only", action="store_true",
                    help="only the malformed-file table, printed")
    args = ap.parse_args()
    if args.cases_only:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            print(_md_table(malformed_cases(Path(tmp))))
        return
    saves = {} if args.skip_build else build(args)
    rows = measure(args)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        cases = malformed_cases(Path(tmp))
    notes = [f"Model: {args.users} users x {args.items} items x {args.factors} float32 factors, "
             f"user_items_ CSR with {args.nnz} entries. Save times (one run, in the parent): "
             + ", ".join(f"{k} {v:.1f} s" for k, v in saves.items()) + ".",
             "The mfrec rows read the same file, written by mfrec 0.1's save code (git "
             f"{V01_COMMIT}); this tree's save writes the same layout.",
             "Which malformed inputs each format refuses by itself (mfrec: `mfrec.load`; "
             "safetensors: `safetensors.numpy.load_file`):", "",
             _md_table(cases)]
    write_table(args.out, "Model files: load time and memory at 100M ratings", rows,
                command_line(), notes)


def _md_table(rows):
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
