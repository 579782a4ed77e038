"""Shared helpers for the benchmark scripts: data, timing, peak memory and result tables.

Every benchmark runs mfrec and its anchor (Surprise, implicit, Spark, ...) in one run on the same
data and writes a markdown table under ``benchmarks/results/`` that records the exact command.

API (kept small and stable; other scripts import it)::

    load_ml100k_split(name)          -> (train_df, test_df)   columns user, item, rating, timestamp
    load_ml100k_random_split(seed)   -> (train_df, test_df)   80/20 split of u.data
    load_synth(n, n_users, n_items)  -> (users int32, items int32, ratings float32)
    timer()                          -> context manager; ``.seconds`` after the block
    peak_rss_mb(fn, *args, **kw)     -> (fn's result, peak RSS in MB of a fresh process running it)
    run_measured(argv)               -> dict(returncode, wall_s, peak_rss_mb, stdout, stderr)
    write_table(path, title, rows, command, notes=None)
    command_line()                   -> the command that started this script, as a string

and, for the section-based scripts (bench_als, bench_sgd, bench_bayes)::

    rmse(y, p)                       -> root mean squared error, in float64
    ml100k_rows(models, score)       -> RMSE rows over u1..u5 and the random split
    synth_split(test_fraction=0.1)   -> (train Ratings, test users, items, ratings) of the 5M set
    memory_rows(bodies)              -> peak RSS rows, one fresh process per body
    compile_table(models, path)      -> cold and warm Numba compile cost on ML-100K u1
    run_sections(doc, sections, funcs) -> the scripts' command line: run the sections asked for

MovieLens 100K is read from ``$MFREC_DATA_DIR`` or ``../shared/data/ml-100k`` and never copied
into the repository (its license forbids redistribution).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import multiprocessing as _mp
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA_DIR = HERE / "data"
RESULTS_DIR = HERE / "results"
SYNTH_SCRIPT = ROOT.parent / "shared" / "bench" / "synth.py"

ML100K_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
_ML_COLUMNS = ["user", "item", "rating", "timestamp"]

__all__ = ["ml100k_dir", "load_ml100k_split", "load_ml100k_random_split", "load_synth", "timer",
           "peak_rss_mb", "run_measured", "write_table", "command_line", "machine_info",
           "rmse", "ml100k_rows", "synth_split", "memory_rows", "compile_table", "run_sections",
           "ML100K_SPLITS", "RESULTS_DIR", "DATA_DIR"]


# ---------------------------------------------------------------------- data
def ml100k_dir():
    """Folder holding MovieLens 100K (``u.data``, ``u1.base``, ...)."""
    env = os.environ.get("MFREC_DATA_DIR")
    candidates = [Path(env) / "ml-100k", Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data" / "ml-100k")
    for c in candidates:
        if (c / "u.data").exists():
            return c
    raise FileNotFoundError("MovieLens 100K not found: set MFREC_DATA_DIR or place it in "
                            f"{ROOT.parent / 'shared' / 'data' / 'ml-100k'}")


def _read_ml(path):
    # pandas is imported here, not at the top: every measured child process imports this module,
    # and pandas (with pyarrow) would add about 75 MB to each one's peak memory
    import pandas as pd
    return pd.read_csv(path, sep="\t", header=None, names=_ML_COLUMNS,
                       dtype={"user": np.int64, "item": np.int64, "rating": np.float32,
                              "timestamp": np.int64})


def load_ml100k_split(name):
    """One canonical MovieLens 100K split.

    Parameters
    ----------
    name : {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}

    Returns
    -------
    train, test : pandas.DataFrame
        Columns user, item (raw MovieLens ids), rating (float32), timestamp.
    """
    if name not in ML100K_SPLITS:
        raise ValueError(f"name must be one of {ML100K_SPLITS}, got {name!r}")
    d = ml100k_dir()
    return _read_ml(d / f"{name}.base"), _read_ml(d / f"{name}.test")


def load_ml100k_random_split(seed=0, test_fraction=0.2):
    """A random split of all of ``u.data`` (not the canonical one), for checking defaults."""
    full = _read_ml(ml100k_dir() / "u.data")
    rng = np.random.default_rng(seed)
    test = rng.random(len(full)) < test_fraction
    return full[~test].reset_index(drop=True), full[test].reset_index(drop=True)


def _synth_path(n, n_users, n_items):
    if (n, n_users, n_items) == (5_000_000, 200_000, 40_000):
        return DATA_DIR / "synth_5m.npz"
    return DATA_DIR / f"synth_{n}_{n_users}_{n_items}.npz"


def load_synth(n=5_000_000, n_users=200_000, n_items=40_000):
    """The synthetic scale set made by ``shared/bench/synth.py N N_USERS N_ITEMS``.

    Generated into ``benchmarks/data/`` (gitignored) when missing; the same arguments always give
    the same data.

    Returns
    -------
    users : ndarray of int32, shape (n,)
    items : ndarray of int32, shape (n,)
    ratings : ndarray of float32, shape (n,)
    """
    path = _synth_path(n, n_users, n_items)
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        subprocess.run([sys.executable, str(SYNTH_SCRIPT), str(n), str(n_users), str(n_items),
                        str(tmp)], check=True)
        os.replace(tmp, path)
    with np.load(path) as z:
        return (z["user"].astype(np.int32, copy=False), z["item"].astype(np.int32, copy=False),
                z["rating"].astype(np.float32, copy=False))


# ---------------------------------------------------------------------- timing and memory
class _Timer:
    seconds = float("nan")


@contextlib.contextmanager
def timer():
    """Wall-clock timer: ``with timer() as t: ...`` then ``t.seconds``."""
    t = _Timer()
    start = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - start


def _child(conn, fn, args, kwargs):
    try:
        result = fn(*args, **kwargs)
        err = None
    except BaseException as exc:  # hand the failure back to the parent, readable
        result, err = None, f"{type(exc).__name__}: {exc}"
    # VmHWM, not getrusage: the rusage figure carries the parent's peak across exec
    conn.send((result, err, _vm_hwm_mb()))
    conn.close()


def peak_rss_mb(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a fresh Python process and report its peak memory.

    The process is spawned (not forked), so the figure is that of a clean interpreter doing only
    this work: imports, data loading and fitting, as a user would see it. ``fn`` must be a
    module-level function and its arguments and result picklable; call this under
    ``if __name__ == "__main__":``.

    Returns
    -------
    result : object
        What ``fn`` returned.
    peak_mb : float
        Peak resident set size of the child process, in MB (2**20 bytes).
    """
    ctx = _mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs))
    proc.start()
    child.close()
    try:
        result, err, peak = parent.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"measured process died (exit code {proc.exitcode})") from None
    proc.join()
    if err is not None:
        raise RuntimeError(f"measured function failed in the child process: {err}")
    return result, peak


