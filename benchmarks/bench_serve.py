#!/usr/bin/env python3
"""Load test of ``mfrec serve``: requests/s and latency percentiles from a second process.

usage: flock /tmp/mfrec-bench.lock python benchmarks/bench_serve.py [load] [fuzz] [screenshots]
       [--duration 10] [--connections 8] [--fuzz-examples 100] [--before REV]

``load``: for the ML-100K model and a synthetic 5M model (40k items), the server runs in its own
process (``mfrec serve``, access log on, written to a file) on 127.0.0.1, and ``wrk`` (Debian's
package) drives it from another process for ``--duration`` seconds over ``--connections``
keep-alive connections: ``GET /api/health`` (the HTTP stack with no model work: the ceiling the
recommend figures are measured against), then single-user ``POST /api/recommend`` with n=10 for
users drawn at random, then the same while the model file is reloaded every 2 s through the admin
endpoint. Goal: >= 1,000 requests/s with p99 <= 20 ms, with and without reloads. The server's
``/metrics`` give the mean number of requests scored together (the service batches concurrent
single-user requests). ``--before REV`` also measures, in the same run, a server and an
in-process recommend with mfrec as of the git revision ``REV`` (its ``src`` extracted under
``benchmarks/_work/serve``), in rows marked "before".

``fuzz``: schemathesis over the OpenAPI schema of the ML-100K server, ``--fuzz-examples`` per
operation, every check; the count of failures goes in the table.

``screenshots``: the explorer page (ML-100K model, ``u.item`` labels) in headless Chromium at
desktop and phone width, saved as ``docs/serve-desktop.png`` and ``docs/serve-phone.png``.

Models and data are made under ``benchmarks/_work/serve`` (git-ignored) on first use.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
import threading
import time

import numpy as np

from common import ROOT, command_line, load_synth, ml100k_dir, write_table

WORK = ROOT / "benchmarks" / "_work" / "serve"
DOCS = ROOT / "docs"


# ---------------------------------------------------------------------- models
def ml100k_model():
    path = WORK / "ml100k.mfrec"
    if not path.exists():
        import mfrec
        ratings = mfrec.datasets.load_movielens("100k", path=ml100k_dir())
        mfrec.BiasedMF(random_state=0).fit(ratings).save(path)
    return path


def synth_model():
    path = WORK / "synth5m.mfrec"
    if not path.exists():
        import mfrec
        users, items, ratings = load_synth()  # 5M ratings, 200k users, 40k items
        data = mfrec.Ratings.from_indices(users, items, ratings)
        mfrec.BiasedMF(n_epochs=20, early_stopping=None, random_state=0).fit(data).save(path)
    return path


# ---------------------------------------------------------------------- server
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(src):
    """The environment of a child process importing mfrec from ``src`` (None: this tree)."""
    if src is None:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


class Server:
    """``mfrec serve`` in a child process (the same code path as the command line)."""

    def __init__(self, model, labels=None, log=None, src=None):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = ("import sys; from mfrec.serve import run; "
                "run(sys.argv[1], port=int(sys.argv[2]), labels=sys.argv[3] or None)")
        self.log = open(log or os.devnull, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(model), str(self.port),
                                      str(labels or "")], stderr=self.log, env=_env(src))
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)

    def batches(self):
        """(requests, batches) scored together so far, from /metrics (None if not reported:
        a server that does not batch)."""
        import httpx
        text = httpx.get(self.url + "/metrics", timeout=10).text
        total = re.search(r"^mfrec_recommend_batch_users_sum (\S+)$", text, re.M)
        count = re.search(r"^mfrec_recommend_batch_users_count (\S+)$", text, re.M)
        if not (total and count):
            return None
        return float(total.group(1)), float(count.group(1))

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


# ---------------------------------------------------------------------- wrk
def _ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url, script, duration, connections):
    """Run wrk once; requests/s and latency percentiles (ms) from its report."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "req/s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50 ms": _ms(lat["50"]), "p90 ms": _ms(lat["90"]), "p99 ms": _ms(lat["99"]),
            "max ms": _ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)),
            "non-2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket errors": errors.group(1).strip() if errors else "none"}


