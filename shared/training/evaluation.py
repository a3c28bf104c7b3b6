"""Offline evaluation on a time split: the model and the popularity baseline, scored alike.

Both rank every item for every evaluated user, leave out what the user bought before the cutoff
(as serving does), and are scored on the items the user bought after it (new purchases only:
re-buying the same item is not a recommendation's merit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.sparse import csr_matrix

CHUNK = 2048


@dataclass(frozen=True)
class Metrics:
    precision: float
    map: float
    ndcg: float
    coverage: float
    users: int

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 5) if isinstance(value, float) else value
                for name, value in asdict(self).items()}


@dataclass(frozen=True)
class Holdout:
    users: np.ndarray  # users evaluated (index into the training matrix rows)
    relevant: csr_matrix  # rows aligned with `users`: items bought in the holdout, new to the user


def holdout(later_purchases: csr_matrix, earlier_purchases: csr_matrix, known_users: np.ndarray) -> Holdout:
    """Users known before the cutoff who bought something new after it."""
    new = later_purchases - later_purchases.multiply(earlier_purchases > 0)
    new.eliminate_zeros()
    has_new = np.diff(new.indptr) > 0
    users = np.flatnonzero(has_new & known_users)
    return Holdout(users, (new[users] > 0).astype(np.float32).tocsr())


def best_first(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's k highest-scoring columns, best first, equal scores in column order.

    One tie-break for every ranking (serving, campaign batches, evaluation): argpartition and
    argsort alone order equal scores by chance, so one customer could get two different lists.
    """
    rows, n = scores.shape
    k = min(k, n)
    if k == 0 or rows == 0:
        return np.empty((rows, k), dtype=np.int64)
    if np.isnan(scores).any():  # a NaN equals nothing, so it could not be counted among the k
        scores = np.where(np.isnan(scores), -np.inf, scores)
    kth = np.partition(scores, n - k, axis=1)[:, n - k : n - k + 1]
    above = scores > kth
    tied = scores == kth
    # Of the scores equal to the k-th best, the lowest columns fill the places left.
    places_left = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= places_left))
    columns = np.nonzero(chosen)[1].reshape(rows, k)
    order = np.argsort(-np.take_along_axis(scores, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)


def top_items(score: Callable[[np.ndarray], np.ndarray], users: np.ndarray, exclude: csr_matrix, k: int) -> np.ndarray:
    """The k best items per user by `score(users) -> (len(users), n_items)`, excluded items left out."""
    ranked = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), CHUNK):
        chunk = users[start : start + CHUNK]
        scores = np.asarray(score(chunk), dtype=np.float32).copy()
        rows = exclude[chunk].tocoo()
        scores[rows.row, rows.col] = -np.inf
        ranked[start : start + len(chunk)] = best_first(scores, k)
    return ranked


def ranking_metrics(ranked: np.ndarray, relevant: csr_matrix, n_items: int) -> Metrics:
    k = ranked.shape[1]
    if len(ranked) == 0:
        return Metrics(0.0, 0.0, 0.0, 0.0, 0)
    hits = np.asarray(relevant[np.arange(len(ranked))[:, None], ranked].todense()) > 0
    n_relevant = np.diff(relevant.indptr)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    average_precision = (precision_at * hits).sum(axis=1) / np.minimum(n_relevant, k)
    return Metrics(
        precision=float(hits.sum(axis=1).mean() / k),
        map=float(average_precision.mean()),
        ndcg=float(((hits * discounts).sum(axis=1) / ideal).mean()),
        coverage=float(len(np.unique(ranked)) / n_items),
        users=len(ranked),
    )
