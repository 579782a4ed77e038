"""Evaluation: splits, metrics, cross-validation and tuning.

Ranking metrics (:mod:`mfrec.evaluation.ranking`) are imported on first use.
"""
from .cross_validation import cross_validate, evaluate
from .metrics import mae, rmse
from .search import GridSearch, RandomSearch
from .splits import (KFold, RepeatedSplit, ShuffleSplit, leave_one_out_split, split_report,
                     temporal_split, train_test_split, user_split, user_temporal_split)

__all__ = ["rmse", "mae", "evaluate", "cross_validate", "GridSearch", "RandomSearch",
           "train_test_split", "KFold", "ShuffleSplit", "RepeatedSplit", "user_split",
           "leave_one_out_split", "temporal_split", "user_temporal_split", "split_report"]


def __getattr__(name):
    # evaluate_ranking lives in its own module, loaded only when asked for
    if name == "evaluate_ranking":
        from .ranking import evaluate_ranking
        return evaluate_ranking
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
