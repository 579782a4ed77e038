"""Shared fixtures. MovieLens 100K is read from ../shared (or $MFREC_DATA_DIR); it is never copied
into the project. With MFREC_REQUIRE_DATA=1 (as CI sets) a missing data set fails instead of
skipping."""
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SEED_MATRIX = np.array([[5, 3, 0, 2, 1], [4, 0, 0, 2, 1], [1, 3, 1, 0, 5], [1, 0, 2, 0, 4]],
                       dtype=float)


def find_ml100k():
    env = os.environ.get("MFREC_DATA_DIR")
    candidates = [Path(env) / "ml-100k", Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data" / "ml-100k")
    for c in candidates:
        if (c / "u.data").exists():
            return c
    return None


@pytest.fixture(scope="session")
def ml100k_dir():
    path = find_ml100k()
    if path is None:
        if os.environ.get("MFREC_REQUIRE_DATA") == "1":
            pytest.fail("MovieLens 100K not found (set MFREC_DATA_DIR or place ../shared/data/ml-100k)")
        pytest.skip("MovieLens 100K not available")
    return path


@pytest.fixture
def seed_matrix():
    return SEED_MATRIX.copy()