def _vm_hwm_mb(pid="self"):
    """Peak resident memory (VmHWM) of a live process's current address space, in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def run_measured(argv, *, env=None, timeout=None):
    """Run a command and measure its wall time and peak RSS.

    The peak comes from GNU ``/usr/bin/time`` (the rusage of a child of a small process). The
    command's own ``wait4`` rusage would be wrong here: Linux carries the high-water mark of the
    process that forked it across ``exec``, so a child of a big benchmark process reports at
    least the parent's size. Without ``/usr/bin/time`` the child's VmHWM is polled instead.

    Parameters
    ----------
    argv : list of str
        The command, e.g. ``[sys.executable, "-c", code]``.
    env : dict, optional
        Environment of the command (default: this one).
    timeout : float, optional
        Seconds after which the command is killed (``returncode`` is then negative).

    Returns
    -------
    dict
        ``returncode``, ``wall_s``, ``peak_rss_mb``, ``stdout``, ``stderr``.
    """
    gnu_time = Path("/usr/bin/time")
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        full = ([str(gnu_time), "-f", "%M", "-o", str(rss_file), *argv] if gnu_time.exists()
                else list(argv))
        with open(Path(tmp) / "out", "w+") as fout, open(Path(tmp) / "err", "w+") as ferr:
            start = time.perf_counter()
            proc = subprocess.Popen(full, stdout=fout, stderr=ferr, text=True, env=env)
            polled = 0.0
            while proc.poll() is None:
                if not gnu_time.exists():
                    polled = max(polled, _vm_hwm_mb(proc.pid) if np.isfinite(
                        _vm_hwm_mb(proc.pid)) else 0.0)
                if timeout is not None and time.perf_counter() - start > timeout:
                    proc.kill()
                    proc.wait()
                    break
                time.sleep(0.02)
            wall = time.perf_counter() - start
            fout.seek(0)
            ferr.seek(0)
            out, err = fout.read(), ferr.read()
        peak = polled
        if gnu_time.exists():
            try:
                peak = int(rss_file.read_text().split()[-1]) / 1024.0
            except (OSError, ValueError, IndexError):
                peak = float("nan")
    return {"returncode": proc.returncode, "wall_s": wall, "peak_rss_mb": peak, "stdout": out,
            "stderr": err}


# ---------------------------------------------------------------------- reporting
def command_line():
    """The command that started this process, relative to the repository root when possible."""
    argv = list(sys.argv)
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(ROOT))
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in argv)


def machine_info():
    """One line describing the machine and library versions."""
    import numba
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {cores} cores available; Python {platform.python_version()}, "
            f"numpy {np.__version__}, numba {numba.__version__}")


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "n/a"
        a = abs(float(v))
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.3f}"
        return f"{v:.4f}"
    return "" if v is None else str(v)


def write_table(path, title, rows, command, notes=None):
    """Write results as a markdown file with the command that produced them.

    Parameters
    ----------
    path : str or Path
        Output file; a bare name goes under ``benchmarks/results/``.
    title : str
    rows : list of dict
        One dict per table row; columns are the union of keys in first-seen order.
    command : str
        The exact command that produced the results (see :func:`command_line`).
    notes : str or list of str, optional
        Paragraphs written under the table.

    Returns
    -------
    Path
        Where the file was written.
    """
    path = Path(path)
    if not path.is_absolute() and path.parent == Path("."):
        path = RESULTS_DIR / path
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    lines = [f"# {title}", "",
             f"Produced by `{command}` on "
             f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", "",
             f"Machine: {machine_info()}. The machine is shared: other work may have been running "
             f"at the same time, so timings are indicative.", ""]
    if rows:
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        lines.append("")
    if notes:
        for n in ([notes] if isinstance(notes, str) else notes):
            lines.extend([n, ""])
    path.write_text("\n".join(lines))
    return path



# ---------------------------------------------------------------------- shared sections
SEED = 0
CV_SPLITS = ("u1", "u2", "u3", "u4", "u5")


def rmse(y, p):
    """Root mean squared error of predictions ``p`` against ``y``, computed in float64."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.sqrt(np.mean((y - np.asarray(p, dtype=np.float64)) ** 2)))


