"""Fits whose estimated working memory exceeds what is available are refused up front, with the
estimate in the message, before anything of the fit's size is allocated."""
import numpy as np
import pytest
import scipy.sparse as sp

import mfrec
from mfrec.models._memory import (MemoryEstimateError, _parse_size, available_bytes,
                                  estimate_bytes)


def _wide(n_users=2_000_000, n_items=50_000, nnz=1000):
    rng = np.random.default_rng(0)
    users = rng.choice(n_users, nnz, replace=False) if nnz <= n_users else \
        rng.integers(n_users, size=nnz)
    items = rng.integers(n_items, size=nnz)
    return sp.csr_matrix((np.ones(nnz, np.float32), (users, items)), shape=(n_users, n_items))


@pytest.mark.parametrize("model", [mfrec.NMF(n_factors=4000), mfrec.SVD(n_factors=4000),
                                   mfrec.GradientDescent(n_factors=4000)])
def test_huge_factor_matrices_are_refused_with_the_estimate(model, monkeypatch):
    # 2M users x 4000 factors in float64 is ~64 GB per copy: refused, naming the estimate and
    # the limit, whatever the machine has (the limit is pinned to 8 GB here)
    monkeypatch.setenv("MFREC_MEMORY_LIMIT", "8G")
    with pytest.raises(MemoryEstimateError, match=r"needs about [0-9.]+ GB .* 8\.0 GB available"):
        model.fit(_wide())
    assert not hasattr(model, "user_factors_")


def test_refusal_comes_before_the_allocation(monkeypatch):
    # under a 1.5 GB address-space cap the fit must fail with the clear error, not MemoryError
    # from inside NumPy: the check runs before any factor array exists
    import subprocess
    import sys
    import textwrap
    monkeypatch.delenv("MFREC_MEMORY_LIMIT", raising=False)
    code = textwrap.dedent("""
        import resource, sys
        import numpy as np, scipy.sparse as sp, mfrec
        from mfrec.models._memory import MemoryEstimateError
        rng = np.random.default_rng(0)
        X = sp.csr_matrix((np.ones(1000, np.float32), (rng.choice(2_000_000, 1000, replace=False),
                          rng.integers(50_000, size=1000))), shape=(2_000_000, 50_000))
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        try:
            mfrec.NMF(n_factors=2000).fit(X)
        except MemoryEstimateError as e:
            print("refused:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused:" in out.stdout, out.stderr[-2000:]
    assert "NMF(n_factors=2000)" in out.stdout


def test_ordinary_fits_pass_and_estimates_scale():
    model = mfrec.BiasedMF(n_factors=8, n_epochs=2, random_state=0)
    X = _wide(300, 200, 2000)
    model.fit(X)
    assert model.user_factors_.shape == (300, 8)
    # linear in ratings and in factor cells
    a = estimate_bytes(model, 1000, 1000, 10**6)
    b = estimate_bytes(model, 1000, 1000, 2 * 10**6)
    c = estimate_bytes(model, 2000, 2000, 10**6)
    assert b - a == 12 * 10**6  # the blocked (user, item, rating) copy
    assert c - a == 16 * 2000 * 9


def test_limit_parsing_and_discovery(monkeypatch):
    assert _parse_size("8G") == 8 * 2**30
    assert _parse_size("500MiB") == 500 * 2**20
    assert _parse_size("1024") == 1024
    with pytest.raises(ValueError, match="MFREC_MEMORY_LIMIT"):
        _parse_size("lots")
    monkeypatch.delenv("MFREC_MEMORY_LIMIT", raising=False)
    found = available_bytes()
    assert found is None or found > 0
