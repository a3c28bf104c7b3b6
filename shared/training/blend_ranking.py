"""Every blend's top k for a chunk of customers, ranked from the few cells that can make it.

The validation ranks every item for each evaluated customer once per blend of the grid (16): on
a catalogue of 200,000 items that is most of a run's evaluation. Yet a blend is a weighted sum of
the same parts (ALS, item neighbours, popularity) with non-negative weights, so a cell can only
make a blend's list if it is near the top of some part. Each part's best cells (`CANDIDATES` per
customer, and ties, by evaluation.candidates) are found once per chunk, with a bound no cell left
out is above; each blend is summed on those cells alone; and where the blend's k-th best there is
above the same weighted sum of the bounds, nothing left out can reach the list, so the list is
exactly best_first's (ties by column included: nothing left out can tie). A customer for whom
that does not hold (a flat row, or fewer than k items left) is ranked on every item, as before.
tests/unit/test_blend_ranking.py checks the lists are best_first's on every blend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix

from shared.training.evaluation import best_first, candidates
from shared.training.hybrid import Blend, blend_terms, weigh

# Best cells kept per customer and part: more widens what is summed per blend, fewer loosens the
# bound and sends more customers down the full path.
CANDIDATES = 64


def rank_blends(blends: Sequence[Blend], als: np.ndarray | None, knn: np.ndarray | None, popularity: np.ndarray,
                excluded: coo_matrix, k: int, nan_free: bool) -> dict[Blend, np.ndarray]:
    """best_first(scores, k) of each blend's scores (Scorer.weighed, the `excluded` cells -inf)
    for the rows of `als` and `knn` (standardized; None: not used) with `popularity` (one row for
    everyone). `nan_free`: the caller knows no part holds a NaN, which the bound needs (a NaN is
    above nothing and below nothing); otherwise every item is ranked."""
    rows, n = excluded.shape
    everyone = np.arange(rows)
    kept = max(CANDIDATES, k)
    if k == 0 or rows == 0:
        return {blend: np.empty((rows, k), np.int64) for blend in blends}
    if not nan_free or n <= 4 * kept:  # a small catalogue: every item is about as cheap
        return {blend: _ranked_on_every_item(blend, everyone, als, knn, popularity, excluded, k, nan_free)
                for blend in blends}
    flats, bounds = [], {}
    for name, part in (("als", als), ("knn", knn)):
        if part is not None:
            flat, bound = candidates(part, kept)
            flats.append(flat)
            bounds[name] = bound[:, 0]
    popular, popular_bound = candidates(popularity[None, :], kept)
    flats.append((everyone[:, None] * n + popular[None, :]).ravel())
    # The candidates are a few hundred cells a row: sorting them costs less than a pass over a
    # mask of the chunk's every cell.
    cells = np.unique(np.concatenate(flats))
    left_out_cells = excluded.row.astype(np.int64) * n + excluded.col
    left_out = np.isin(cells, left_out_cells)
    row, column = np.divmod(cells, n)
    # The cells as a small dense matrix, each row's in column order (best_first's tie-break),
    # padded with cells that rank last (-inf, like the items left out).
    counts = np.bincount(row, minlength=rows)
    slot = np.arange(len(cells)) - (np.cumsum(counts) - counts)[row]
    columns = np.zeros((rows, counts.max()), np.int64)
    columns[row, slot] = column
    last = np.ones(columns.shape, bool)
    last[row, slot] = left_out
    als_cells = np.take_along_axis(als, columns, axis=1) if als is not None else None
    knn_cells = np.take_along_axis(knn, columns, axis=1) if knn is not None else None
    popularity_ceiling = np.full(rows, popular_bound[0, 0], popularity.dtype)  # summed as the cells are
    ranked: dict[Blend, np.ndarray] = {}
    for blend in blends:
        # A blend of no part scores 0 everywhere: its ceiling is 0 too, and every row goes the full way.
        scores = weigh(blend_terms(blend, als_cells, knn_cells, popularity[columns]), columns.shape)
        scores[last] = -np.inf
        places = best_first(scores, k, nan_free=True)
        top = np.take_along_axis(columns, places, axis=1)
        kth = np.take_along_axis(scores, places[:, -1:], axis=1)[:, 0]
        # What a cell left out can score at most: the same sum of each part's bound.
        ceiling = weigh(blend_terms(blend, bounds.get("als"), bounds.get("knn"), popularity_ceiling), (rows,))
        unsure = np.flatnonzero(~(kth > ceiling))
        if len(unsure):
            top[unsure] = _ranked_on_every_item(blend, unsure, als, knn, popularity, excluded, k, True)
        ranked[blend] = top
    return ranked


def _ranked_on_every_item(blend: Blend, rows: np.ndarray, als: np.ndarray | None, knn: np.ndarray | None,
                          popularity: np.ndarray, excluded: coo_matrix, k: int, nan_free: bool) -> np.ndarray:
    """best_first of the blend's scores on every item, for `rows` only."""
    n = excluded.shape[1]
    terms = blend_terms(blend, als[rows] if als is not None else None, knn[rows] if knn is not None else None,
                        popularity[None, :])
    scores = weigh(terms, (len(rows), n))
    place = np.full(excluded.shape[0], -1)
    place[rows] = np.arange(len(rows))
    mine = place[excluded.row] >= 0
    scores[place[excluded.row[mine]], excluded.col[mine]] = -np.inf
    return best_first(scores, k, nan_free)
