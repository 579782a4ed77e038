"""Plots write valid PNG files of the expected pixel size, and fail clearly without data."""
import struct

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from mfrec import FactorModel, Ratings, plots  # noqa: E402
from mfrec.evaluation import GridSearch, cross_validate  # noqa: E402


def png_size(path):
    """(width, height) from a PNG's IHDR chunk; asserts the file is a PNG."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert raw[12:16] == b"IHDR" and raw[-8:-4] == b"IEND"
    return struct.unpack(">II", raw[16:24])


class Curvy(FactorModel):
    """Random factors with a made-up loss and validation history."""

    def __init__(self, *, n_factors=3, scale=1.0, random_state=0):
        self.n_factors = n_factors
        self.scale = scale
        self.random_state = random_state

    def fit(self, data, validation=None):
        r = self._prepare(data)
        rng = np.random.default_rng(self.random_state)
        self._set_data_state(r)
        self._set_factor_state(rng.normal(size=(r.n_users, self.n_factors)) * 0.1,
                               rng.normal(size=(r.n_items, self.n_factors)) * self.scale,
                               None, None, float(r.values.mean()))
        self.loss_history_ = list(1.0 / np.arange(1, 11))
        self.validation_history_ = list(1.0 + 0.01 * (np.arange(10) - 6) ** 2)
        self.best_epoch_ = 6
        return self


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    r = Ratings.from_ids(rng.integers(0, 30, 400), rng.integers(0, 25, 400),
                         rng.integers(1, 6, 400).astype(float), duplicates="last")
    return Curvy().fit(r), r


def test_learning_curve(tmp_path, fitted):
    fig = plots.learning_curve(fitted[0], path=tmp_path / "lc.png", figsize=(6, 4), dpi=50)
    assert png_size(tmp_path / "lc.png") == (300, 200)
    assert len(fig.axes) == 2  # loss axis + validation axis


def test_item_map_labels(tmp_path, fitted):
    model, r = fitted
    names = {i: f"movie {i}" for i in r.item_vocab.ids}
    fig = plots.item_map(model, labels=names, n_labels=5, path=tmp_path / "map.png")
    assert png_size(tmp_path / "map.png") == (800, 800)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 5 and all(t.startswith("movie ") for t in texts)
    # the five labelled items are the most rated ones
    top = np.argsort(-r.item_counts(), kind="stable")[:5]
    assert sorted(texts) == sorted(f"movie {r.item_vocab.ids[j]}" for j in top)


def test_compare_charts(tmp_path, fitted):
    _, r = fitted
    table = cross_validate(Curvy(), r, cv=3, random_state=0, metrics=["rmse", "mae"])
    plots.compare(table, path=tmp_path / "cv.png", figsize=(9, 3), dpi=100)
    assert png_size(tmp_path / "cv.png") == (900, 300)
    plots.compare({"a": table, "b": table}, metric="mae", path=tmp_path / "two.png")
    assert png_size(tmp_path / "two.png") == (800, 500)
    search = GridSearch(Curvy(), {"scale": [0.1, 1.0, 3.0]}, cv=2, random_state=0,
                        refit=False).fit(r)
    fig = plots.compare(search, path=tmp_path / "search.png", dpi=80)
    assert png_size(tmp_path / "search.png") == (640, 400)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    best = search.cv_results_.loc[search.best_index_, "param_scale"]
    assert labels[0] == f"scale={best:g}"  # best first


def test_fit_report(tmp_path, fitted):
    plots.fit_report(fitted[0], tmp_path / "fit.png", labels=lambda i: f"#{i}")
    assert png_size(tmp_path / "fit.png") == (1400, 600)


def test_clear_errors(fitted):
    model = Curvy().fit(fitted[1])
    model.loss_history_ = []
    with pytest.raises(ValueError, match="has no loss_history_ to plot"):
        plots.learning_curve(model)
    with pytest.raises(TypeError, match="results must be a cross_validate table"):
        plots.compare(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="metric 'ndcg@10' is not in the search results"):
        plots.compare(pd.DataFrame({"params": [{}], "mean_rmse": [1.0], "std_rmse": [0.0]}),
                      metric="ndcg@10")