def recommend_script(users, path):
    ids = ", ".join(json.dumps(u) for u in users)
    path.write_text(f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local users = {{{ids}}}
request = function()
  local u = users[math.random(#users)]
  return wrk.format(nil, "/api/recommend", nil, '{{"user": ' .. u .. ', "n": 10}}')
end
""")
    return path


_IN_PROCESS = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
import mfrec
threadpool_limits(1, user_api="blas")  # as the server runs
model = mfrec.load(sys.argv[1])
model.set_params(num_threads=1)
users = json.loads(sys.argv[2])
model.recommend(users[:1], n=10)  # first call: imports, kept arrays
times = []
for u in users:
    t = time.perf_counter()
    model.recommend([u], n=10)
    times.append(time.perf_counter() - t)
print(float(np.median(times) * 1e6))
"""


def in_process_us(model_path, users, src=None):
    """Median wall time of one ``model.recommend([u], n=10)`` call (µs), in a child process
    importing mfrec from ``src`` (None: this tree), BLAS on one thread as in the server."""
    out = subprocess.run([sys.executable, "-c", _IN_PROCESS, str(model_path),
                          json.dumps(users[:2000])], capture_output=True, text=True, check=True,
                         env=_env(src))
    return float(out.stdout.split()[-1])


def load_rows(args):
    rows = []
    versions = [("", None)] + ([("before", before_tree(args.before))] if args.before else [])
    for name, make in (("ML-100K", ml100k_model), ("synth 5M", synth_model)):
        path = make()
        import mfrec
        model = mfrec.load(path)
        rng = np.random.default_rng(0)
        users = model.user_vocab_.ids[rng.choice(len(model.user_vocab_),
                                                 min(1000, len(model.user_vocab_)),
                                                 replace=False)].tolist()
        size = f"{model.user_factors_.shape[0]:,} users, {model.item_factors_.shape[0]:,} items"
        del model
        script = recommend_script(users, WORK / f"recommend_{name.replace(' ', '')}.lua")
        for version, src in versions:
            rows += _server_rows(args, f"{name} ({size})", version, src, path, script, users)
    return rows


def _server_rows(args, model_name, version, src, path, script, users):
    """Health, recommend and recommend-with-reloads rows of one server (mfrec from ``src``)."""
    rows = []
    served = WORK / f"served_{path.name}"
    shutil.copy(path, served)
    tag = f"_{version}" if version else ""
    srv = Server(served, log=WORK / f"access_{served.stem}{tag}.log", src=src)
    try:
        wrk(srv.url + "/api/recommend", script, 2, args.connections)  # warm-up
        base = {"model": model_name, "code": version or "this tree"}
        rows.append({**base, "request": "GET /api/health (HTTP stack, no model work)",
                     **wrk(srv.url + "/api/health", None, args.duration, args.connections)})
        batches = srv.batches()
        rows.append({**base, "request": "POST /api/recommend n=10",
                     **wrk(srv.url + "/api/recommend", script, args.duration, args.connections)})
        rows[-1]["requests per batch"], batches = _per_batch(batches, srv.batches())
        reloads, stop = [], threading.Event()

        def reloader():
            import httpx
            while not stop.wait(2.0):
                t = time.perf_counter()
                r = httpx.post(srv.url + "/api/admin/reload", timeout=60)
                reloads.append((r.status_code, time.perf_counter() - t))
        th = threading.Thread(target=reloader)
        th.start()
        row = wrk(srv.url + "/api/recommend", script, args.duration, args.connections)
        stop.set()
        th.join()
        ok = sum(1 for s, _ in reloads if s == 200)
        rows.append({**base, "request": f"POST /api/recommend n=10, {ok} reloads (every 2 s; "
                                        f"{max(t for _, t in reloads):.2f} s each at most)",
                     **row, "requests per batch": _per_batch(batches, srv.batches())[0]})
    finally:
        srv.close()
    rows[-2]["in-process recommend µs"] = in_process_us(path, users, src)
    return rows


def before_tree(rev):
    """mfrec's ``src`` as of git revision ``rev``, extracted once under WORK; its path."""
    commit = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    folder = WORK / f"src-{commit}"
    if not (folder / "src" / "mfrec" / "__init__.py").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def _per_batch(before, after):
    """(mean requests per batch between two ``Server.batches`` readings, the later reading)."""
    if before is None or after is None or after[1] == before[1]:
        return None, after
    return (after[0] - before[0]) / (after[1] - before[1]), after


# ---------------------------------------------------------------------- fuzz
def fuzz_rows(args):
    srv = Server(ml100k_model())
    try:
        t = time.perf_counter()
        # schemathesis's command, beside this interpreter when its environment is not on PATH
        st = Path(sys.executable).with_name("st")
        r = subprocess.run([str(st) if st.exists() else "st", "--no-color", "run", srv.url + "/openapi.json", "--checks",
                            "all", "--max-examples", str(args.fuzz_examples), "--seed", "0"],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t
    finally:
        srv.close()
    out = r.stdout + r.stderr
    (WORK / "schemathesis.txt").write_text(out)
    summary = [line.strip() for line in out.splitlines()
               if re.search(r"\d+ (passed|failed|generated)|No issues found|Test cases", line)]
    return [{"model": "ML-100K", "request": f"schemathesis, {args.fuzz_examples} examples per "
                                             f"operation, all checks",
             "exit code": r.returncode, "wall s": wall, "summary": " / ".join(summary[-4:])}]


# ---------------------------------------------------------------------- screenshots
def screenshots():
    from playwright.sync_api import sync_playwright
    labels = ml100k_dir() / "u.item"
    srv = Server(ml100k_model(), labels=labels)
    DOCS.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(srv.url + "/#user/1")
            page.wait_for_selector("#user-recs li a")
            page.screenshot(path=str(DOCS / "serve-desktop.png"))
            page = browser.new_page(viewport={"width": 390, "height": 780},
                                    device_scale_factor=1)
            page.goto(srv.url + "/#new")
            page.wait_for_selector("#search-results li a")
            page.fill("#search", "star wars")
            page.locator("[aria-label='rate Star Wars (1977) 5']").click()
            page.fill("#search", "toy story")
            page.locator("[aria-label='rate Toy Story (1995) 4']").click()
            page.fill("#search", "star wars")
            page.wait_for_timeout(800)  # the search is debounced; recommendations follow
            page.wait_for_selector("#new-recs li a")
            page.screenshot(path=str(DOCS / "serve-phone.png"), full_page=True)
            browser.close()
    finally:
        srv.close()
    return [DOCS / "serve-desktop.png", DOCS / "serve-phone.png"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sections", nargs="*", default=["load", "fuzz"],
                    choices=["load", "fuzz", "screenshots"])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--fuzz-examples", type=int, default=100)
    ap.add_argument("--before", default=None, metavar="REV",
                    help="also measure mfrec as of this git revision (rows marked 'before')")
    args = ap.parse_args()
    if shutil.which("wrk") is None and "load" in args.sections:
        sys.exit("wrk is needed: apt-get install wrk")
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    if "load" in args.sections:
        rows += load_rows(args)
    if "fuzz" in args.sections:
        rows += fuzz_rows(args)
    if "screenshots" in args.sections:
        for p in screenshots():
            print(p)
    if rows:
        load = [r for r in rows if "req/s" in r]
        notes = [
            f"wrk 4.1 (Debian), 1 thread, {args.connections} keep-alive connections, "
            f"{args.duration} s per row, against 127.0.0.1; the server is one uvicorn process "
            f"(one worker: on 2 cores the load generator needs the other core), JSON access log "
            f"on (to a file). Users drawn at random from 1,000 known users; seen items excluded.",
            "Goal: >= 1,000 requests/s with p99 <= 20 ms for single-user recommend, also while "
            "the model is reloaded. The health row is the anchor: the same HTTP stack with no "
            "model work (vs health = recommend req/s / health req/s of the same server); "
            "'in-process recommend µs' is the median of model.recommend([u], n=10) in a child "
            "process, BLAS on one thread as in the server, without HTTP.",
            "'requests per batch': mean number of concurrent single-user requests the server "
            "answered with one model call during that row (from its /metrics; empty for a "
            "server that does not batch).",
            "The synthetic model: BiasedMF (100 factors, 20 epochs) on shared/bench/synth.py "
            "5000000 200000 40000.",
        ]
        if args.before:
            commit = before_tree(args.before).parent.name.removeprefix("src-")
            notes.append(f"'code': 'this tree' is the working tree; 'before' is mfrec as of "
                         f"commit {commit} (measured in the same run, one server after "
                         f"the other).")
        for r in load:
            if r["request"].startswith("POST"):
                health = next(h["req/s"] for h in load if h["model"] == r["model"]
                              and h["code"] == r["code"] and h["request"].startswith("GET"))
                r["vs health"] = r["req/s"] / health
                r["goal met"] = "yes" if r["req/s"] >= 1000 and r["p99 ms"] <= 20 else "no"
        if not args.before:  # one version: no column to tell versions apart
            for r in load:
                del r["code"]
        write_table("serve.md", "mfrec serve: load test and schema fuzzing", rows,
                    command_line(), notes)


if __name__ == "__main__":
    main()
