"""The columns a model was trained from are kept in its state and its file."""
import pandas as pd

import mfrec


def test_columns_used_are_in_the_model_and_survive_save(tmp_path):
    frame = pd.DataFrame({"when": [1, 2, 3, 4], "film": ["a", "b", "a", "c"],
                          "viewer": [10, 10, 11, 12], "score": [5.0, 3.0, 4.0, 1.0]})
    model = mfrec.Baseline().fit(frame)
    assert model.data_columns_ == {"user": "viewer", "item": "film", "rating": "score",
                                   "timestamp": "when"}
    model.save(tmp_path / "m.mfrec")
    assert mfrec.load(tmp_path / "m.mfrec").data_columns_ == model.data_columns_


def test_arrays_have_no_columns():
    model = mfrec.Baseline().fit(([0, 1, 1], [0, 0, 1], [1.0, 2.0, 3.0]))
    assert model.data_columns_ is None
