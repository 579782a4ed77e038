"""A fuzzer over the model-file loader (issue 13): valid model files, mutated at every level —
bytes anywhere, zip directory and local headers, the JSON header's fields, ``.npy`` headers,
array contents — must either load into a model that predicts and recommends finite scores, or
raise :class:`~mfrec.persist.ModelFileError`. Nothing else: no other exception, no crash, no
hang, no allocation beyond a cap.

The fuzz loop runs in a child process (a crash shows as a failed test, not a dead runner) whose
address space may not grow by more than 1.5 GB once mfrec is imported. In the suite it runs for
``MFREC_FUZZ_SECONDS`` (default 15) seconds; for a long offline run::

    python tests/test_fuzz_persist.py --seconds 600
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis") if __name__ != "__main__" else None

CAP_BYTES = 1536 << 20


def test_fuzz_model_loader(tmp_path):
    # the child reports how many files it tried and what became of them; any other outcome
    # fails inside it with hypothesis's minimal example, and a crash or hang fails here
    seconds = float(os.environ.get("MFREC_FUZZ_SECONDS", "15"))
    r = subprocess.run([sys.executable, __file__, "--seconds", str(seconds),
                        "--work", str(tmp_path)],
                       capture_output=True, text=True, timeout=seconds + 240)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-6000:])
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["examples"] >= 50, stats
    # the mutations reach both outcomes: files refused and mutated files that still load
    assert stats["refused"] > 0 and stats["loaded"] > 0, stats


def _paths(node, prefix=()):
    """Every position in a JSON tree, as a key path."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for k, v in enumerate(node):
            yield from _paths(v, prefix + (k,))


def test_every_header_field_with_every_json_type(tmp_path):
    # the systematic half of the fuzzer: each position of each base header, replaced by a value
    # of each JSON type (or removed), gives a model that serves finite scores or ModelFileError
    stats = {"loaded": 0, "refused": 0}
    replacements = [None, True, -1, 2**63, float("nan"), "x", [], [1, 2], {},
                    {"__tuple__": 1}, {"__dict__": []}]
    removed = object()
    for raw in _base_files(tmp_path)[:1]:  # (the others share its header's shape)
        members = _members(raw)
        header = json.loads(members[0][1])
        for where in list(_paths(header))[1:]:
            for value in replacements + [removed]:
                h = json.loads(members[0][1])
                parent = h
                for key in where[:-1]:
                    parent = parent[key]
                if value is removed:
                    if not isinstance(parent, dict):
                        continue
                    del parent[where[-1]]
                else:
                    parent[where[-1]] = value
                edited = [(members[0][0], json.dumps(h).encode())] + members[1:]
                _check_outcome(_zip(edited), tmp_path / "case.mfrec", stats)
    assert stats["refused"] > 300 and stats["loaded"] > 50, stats


