"""`import mfrec` is cheap (no NumPy, SciPy, pandas or Numba until a name needs them), every public
name still resolves, and loading a model plus a small recommend never imports Numba."""
import subprocess
import sys

import pytest

import mfrec


def _modules_after(code):
    probe = ("import sys\n" + code + "\nprint(sorted(m for m in ('numpy', 'scipy', 'pandas', "
             "'numba', 'tqdm', 'threadpoolctl') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def test_import_mfrec_imports_no_heavy_module():
    assert _modules_after("import mfrec") == "[]"
    assert _modules_after("import mfrec.cli; mfrec.cli.build_parser()") == "[]"


@pytest.mark.parametrize("name", [n for n in mfrec.__all__ if n != "__version__"])
def test_every_public_name_resolves(name):
    # attribute access and `from mfrec import NAME` give the object its module defines
    value = getattr(mfrec, name)
    namespace = {}
    exec(f"from mfrec import {name}", namespace)
    assert namespace[name] is value
    assert name in dir(mfrec)
    if name in ("datasets", "index", "spark"):  # submodules
        assert value.__name__ == f"mfrec.{name}"
    else:
        assert value.__name__ == name


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchModel'"):
        mfrec.NoSuchModel  # noqa: B018
    assert not hasattr(mfrec, "cli_") and callable(getattr(mfrec, "load"))


def test_load_and_recommend_without_numba(tmp_path):
    # a model fitted elsewhere is loaded and answers a few users by NumPy alone
    X = mfrec.datasets.seed_matrix()
    path = tmp_path / "m.mfrec"
    mfrec.SVD(n_factors=2).fit(X).save(path)
    got = _modules_after(f"import mfrec; m = mfrec.load({str(path)!r}); "
                         "print(m.recommend([0, 1], n=2)); print(m.similar_items([0], n=2))")
    assert "numba" not in got and "pandas" not in got
