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

# Customers scored at a time: each of a chunk's dense (customers x items) arrays stays a few MiB,
# not hundreds, on a catalogue of tens of thousands of items.
CHUNK = 256
GROUP = 64  # columns per group when the k-th best score is bounded (best_first)


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


def best_first(scores: np.ndarray, k: int, nan_free: bool = False) -> np.ndarray:
    """Each row's k highest-scoring columns, best first, equal scores in column order.

    One tie-break for every ranking (serving, campaign batches, evaluation): argpartition and
    argsort alone order equal scores by chance, so one customer could get two different lists.
    Only the few columns at or above a cheap lower bound of the k-th best score are sorted: a full
    partition of every row is most of an evaluation's time on a large catalogue. `nan_free`: the
    caller knows the scores hold no NaN (the check is a pass over every score).
    """
    rows, n = scores.shape
    k = min(k, n)
    if k == 0 or rows == 0:
        return np.empty((rows, k), dtype=np.int64)
    if not nan_free and np.isnan(scores.max()):  # a NaN equals nothing, so it could not be counted among the k
        scores = np.where(np.isnan(scores), -np.inf, scores)
    row, column = np.divmod(candidates(scores, k)[0], n)
    # By row, then score (best first), then column: each row's first k are its list.
    order = np.lexsort((column, -scores[row, column], row))
    counts = np.bincount(row, minlength=rows)
    firsts = np.cumsum(counts) - counts
    return column[order][firsts[:, None] + np.arange(k)].astype(np.int64)


def candidates(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indexes of the cells that can make a row's list: those above a bound no higher than
    its k-th best score, and of those equal to the bound, the first k (a flat row ties at it in
    every column, and only its first k columns can be chosen). At least k a row (of rows with k
    columns); and the bound (rows x 1): no cell left out is above it."""
    rows, n = scores.shape
    bound = _kth_best_at_most(scores, k)
    # Flat: numpy finds the few set cells of a 1-d mask many times faster than of a 2-d one. One
    # pass finds the cells at or above the bound; the few found are then split into above and equal.
    reached = np.flatnonzero(scores >= bound)
    reached_rows = reached // n
    equal = scores.ravel()[reached] == bound[reached_rows, 0]
    tied, tied_rows = reached[equal], reached_rows[equal]
    firsts = np.searchsorted(tied_rows, np.arange(rows))
    rank = np.arange(len(tied)) - firsts[tied_rows]
    return np.concatenate([reached[~equal], tied[rank < k]]), bound


def _kth_best_at_most(scores: np.ndarray, k: int) -> np.ndarray:
    """A value no higher than each row's k-th best score (rows x 1): the k-th best of the maxima of
    at least k disjoint groups of columns, which are k distinct scores of the row. Groups of
    `GROUP` columns keep that close to the k-th best, so few columns reach it."""
    rows, n = scores.shape
    width = max(1, min(GROUP, n // k))
    groups = n // width
    # Group g holds the columns g, g + groups, ...: the maxima are taken over contiguous rows.
    maxima = scores[:, : width * groups].reshape(rows, width, groups).max(axis=1)
    return np.partition(maxima, groups - k, axis=1)[:, groups - k : groups - k + 1]


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


def top_items_of_one_row(scores: np.ndarray, users: np.ndarray, exclude: csr_matrix, k: int) -> np.ndarray:
    """top_items when every user's scores are the one row `scores` (popularity): the row is
    sorted once, and each user takes its first k items they are not excluded from. The same lists,
    in a fraction of the time: nothing per user grows with the catalogue."""
    n = len(scores)
    k = min(k, n)
    rows = exclude[users].tocsr()
    excluded = np.diff(rows.indptr)
    if not np.isfinite(scores).all() or (n - excluded < k).any():
        # NaNs and users left with fewer than k items rank as best_first ranks them.
        return top_items(lambda chunk: np.broadcast_to(scores, (len(chunk), n)), users, exclude, k)
    order = best_first(scores[None, :], n)[0]
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    ranked = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), CHUNK):
        chunk = rows[start : start + CHUNK].tocoo()
        # A user's k items are among the row's first k + (their excluded items) items.
        width = min(n, k + int(excluded[start : start + CHUNK].max(initial=0)))
        taken = np.zeros((chunk.shape[0], width), dtype=bool)
        places = position[chunk.col]
        near = places < width
        taken[chunk.row[near], places[near]] = True
        # Untaken places first, each in the row's order: a stable sort of the flags.
        ranked[start : start + chunk.shape[0]] = order[np.argsort(taken, axis=1, kind="stable")[:, :k]]
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