# ---------------------------------------------------------------------- the child
def _base_files(work):
    """A few valid model files: registered classes, str/int/float ids, float32/float64."""
    from mfrec import ALS, BPR, SVD, Ratings

    rng = np.random.default_rng(0)
    files = []
    for k, (cls, ids, dtype) in enumerate([
            (ALS, lambda n: np.array([f"u{i}" for i in range(n)], dtype=object), np.float32),
            (BPR, lambda n: np.arange(n) * 3 + 1, np.float32),
            (SVD, lambda n: np.arange(n) + 0.5, np.float64)]):
        n_users, n_items, f = 6, 5, 2
        nnz = 14
        pairs = rng.choice(n_users * n_items, nnz, replace=False)
        r = Ratings.from_ids(ids(n_users)[pairs // n_items], ids(n_items)[pairs % n_items],
                             rng.integers(1, 6, nnz).astype(float))
        m = cls()
        m._set_data_state(r)
        m._set_factor_state(rng.standard_normal((r.n_users, f)).astype(dtype),
                            rng.standard_normal((r.n_items, f)).astype(dtype),
                            rng.standard_normal(r.n_users), rng.standard_normal(r.n_items), 3.0)
        files.append(m.save(Path(work) / f"base{k}.mfrec").read_bytes())
    return files


def _members(raw):
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            z.writestr(name, data)
    return buf.getvalue()


def _npy(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _strategies(bases):
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-2**70, 2**70)
        | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
        | st.sampled_from(["csr", "csc", "array", "vocabulary", "sparse", "json", "scalar",
                           "native", "object-str", "attr.user_factors_", "BPR", "mfrec-model"]),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
            st.sampled_from(["__tuple__", "__dict__", "kind", "key", "shape", "format", "a"]),
            inner, max_size=3),
        max_leaves=8)
    descrs = st.sampled_from(["<f4", "<f8", ">f4", "<f2", "<i4", "<i8", ">i8", "<u4", "|b1",
                              "<c8", "<U3", "|S2", "|O", "<M8[s]", "|V8", "<U0",
                              [("a", "<f4")], ("<f4", (2,))])
    dims = st.sampled_from([0, 1, 2, 3, 5, 6, 7, 2**31, 2**40, -1])
    values = st.sampled_from([0, 1, -1, 5, 6, 2**31 - 1, -2**31, 2**40, np.nan, np.inf,
                              -np.inf, 1e30, 3e38, 1e300, 1e-45])

    @st.composite
    def mutated(draw):
        raw = draw(st.sampled_from(bases))
        how = draw(st.sampled_from(["bytes", "zip", "header", "npy", "array", "drop"]))
        if how == "bytes":  # anywhere: flips, overwrites, a cut, an insertion
            data = bytearray(raw)
            for _ in range(draw(st.integers(1, 6))):
                pos = draw(st.integers(0, len(data) - 1))
                data[pos] = draw(st.integers(0, 255))
            if draw(st.booleans()):
                cut = draw(st.integers(0, len(data)))
                data = data[:cut] + draw(st.binary(max_size=16)) + data[cut:]
            return bytes(data)
        if how == "zip":  # fields of the directory and the local headers
            data = bytearray(raw)
            cd = raw.rfind(b"PK\x01\x02")
            eocd = raw.rfind(b"PK\x05\x06")
            locals_ = [i for i in range(len(raw)) if raw.startswith(b"PK\x03\x04", i)]
            starts = [p for p in (cd, eocd) if p >= 0] + locals_
            for _ in range(draw(st.integers(1, 4))):
                base = draw(st.sampled_from(starts))
                pos = min(len(data) - 1, base + draw(st.integers(0, 45)))
                data[pos] = draw(st.integers(0, 255))
            return bytes(data)
        members = _members(raw)
        k = draw(st.integers(0, len(members) - 1))
        name, content = members[k]
        if how == "drop":
            members.pop(k)
            return _zip(members)
        if how == "header":
            header = json.loads(members[0][1])
            node = header
            keys = []
            while isinstance(node, (dict, list)) and node and draw(st.booleans()):
                key = draw(st.sampled_from(sorted(node) if isinstance(node, dict)
                                           else list(range(len(node)))))
                keys.append(key)
                node = node[key]
            if not keys:
                keys = [draw(st.sampled_from(sorted(header)))]
            parent = header
            for key in keys[:-1]:
                parent = parent[key]
            if isinstance(parent, dict) and draw(st.integers(0, 4)) == 0:
                parent.pop(keys[-1], None)
            else:
                parent[keys[-1]] = draw(json_values)
            members[0] = (members[0][0], json.dumps(header).encode())
            return _zip(members)
        if not name.endswith(".npy"):
            return _zip(members)
        if how == "npy":  # a new .npy header over the old data (or part of it)
            arr = np.lib.format.read_array(io.BytesIO(content))
            d = {"descr": draw(descrs), "fortran_order": draw(st.booleans()),
                 "shape": tuple(draw(st.lists(dims, max_size=3)))}
            head = ("{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (
                d["descr"], d["fortran_order"], d["shape"])).encode()
            head += b" " * ((-len(head) - 11) % 64) + b"\n"
            body = content[len(content) - arr.nbytes:]
            body = body[:draw(st.integers(0, len(body) + 8))] + bytes(8)
            members[k] = (name, b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head
                          + body)
            return _zip(members)
        # "array": same-shape or new arrays with extreme values
        arr = np.lib.format.read_array(io.BytesIO(content))
        if arr.dtype.kind in "iuf" and arr.size:
            arr = arr.copy()
            for _ in range(draw(st.integers(1, 3))):
                v = draw(values)
                try:
                    arr.flat[draw(st.integers(0, arr.size - 1))] = v
                except (OverflowError, ValueError):
                    pass
        else:
            shape = tuple(draw(st.lists(st.integers(0, 7), max_size=2)))
            arr = np.full(shape, draw(values))
        members[k] = (name, _npy(arr))
        return _zip(members)

    return mutated()


def _check_outcome(raw, path, stats):
    import mfrec
    from mfrec.persist import ModelFileError

    path.write_bytes(raw)
    try:
        m = mfrec.load(path)
    except ModelFileError:
        stats["refused"] += 1
        return
    stats["loaded"] += 1
    users, items = m.user_vocab_.ids, m.item_vocab_.ids
    if len(users) and len(items):
        p = m.predict(users[:4], items[:4])
        assert np.isfinite(p).all(), p
        ids, scores = m.recommend(users[:3], n=4)
        assert not np.isnan(scores).any() and (scores < np.inf).all(), scores
        # -inf only as padding: where fewer candidates than n are left
        pad = ~np.isfinite(scores)
        seen = np.diff(m.user_items_.indptr)[m.user_vocab_.lookup(users[:3])]
        assert (pad.sum(axis=1) <= max(4 - len(items), 0) + seen).all(), scores


def fuzz(seconds, work):
    import resource

    from hypothesis import HealthCheck, Phase, given, settings

    import mfrec

    work = Path(work)
    bases = _base_files(work)
    for raw in bases:  # warm up: compile the kernels before the address space is capped
        (work / "w.mfrec").write_bytes(raw)
        m = mfrec.load(work / "w.mfrec")
        m.recommend(m.user_vocab_.ids[:2], n=3)
    import llvmlite.binding
    llvmlite.binding.ffi.lib  # noqa: B018 - map LLVM now
    vm = next(int(x.split()[1]) for x in open("/proc/self/status")
              if x.startswith("VmSize:")) << 10
    resource.setrlimit(resource.RLIMIT_AS, (vm + CAP_BYTES, vm + CAP_BYTES))

    stats = {"examples": 0, "loaded": 0, "refused": 0, "rounds": 0}
    strategy = _strategies(bases)
    target = work / "case.mfrec"

    @settings(max_examples=200, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink])
    @given(strategy)
    def one(raw):
        stats["examples"] += 1
        _check_outcome(raw, target, stats)

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        one()
        stats["rounds"] += 1
    stats["seconds"] = round(seconds, 1)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="fuzz mfrec.load for a while")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    if args.work:
        fuzz(args.seconds, args.work)
    else:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            fuzz(args.seconds, tmp)
