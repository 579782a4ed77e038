"""First contact: command-line start-up time and each model's first-use Numba compile time.

Sections (default: all):

- ``cli``: wall time of whole processes, run round-robin so load affects all alike: ``python -c
  pass`` (the floor: an interpreter that does nothing), ``mfrec --help``, and a warm ``mfrec
  recommend MODEL --user 1`` and ``mfrec similar MODEL --item 50`` on a BiasedMF fitted to
  ML-100K u1. With ``--before REV``, the same commands of git revision REV (exported read-only
  to a temporary folder with ``git archive``, its own model file and kernel cache) are run in the
  same rounds. Writes ``results/cli_startup.md``.
- ``compile``: every model's first fit on ML-100K u1 in a process with an empty
  ``NUMBA_CACHE_DIR`` (compiling every kernel it uses), then in a second process that loads
  them from that cache. Writes ``results/compile.md``.

Run it on a quiet machine: ``python benchmarks/bench_startup.py [cli] [compile] [--before REV]``.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (HERE, command_line, compile_table, ml100k_dir,  # noqa: E402
                    write_table)

ROOT = HERE.parent

#: every model, as fitted by the compile section (defaults, fixed seed)
MODELS = {
    "SVD": "SVD(random_state=0)",
    "NMF": "NMF(random_state=0)",
    "GradientDescent": "GradientDescent(random_state=0)",
    "Baseline": "Baseline(random_state=0)",
    "BiasedMF": "BiasedMF(random_state=0)",
    "SVDpp": "SVDpp(random_state=0)",
    "ALS": "ALS(random_state=0)",
    "BayesianMF": "BayesianMF(random_state=0)",
    "ImplicitALS": "ImplicitALS(random_state=0)",
    "BPR": "BPR(random_state=0)",
}


def _export(rev, folder):
    """The source tree of git revision ``rev`` under ``folder`` (read-only on the repository)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def _time(argv, env):
    """(wall s, CPU s) of one process; CPU time (user + system) is what other work on a shared
    machine distorts least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"{argv} failed: {res.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def cli(args):
    data = ml100k_dir()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        versions = {"now": {**os.environ, "PYTHONPATH": str(ROOT / "src")}}
        if args.before:
            src = _export(args.before, tmp)
            versions[f"before ({args.before})"] = {**os.environ, "PYTHONPATH": str(src)}
        commands = {"python -c pass": ([py, "-c", "pass"], dict(os.environ))}
        for label, env in versions.items():
            model = tmp / f"{label.split()[0]}.mfrec"
            cli_ = [py, "-m", "mfrec.cli"]
            subprocess.run(cli_ + ["fit", str(data / "u1.base"), "-m", "biased-mf", "--seed",
                                   "0", "-o", str(model), "-q"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            commands[f"mfrec --help [{label}]"] = (cli_ + ["--help"], env)
            commands[f"mfrec recommend MODEL --user 1 [{label}]"] = (
                cli_ + ["recommend", str(model), "--user", "1"], env)
            commands[f"mfrec similar MODEL --item 50 [{label}]"] = (
                cli_ + ["similar", str(model), "--item", "50"], env)
        times = {name: [] for name in commands}
        for rnd in range(args.rounds + 1):  # round 0 warms caches and is not counted
            for name, (argv, env) in commands.items():
                t = _time(argv, env)
                if rnd:
                    times[name].append(t)
    floor = statistics.median(t[0] for t in times["python -c pass"])
    rows = [{"command": name, "median wall s": statistics.median(t[0] for t in ts),
             "min wall s": min(t[0] for t in ts),
             "median CPU s": statistics.median(t[1] for t in ts),
             "median wall / python -c pass": statistics.median(t[0] for t in ts) / floor}
            for name, ts in times.items()]
    for r in rows:
        print(r, flush=True)
    write_table("cli_startup.md", "Command-line start-up: whole processes, warm caches", rows,
                command_line(), notes=[
                    f"{args.rounds} rounds, each running every command once in turn (so load "
                    "from other work falls on all of them alike); one uncounted round first warms "
                    "the OS file cache and the Numba kernel cache. The model is BiasedMF "
                    "(defaults, seed 0) fitted on ML-100K u1.base by the same version. Commands "
                    "run as `python -m mfrec.cli` with PYTHONPATH set to each version's src/. "
                    "CPU s is the process's user + system time (all its threads), the figure "
                    "that load from other work changes least.",
                    "Goals (issue 13, item 14): `mfrec --help` <= 0.2 s, warm "
                    "`mfrec recommend MODEL --user 1` <= 0.5 s on a quiet machine."])


def compile_(args):
    compile_table(MODELS, "compile.md")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sections", nargs="*", default=["cli", "compile"],
                    help="cli and/or compile (default: both)")
    ap.add_argument("--before", metavar="REV", help="also time the commands of git revision "
                                                    "REV, side by side (cli section)")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds (cli; default: 15)")
    args = ap.parse_args(argv)
    for s in args.sections:
        if s not in ("cli", "compile"):
            ap.error(f"unknown section {s!r}; choose from cli, compile")
        print(f"== {s}", flush=True)
        {"cli": cli, "compile": compile_}[s](args)


if __name__ == "__main__":
    main()
