"""Evaluation: splits, metrics, cross-validation and tuning."""
from .metrics import mae, rmse
from .splits import train_test_split

__all__ = ["rmse", "mae", "train_test_split"]
