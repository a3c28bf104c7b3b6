"""The served strategy: a blend of ALS, item neighbours and recent popularity, one scorer for
evaluation and serving alike.

    score(customer, item) = w_als * z(ALS fold-in score)
                          + w_knn * z(item-kNN score of the customer's history)
                          + w_pop * z(log(1 + recent popularity))

z standardises a customer's scores over every item (mean 0, standard deviation 1), so the three
are on one scale whatever the shop. The customer's row is the confidence row of
`shared.training.matrix` (training and serving build it alike); the kNN part weighs each history
item by its confidence minus one (alpha x log(1 + weight)), so a view counts less than a purchase
and an old purchase less than a new one. The weights are picked per shop on a validation split
inside the training data (shared/training/pipeline.py), from `BLENDS`.

Evaluation calls `Scorer.scores` on many rows at once, serving on one: the same code, so serving
ranks exactly as the evaluation did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from shared.bulk import cpus, mapped_on_threads
from shared.training.interactions import EVENT_CODES, Interactions
from shared.events import EventType

DAY = 86_400.0
BLOCK = 1024  # items per block when the item-item similarities are computed
# Neighbour similarities are cosine raised to this power: a close neighbour counts for much more
# than several loose ones (measured on both shops' validation splits, docs/model.md).
SHARPENING = 2.0


@dataclass(frozen=True)
class Blend:
    als: float = 0.0
    knn: float = 0.0
    popularity: float = 0.0

    @property
    def strategy(self) -> str:
        """hybrid (two or more parts), als, knn or popular (popularity alone)."""
        parts = [name for name, weight in (("als", self.als), ("knn", self.knn), ("popular", self.popularity))
                 if weight > 0]
        return parts[0] if len(parts) == 1 else "hybrid"

    def as_dict(self) -> dict[str, float]:
        return {"als": self.als, "knn": self.knn, "popularity": self.popularity}

    @classmethod
    def of(cls, values: dict[str, Any] | None) -> Blend | None:
        return None if not values else cls(float(values.get("als", 0)), float(values.get("knn", 0)),
                                           float(values.get("popularity", 0)))


# The validation grid: each part alone, then the mixes. Small: each is a few matrix products.
BLENDS = (
    Blend(popularity=1), Blend(als=1), Blend(knn=1),
    Blend(als=1, knn=1), Blend(als=1, popularity=0.5), Blend(knn=1, popularity=0.5),
    Blend(als=1, knn=1, popularity=0.5), Blend(als=1, knn=1, popularity=1),
    Blend(als=1, knn=0.5, popularity=0.5), Blend(als=0.5, knn=1, popularity=0.5),
    Blend(als=1, knn=1, popularity=2), Blend(als=0.5, knn=1, popularity=1),
    Blend(knn=0.5, popularity=1), Blend(knn=0.25, popularity=1), Blend(als=0.25, knn=0.5, popularity=1),
    Blend(als=0.5, knn=0.5, popularity=1),
)
# Used when the training data is too small for a validation split.
DEFAULT_BLEND = Blend(als=1, knn=1, popularity=1)


def item_neighbours(purchases: csr_matrix, k: int, sharpening: float = SHARPENING) -> csr_matrix:
    """Cosine similarity of items over binary purchases (users x items), the `k` nearest of each
    item kept, raised to `sharpening`: row j holds j's neighbours, so `history_row @ neighbours`
    scores every item."""
    bought = (purchases > 0).astype(np.float32).tocsr()
    norms = np.sqrt(np.asarray(bought.sum(axis=0)).ravel())
    # Customers x items, as CSR: the right operand of each block's product below in its left one's
    # format (scipy turned a CSC one into CSR for every block: most of the products' time).
    normalized = bought.multiply(1.0 / np.maximum(norms, 1e-12)[None, :]).tocsr().astype(np.float32)
    n_items = purchases.shape[1]
    keep = min(k, n_items)
    by_item = normalized.T.tocsr()
    step = max(1, BLOCK // cpus())  # one block per thread (below): together they hold BLOCK rows of similarities

    def neighbours_of_block(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        row, col, value = _nearest(_without_diagonal((by_item[start : start + step] @ normalized).tocsr(), start), keep)
        return row + start, col, value

    blocks = mapped_on_threads(neighbours_of_block, range(0, n_items, step))
    if not blocks:
        return csr_matrix((n_items, n_items), dtype=np.float32)
    rows, cols, values = (np.concatenate(parts) for parts in zip(*blocks))
    return coo_matrix((np.power(values, sharpening, dtype=np.float32), (rows, cols)),
                      shape=(n_items, n_items), dtype=np.float32).tocsr()


def _without_diagonal(similar: csr_matrix, start: int) -> csr_matrix:
    """Rows `start`... of the item-item similarities without each item itself."""
    own = similar.indices == np.repeat(np.arange(start, start + similar.shape[0]), np.diff(similar.indptr))
    similar.data[own] = 0.0
    similar.eliminate_zeros()
    return similar


def _nearest(similar: csr_matrix, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's `keep` most similar items (row, column, similarity), the lower column first among
    equals; a similarity of 0 or less is no neighbour. Chosen among the row's stored similarities:
    a row as wide as the catalog is never made (at 200,000 items a block of dense rows was the
    evaluation's largest allocation)."""
    counts = np.diff(similar.indptr)
    rows = np.repeat(np.arange(similar.shape[0]), counts)
    order = np.lexsort((similar.indices, -similar.data, rows))
    rank = np.arange(len(order)) - np.repeat(similar.indptr[:-1], counts)
    chosen = order[rank < keep]
    value = similar.data[chosen]
    positive = value > 0
    return rows[chosen][positive], similar.indices[chosen][positive], value[positive]