def ml100k_rows(models, score):
    """Score every model on u1..u5 and the random split: one row of test RMSE per model.

    ``models`` maps a name to whatever ``score(name, make, train, test)`` takes as ``make``;
    ``score`` fits it on ``train`` and returns ``(test RMSE, fit seconds)``.
    """
    splits = {s: load_ml100k_split(s) for s in CV_SPLITS}
    splits["random"] = load_ml100k_random_split(seed=SEED)
    rows = []
    for name, make in models.items():
        row = {"model": name}
        times = []
        for s, (train, test) in splits.items():
            row[s], seconds = score(name, make, train, test)
            if s in CV_SPLITS:
                times.append(seconds)
            print(name, s, f"{row[s]:.4f}", f"{seconds:.2f}s", flush=True)
        row["mean u1..u5"] = float(np.mean([row[s] for s in CV_SPLITS]))
        row["random split"] = row.pop("random")
        row["fit s (mean u1..u5)"] = float(np.mean(times))
        rows.append(row)
    return rows


def synth_split(test_fraction=0.1):
    """Random 90/10 split of the synthetic 5M set: (train Ratings, test users, items, ratings)."""
    import mfrec
    users, items, ratings = load_synth()
    test = np.random.default_rng(SEED).random(users.size) < test_fraction
    train = mfrec.Ratings.from_indices(users[~test], items[~test], ratings[~test],
                                       shape=(int(users.max()) + 1, int(items.max()) + 1))
    return train, users[test], items[test], ratings[test]


