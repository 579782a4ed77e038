"""The popularity baseline: every user gets the same ranking, the catalogue's most popular items.

It is the floor every recommender comparison needs (a personalized model that cannot beat it has
learned nothing about users), and a fitted :class:`Popularity` is an ordinary mfrec model —
factors of width zero plus biases plus vocabularies — so it recommends, predicts, evaluates,
saves and loads like any other.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_bool, check_choice, check_float
from .base import FactorModel

__all__ = ["Popularity"]

_SCORES = ("auto", "count", "mean")


class Popularity(FactorModel):
    """Most-popular items (ranking) and damped item means (rating prediction).

    Parameters
    ----------
    score : {"auto", "count", "mean"}, default="auto"
        What an item's score is, hence both its rank and its predicted value:

        - ``"count"``: its popularity, the number of users who interacted with it divided by
          the number of users (with ``weighted=True``, the sum of the interaction strengths
          divided by the number of users). ``predict`` then estimates how likely a user is to
          interact with the item. This is the "MostPop" baseline of ranking tables.
        - ``"mean"``: the damped mean rating ``mu + sum_u (r_ui - mu) / (n_i + damping)``.
          ``predict`` is the classic item-mean rating baseline (clipped to the training
          range); ``recommend`` lists the best-rated items, shrunk towards the global mean so
          that an item with one 5-star rating does not come first.
        - ``"auto"``: ``"count"`` when every training value is the same (binary interactions,
          where a mean says nothing), else ``"mean"``.

        For a most-popular ranking of explicit ratings (e.g. MovieLens), pass ``"count"``.
    weighted : bool, default=False
        With ``score="count"``, weigh each interaction by its value (plays, clicks) instead of
        counting it once.
    damping : float, default=5.0
        With ``score="mean"``: how many ratings at the global mean every item starts with.

    Attributes
    ----------
    score_ : str
        The score used, ``"count"`` or ``"mean"`` (resolves ``"auto"``).
    item_popularity_ : float32 ndarray of shape (n_items,)
        Number of training interactions of each item (or their summed values when
        ``weighted``), whatever ``score`` is.
    item_bias_ : float32 ndarray of shape (n_items,)
        The item scores above the global mean: the popularity share (``"count"``) or the damped
        mean deviation (``"mean"``).
    global_mean_ : float
        0 (``"count"``) or the mean training rating (``"mean"``).
    user_factors_, item_factors_ : float32 ndarrays of shape (n_users, 0) and (n_items, 0)
        Empty: scores are the item biases alone, the same for every user.
    user_bias_ : zeros

    Examples
    --------
    >>> import numpy as np, mfrec
    >>> X = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]])   # item 0 is the most popular
    >>> model = mfrec.Popularity().fit(X)
    >>> model.recommend(2, n=2)[0].tolist()                        # item 0 is seen: next best
    [[1, 2]]
    >>> model.predict([2], [1]).round(3).tolist()                  # 1 of 3 users
    [0.333]
    """

    def __init__(self, *, score="auto", weighted=False, damping=5.0):
        self.score = score
        self.weighted = weighted
        self.damping = damping

    def _validate_params(self):
        check_choice("score", self.score, _SCORES)
        check_bool("weighted", self.weighted)
        check_float("damping", self.damping, low=0.0)

    def fit(self, data):
        """Count each item's interactions (and its mean rating).

        Parameters
        ----------
        data : Ratings or anything :func:`mfrec.as_ratings` accepts
            Users x items; ratings or interaction strengths (non-negative when
            ``weighted=True``).

        Returns
        -------
        self
        """
        ratings = self._prepare(data)
        values = ratings.values.astype(np.float64)
        items = ratings.item_index
        n_users, n_items = ratings.shape
        if self.weighted and values.min() < 0:
            raise ValueError(f"weighted=True needs non-negative interaction strengths, got "
                             f"{int((values < 0).sum())} negative value(s), e.g. "
                             f"{values[values < 0][:5].tolist()}")
        counts = np.bincount(items, minlength=n_items).astype(np.float64)
        popularity = (np.bincount(items, weights=values, minlength=n_items) if self.weighted
                      else counts)
        score = self.score
        if score == "auto":
            score = "count" if values.min() == values.max() else "mean"
        self._set_data_state(ratings)
        if score == "count":
            mu = 0.0
            bias = popularity / max(n_users, 1)
        else:
            mu = float(values.mean())
            sums = np.bincount(items, weights=values - mu, minlength=n_items)
            with np.errstate(invalid="ignore", divide="ignore"):
                denom = counts + float(self.damping)
                bias = np.where(denom > 0, sums / np.where(denom > 0, denom, 1.0), 0.0)
        self.score_ = score
        self.item_popularity_ = popularity.astype(np.float32)
        # the count score estimates an interaction probability, not a rating: never clip it to
        # the rating range (which is [1, 1] on binary data)
        self._clip_predictions = score == "mean"
        self._set_factor_state(np.zeros((n_users, 0), np.float32),
                               np.zeros((n_items, 0), np.float32),
                               item_bias=bias.astype(np.float32), global_mean=mu)
        return self

    def _fold_in_solve(self, indptr, items, values):
        # every user is scored alike: a new user needs no vector and no bias
        m = indptr.size - 1
        return np.zeros((m, 0), np.float32), np.zeros(m, np.float32)