def recent_popularity(interactions: Interactions, until: float, half_life_days: float, n_items: int) -> np.ndarray:
    """Distinct buyers per item, each weighted 0.5^(age / half-life) by their newest purchase of
    it, counted back from the newest purchase before `until` (so an old history still ranks)."""
    bought = (interactions.event_codes == EVENT_CODES[EventType.PURCHASE]) & (interactions.timestamps < until)
    if not bought.any():
        return np.zeros(n_items, dtype=np.float32)
    stamps = interactions.timestamps[bought]
    anchor = float(stamps.max())
    items, newest = _max_per_cell(interactions.users[bought], interactions.items[bought], stamps, n_items)
    weights = np.power(0.5, (anchor - newest) / DAY / half_life_days)
    return np.bincount(items, weights=weights, minlength=n_items).astype(np.float32)


def _max_per_cell(users: np.ndarray, items: np.ndarray, stamps: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The newest stamp of each (user, item): items and stamps, one per distinct pair."""
    key = users.astype(np.int64) * n_items + items
    order = np.lexsort((stamps, key))
    key, stamps = key[order], stamps[order]
    last = np.r_[key[1:] != key[:-1], True]
    return (key[last] % n_items).astype(np.int64), stamps[last]


def zscore(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (1 for a flat row: np.std of the
    centred row, whose leftover from centring comes out 0). For popularity, one row for everyone;
    the parts a customer has are standardized from their moments (Scorer.parts)."""
    centred = scores - scores.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True)
    return centred / np.where(spread > 0, spread, 1.0)


def blend_terms(blend: Blend, als: Any, knn: Any, popularity: Any) -> list[tuple[float, Any]]:
    """The (weight, part) pairs a blend sums, in the order it sums them: its parts with a weight."""
    return [(weight, part) for weight, part in ((blend.als, als), (blend.knn, knn), (blend.popularity, popularity))
            if weight > 0 and part is not None]


def weigh(terms: list[tuple[float, Any]], shape: tuple[int, ...]) -> np.ndarray:
    """The weighted sum of `terms`, in float32, in their order (no terms: zeros, as a blend of no
    part scores). The same operations on any cells give the same numbers, whole rows or a few
    cells gathered from them (and, rounding being monotonic, bounds of the parts give a bound of
    the sum: shared/training/blend_ranking.py)."""
    if not terms:
        return np.zeros(shape, dtype=np.float32)
    (weight, part), *rest = terms
    total = np.multiply(part, weight, out=np.empty(shape, dtype=np.float32))
    for weight, part in rest:
        total += part if weight == 1 else weight * part  # x 1 is exact: one pass fewer
    return total


