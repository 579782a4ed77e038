"""Every ```python and ```bash block of README.md runs as written, each in a fresh temporary
folder: a Python block as a script of its own (one namespace per block), a bash block with
``bash -e``; the installed ``mfrec`` comes first on PATH and ``$MFREC_DATA_DIR`` names the data
folder (a block that reads MovieLens is skipped, naming the paths tried, when it is absent, and
fails under ``MFREC_REQUIRE_DATA=1``).

The fresh-machine commands (``python3 -m venv .venv && . .venv/bin/activate && pip install ...
&& ...``) run without their venv and ``pip install`` steps: this environment is already the
installed checkout, and CI (``.ci/run``) performs exactly those steps in a new virtual
environment before running this suite. ``python -m pytest`` is not run from inside itself.

An HTML comment on the line before a block's fence (invisible on the rendered page) adjusts how
it is run:

* ``<!-- readme-test: requires EXTRA[,EXTRA] -->``: skipped, naming ``pip install
  'mfrec[EXTRA]'``, when an extra's packages (as pyproject.toml lists them) are not installed;
* ``<!-- readme-test: timeout SECONDS -->``: a longer limit than the default 300 s;
* ``<!-- readme-test: skip REASON -->``: never run (for a command that does not end, such as a
  server in the foreground); the reason is required.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, data_missing, find_ml100k

README = ROOT / "README.md"
DEFAULT_TIMEOUT = 300
_DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(requires|timeout|skip)\b\s*(.*?)\s*-->")
_NEEDS_DATA = re.compile(r"load_movielens|MFREC_DATA_DIR|ml-100k")
_INSTALL_STEP = re.compile(r"^(python3? -m venv\b|\. \S*/bin/activate$|(python3? -m )?pip install\b)")


def readme_blocks(text):
    """[(line number, language, code, {directive: argument})] of the fenced python/bash blocks."""
    out = []
    lines = text.splitlines()
    k = 0
    while k < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[k])
        if not m:
            k += 1
            continue
        start, lang = k, m.group(1)
        end = next((j for j in range(k + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"README.md line {k + 1}: a code block is never closed"
        directives = {}
        j = start - 1
        while j >= 0 and (d := _DIRECTIVE.search(lines[j])):
            directives[d.group(1)] = d.group(2)
            j -= 1
        if lang in ("python", "bash"):
            out.append((start + 1, lang, "\n".join(lines[start + 1:end]) + "\n", directives))
        k = end + 1
    return out


def without_install_steps(code):
    """A bash block with its venv/pip steps and any run of the test suite removed."""
    kept = []
    for line in code.splitlines():
        steps = [s.strip() for s in line.split("&&")]
        if len(steps) > 1 or _INSTALL_STEP.match(steps[0]):
            steps = [s for s in steps if not _INSTALL_STEP.match(s)
                     and not re.match(r"^python3? -m pytest\b", s)]
            line = " && ".join(steps)
        kept.append(line)
    return "\n".join(kept) + "\n"


def _extras():
    """{extra: [distribution names]} from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"].get("optional-dependencies", {})
    return {extra: [re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0] for req in reqs]
            for extra, reqs in deps.items()}


def _missing_extras(names):
    from importlib.metadata import PackageNotFoundError, version
    extras = _extras()
    missing = []
    for name in names:
        assert name in extras, f"readme-test requires {name!r}: no such extra in pyproject.toml"
        for dist in extras[name]:
            try:
                version(dist)
            except PackageNotFoundError:
                missing.append(name)
                break
    return missing


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


@pytest.mark.parametrize("line, lang, code, directives", BLOCKS,
                         ids=[f"line{b[0]}-{b[1]}" for b in BLOCKS])
def test_readme_block_runs(line, lang, code, directives, tmp_path):
    if "skip" in directives:
        assert directives["skip"], f"README.md line {line}: 'readme-test: skip' needs a reason"
        pytest.skip(f"README.md line {line}: {directives['skip']}")
    if "requires" in directives:
        missing = _missing_extras([e.strip() for e in directives["requires"].split(",")])
        if missing:
            pytest.skip(f"README.md line {line} needs pip install 'mfrec[{','.join(missing)}]'")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("MFREC_DATA", None)
    ml100k = find_ml100k()
    if ml100k is not None:
        env["MFREC_DATA_DIR"] = str(ml100k.parent)
    elif _NEEDS_DATA.search(code):
        data_missing("MovieLens 100K", "ml-100k")
    if lang == "python":
        (tmp_path / "block.py").write_text(code, encoding="utf-8")
        cmd = [sys.executable, "block.py"]
    else:
        (tmp_path / "block.sh").write_text(without_install_steps(code), encoding="utf-8")
        cmd = ["bash", "-e", "block.sh"]
    timeout = float(directives.get("timeout") or DEFAULT_TIMEOUT)
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, (f"README.md line {line} ({lang}) failed with exit code "
                                 f"{res.returncode}:\n{res.stderr[-3000:]}")


def test_block_parsing_and_install_steps():
    # the parser finds fences, languages and directives; install steps are dropped, the rest kept
    text = ("x\n<!-- readme-test: requires plot -->\n```bash\nmfrec demo\n```\n```text\nno\n```\n"
            "```python\nprint(1)\n```\n")
    assert readme_blocks(text) == [(3, "bash", "mfrec demo\n", {"requires": "plot"}),
                                   (9, "python", "print(1)\n", {})]
    line = ("python3 -m venv .venv && . .venv/bin/activate && pip install '.[test]' && "
            "python -m pytest")
    assert without_install_steps(line).strip() == ""
    assert without_install_steps("python3 -m venv .venv && . .venv/bin/activate && pip install "
                                 ". && mfrec demo\nls -l\n") == "mfrec demo\nls -l\n"


def test_readme_lists_every_extra():
    # the Extras table names exactly the extras pyproject.toml defines
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Extras"):]
    section = section[:section.index("\n## ")]
    listed = set(re.findall(r"^\| `([\w-]+)` \|", section, re.M))
    assert listed == set(_extras()), (
        f"README's Extras table lists {sorted(listed)}, pyproject.toml defines "
        f"{sorted(_extras())}")


def test_readme_has_no_placeholder_paths():
    # the examples use real inputs, not paths the reader has to invent
    for lang, code in [(b[1], b[2]) for b in BLOCKS]:
        assert "path/to" not in code, code
        assert not re.search(r"\bas_ratings\(df\)", code) or "df = " in code, code