_MEM_CODE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {bench!r})
    from common import load_synth
    users, items, ratings = load_synth()
    t = time.perf_counter()
    {body}
    print("fit_s", time.perf_counter() - t)
""")

# the process bodies every memory table shares (the last row of a table is its anchor)
MEM_BASE_BODY = "import mfrec"
MEM_SURPRISE_SVD_BODY = (
    "import pandas as pd; from surprise import SVD, Dataset, Reader; "
    "f = pd.DataFrame({'user': users, 'item': items, 'rating': ratings}); "
    "ts = Dataset.load_from_df(f, Reader(rating_scale=(1, 5))).build_full_trainset(); "
    "del f; SVD(n_factors=64, n_epochs=1).fit(ts)")
MEM_NOTE = ("Each row is a separate Python process: imports, loading the 5M arrays, building the "
            "model's input (mfrec Ratings / Surprise trainset) and fitting. ")


def memory_rows(bodies):
    """Run each body (after loading the 5M set) in a fresh process; the last one is the anchor.

    Returns one row per body: peak RSS, seconds of the body's work and, but for the anchor's,
    the ratio of its peak to the anchor's (column "vs Surprise").
    """
    rows = []
    for name, body in bodies.items():
        res = run_measured([sys.executable, "-c", _MEM_CODE.format(bench=str(HERE), body=body)])
        if res["returncode"] != 0:
            raise RuntimeError(f"{name} failed:\n{res['stderr'][-2000:]}")
        fit = [ln for ln in res["stdout"].splitlines() if ln.startswith("fit_s")]
        rows.append({"process": name, "peak RSS MB": res["peak_rss_mb"],
                     "work s": float(fit[0].split()[1]) if fit else float("nan")})
        print(rows[-1], flush=True)
    anchor = rows[-1]["peak RSS MB"]
    for r in rows[:-1]:
        r["vs Surprise"] = f"{r['peak RSS MB'] / anchor:.2f}x"
    return rows


_COMPILE_CODE = textwrap.dedent("""
    import sys, time
    t0 = time.perf_counter()
    import mfrec
    sys.path.insert(0, {bench!r})
    from common import load_ml100k_split
    train, test = load_ml100k_split("u1")
    R = mfrec.Ratings.from_frame(train[["user", "item", "rating"]])
    t1 = time.perf_counter()
    mfrec.{model}.fit(R)
    t2 = time.perf_counter()
    mfrec.{model}.fit(R)
    t3 = time.perf_counter()
    print("times", t1 - t0, t2 - t1, t3 - t2)
""")


def compile_table(models, path):
    """Cold (empty NUMBA_CACHE_DIR) and warm (second process) fits of each model on u1."""
    rows = []
    for name, expr in models.items():
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for state in ("cold (empty cache)", "warm (second process)"):
                res = run_measured([sys.executable, "-c", _COMPILE_CODE.format(
                    bench=str(HERE), model=expr)], env=env)
                if res["returncode"] != 0:
                    raise RuntimeError(f"{name} failed:\n{res['stderr'][-2000:]}")
                line = [ln for ln in res["stdout"].splitlines() if ln.startswith("times")][0]
                imp, first, second = (float(x) for x in line.split()[1:])
                rows.append({"model": name, "process": state, "import + data s": imp,
                             "first fit s": first, "second fit s (same process)": second})
                print(rows[-1], flush=True)
    write_table(path, "Numba compile cost: ML-100K u1 fit, defaults", rows, command_line(), notes=[
        "Each pair of rows shares a fresh NUMBA_CACHE_DIR: the cold process compiles and writes "
        "the kernels, the warm one loads them. The first fit of a process minus its second fit "
        "is the compile (cold) or cache-load (warm) cost."])


def run_sections(doc, sections, funcs, argv=None):
    """Command line of a section-based script: run the sections named (default: all) in order.

    ``doc`` is the script's docstring (its first line describes the script), ``funcs`` maps each
    section to a function taking the parsed arguments.
    """
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("sections", nargs="*", help=f"any of {', '.join(sections)} (default: all)")
    args = ap.parse_args(argv)
    bad = [s for s in args.sections if s not in sections]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {sections}")
    for s in args.sections or sections:
        print(f"== {s}", flush=True)
        funcs[s](args)