Part = tuple[np.ndarray, np.ndarray]  # a part's standardized scores (rows x items), and each row's spread


class Scorer:
    """Scores every item for confidence rows (customers x items), as the blend says.

    A part is standardized over every item with its mean and spread worked out from what it is
    made of, not from the scores (a pass over them each, and np.std's five: a fifth of a 10M
    run's validation): ALS's from the customer's factors and the item factors' mean and
    covariance, kNN's from the few cells its sparse product holds. The same numbers whatever the
    rows around a row, so serving, campaigns and the validation score alike."""

    def __init__(self, item_factors: np.ndarray, regularization: float, neighbours: csr_matrix | None,
                 popularity: np.ndarray, blend: Blend, random_seed: int = 42) -> None:
        self.blend = blend
        self.n_items = len(popularity)
        self.neighbours = neighbours
        self.popularity = zscore(np.log1p(np.asarray(popularity, dtype=np.float32))[None, :])[0]
        self.als = _als_for(item_factors, regularization, random_seed) if item_factors.shape[0] else None
        if self.als is not None:
            self.item_mean, self.item_covariance = _mean_and_covariance(self.als.item_factors)

    def parts(self, rows: csr_matrix) -> tuple[Part | None, Part | None]:
        """The standardized ALS and kNN scores of the rows, each with the rows' spreads (None for a
        part the blend does not use). The arrays are new: the caller may overwrite them."""
        als = knn = None
        if self.blend.als > 0 and self.als is not None:
            factors = self._fold_in(rows)
            mean, spread = self._als_moments(factors)
            scores = factors @ self.als.item_factors.T
            np.subtract(scores, mean.astype(np.float32)[:, None], out=scores)
            np.divide(scores, spread.astype(np.float32)[:, None], out=scores)
            als = scores, spread
        if self.blend.knn > 0 and self.neighbours is not None:
            product = self._knn_product(rows)
            mean, spread = _sparse_moments(product, self.n_items)
            mean32, spread32 = mean.astype(np.float32), spread.astype(np.float32)
            scores = np.empty(product.shape, np.float32)
            scores[:] = (-mean32 / spread32)[:, None]  # (0 - mean) / spread: the cells not stored
            row = np.repeat(np.arange(product.shape[0]), np.diff(product.indptr))
            scores[row, product.indices] = (product.data - mean32[row]) / spread32[row]
            knn = scores, spread
        return als, knn

    def _fold_in(self, rows: csr_matrix) -> np.ndarray:
        factors = self.als.recalculate_user(np.arange(rows.shape[0]), rows)
        return np.asarray(factors, dtype=np.float32).reshape(rows.shape[0], -1)

    def _als_moments(self, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's mean and spread of its ALS scores over every item (u . v for each item v):
        u . mean(v), and the square root of u' cov(v) u; 1 for a flat row. In double precision,
        by einsum's own loops (not BLAS), so a row comes out the same alone and among others."""
        wide = factors.astype(np.float64)
        mean = np.einsum("ij,j->i", wide, self.item_mean)
        variance = np.einsum("ij,ij->i", np.einsum("ij,jk->ik", wide, self.item_covariance), wide)
        return mean, _spread(variance)

    def _knn_product(self, rows: csr_matrix) -> csr_matrix:
        product = (_history_weights(rows) @ self.neighbours).tocsr()
        product.sort_indices()  # each row's cells summed in column order: the same alone or among others
        return product

    def spreads(self, rows: csr_matrix) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The rows' spreads of the ALS and kNN parts, without scoring any item (None: not used)."""
        als = knn = None
        if self.blend.als > 0 and self.als is not None:
            als = self._als_moments(self._fold_in(rows))[1]
        if self.blend.knn > 0 and self.neighbours is not None:
            knn = _sparse_moments(self._knn_product(rows), self.n_items)[1]
        return als, knn

    def scores(self, rows: csr_matrix) -> np.ndarray:
        return self.scores_and_spreads(rows)[0]

    def scores_and_spreads(self, rows: csr_matrix) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The blended scores, and each row's spread of the raw ALS and kNN parts (None for a part
        the blend does not use): what scales a history item's share of a score (batch reasons)."""
        (als, als_spread), (knn, knn_spread) = (part or (None, None) for part in self.parts(rows))
        return self.weighed(self.blend, als, knn, rows.shape[0]), als_spread, knn_spread

    def weighed(self, blend: Blend, als: np.ndarray | None, knn: np.ndarray | None, n_rows: int) -> np.ndarray:
        """The blend of standardized parts (None: left out, as a zero weight is): one sum for
        serving and for the validation, which weighs the same parts for every blend."""
        return weigh(blend_terms(blend, als, knn, self.popularity[None, :]), (n_rows, self.n_items))

    def contributions(self, row: csr_matrix, items: list[int]) -> dict[int, dict[int, float]]:
        """For each item, how much each history item added to its score (the popularity part
        belongs to no history item): the ALS part as implicit's explain splits it, the kNN part
        as the neighbour similarities weighted by the history, both on the blend's scale."""
        als_spread, knn_spread = self.spreads(row)
        found: dict[int, dict[int, float]] = {item: {} for item in items}
        history = row.indices
        if knn_spread is not None:
            spread = float(knn_spread[0])
            weights = _history_weights(row)
            for item in items:
                column = self.neighbours[history, item].toarray().ravel() * weights.data
                for j, value in zip(history, column):
                    if value:
                        found[item][int(j)] = found[item].get(int(j), 0.0) + self.blend.knn * value / spread
        if als_spread is not None:
            spread = float(als_spread[0])
            cholesky = None
            for item in items:
                _, parts, cholesky = self.als.explain(0, row, item, user_weights=cholesky, N=len(history))
                for j, value in parts:
                    found[item][int(j)] = found[item].get(int(j), 0.0) + self.blend.als * value / spread
        return found


def _spread(variance: np.ndarray) -> np.ndarray:
    """The square root of each variance; 1 where it is none (a flat row), as zscore's, or too
    small for the float32 the scores are divided in (it would make them infinite)."""
    spread = np.sqrt(np.maximum(variance, 0.0))
    return np.where(spread >= np.finfo(np.float32).tiny, spread, 1.0)


def _mean_and_covariance(vectors: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the rows and their covariance (over all of them, not a sample's), in double
    precision, a block of rows at a time: a copy of 200,000 items' factors in doubles would be
    100 MB more at the run's peak."""
    mean = np.zeros(vectors.shape[1])
    for start in range(0, len(vectors), block):
        mean += vectors[start : start + block].sum(axis=0, dtype=np.float64)
    mean /= max(1, len(vectors))
    covariance = np.zeros((vectors.shape[1], vectors.shape[1]))
    for start in range(0, len(vectors), block):
        centred = vectors[start : start + block].astype(np.float64) - mean
        covariance += centred.T @ centred
    return mean, covariance / max(1, len(vectors))


def _sparse_moments(product: csr_matrix, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's mean and spread over all `n_items` columns of a sparse matrix (the columns it
    does not store are 0), in double precision, each row's cells in their stored order."""
    rows = product.shape[0]
    row = np.repeat(np.arange(rows), np.diff(product.indptr))
    values = product.data.astype(np.float64)
    mean = np.bincount(row, weights=values, minlength=rows) / n_items
    deviations = np.bincount(row, weights=np.square(values - mean[row]), minlength=rows)
    # Each column not stored is 0, mean away from the mean.
    variance = (deviations + (n_items - np.diff(product.indptr)) * np.square(mean)) / n_items
    return mean, _spread(variance)


def _history_weights(rows: csr_matrix) -> csr_matrix:
    """Confidence 1 + alpha x log(1 + weight) -> alpha x log(1 + weight): what each history item weighs."""
    weights = rows.copy().astype(np.float32)
    weights.data = np.maximum(weights.data - 1.0, 0.0)
    return weights


def _als_for(item_factors: np.ndarray, regularization: float, random_seed: int) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares

    als = AlternatingLeastSquares(factors=item_factors.shape[1], regularization=regularization, alpha=1.0,
                                  random_state=random_seed)
    als.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    als.user_factors = np.zeros((1, item_factors.shape[1]), dtype=np.float32)
    return als
