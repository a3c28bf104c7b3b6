"""Each blend's lists from the parts' best cells are exactly the lists of ranking every item."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix

from shared.training import blend_ranking
from shared.training.blend_ranking import rank_blends
from shared.training.evaluation import best_first
from shared.training.hybrid import BLENDS, Blend, Scorer, zscore

K = 10


def on_every_item(scorer: Scorer, als, knn, excluded: coo_matrix) -> dict:
    """What the validation ranked before: every item of every row, per blend."""
    lists = {}
    for blend in BLENDS:
        scores = scorer.weighed(blend, als, knn, excluded.shape[0])
        scores[excluded.row, excluded.col] = -np.inf
        lists[blend] = best_first(scores, K)
    return lists


def chunk(seed: int, rows: int = 64, items: int = 3000):
    """Parts shaped like the real ones: ALS dense, item neighbours mostly one tied floor value
    (items near nothing bought), popularity with long runs of equal counts; a few bought items
    per customer, one customer who bought nearly everything, one with flat parts."""
    rng = np.random.default_rng(seed)
    als = zscore(rng.normal(size=(rows, items)).astype(np.float32))
    knn = np.zeros((rows, items), np.float32)
    near = rng.random((rows, items)) < 0.02
    knn[near] = rng.exponential(size=near.sum())
    knn = zscore(knn)
    als[1] = knn[1] = 0.0
    counts = np.minimum(rng.zipf(1.5, items), 50).astype(np.float32)
    scorer = Scorer(np.zeros((0, 8), np.float32), 0.1, None, counts, BLENDS[0])
    bought = rng.random((rows, items)) < 0.003
    bought[0, : items - 5] = True
    return scorer, als, knn, coo_matrix(bought.astype(np.float32))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_blend_ranks_as_on_every_item(seed, monkeypatch):
    scorer, als, knn, excluded = chunk(seed)
    full = []
    ranked_fully = blend_ranking._ranked_on_every_item

    def counted(blend, rows, *args):
        full.append(len(rows))
        return ranked_fully(blend, rows, *args)

    monkeypatch.setattr(blend_ranking, "_ranked_on_every_item", counted)
    lists = rank_blends(BLENDS, als, knn, scorer.popularity, excluded, K, True)
    expected = on_every_item(scorer, als, knn, excluded)
    for blend in BLENDS:
        assert np.array_equal(lists[blend], expected[blend]), blend
    # The customer left with 5 items goes the full way on every blend; nearly every other one not.
    assert len(full) >= len(BLENDS) and sum(full) < 0.1 * 64 * len(BLENDS)


def test_a_blend_without_one_of_its_parts_ranks_as_on_every_item():
    scorer, als, knn, excluded = chunk(4)
    for kept_als, kept_knn in ((als, None), (None, knn), (None, None)):
        lists = rank_blends(BLENDS, kept_als, kept_knn, scorer.popularity, excluded, K, True)
        expected = on_every_item(scorer, kept_als, kept_knn, excluded)
        assert all(np.array_equal(lists[blend], expected[blend]) for blend in BLENDS)


def test_a_small_catalogue_is_ranked_on_every_item():
    scorer, als, knn, excluded = chunk(5, items=100)
    lists = rank_blends(BLENDS, als, knn, scorer.popularity, excluded, K, True)
    expected = on_every_item(scorer, als, knn, excluded)
    assert all(np.array_equal(lists[blend], expected[blend]) for blend in BLENDS)


def test_an_item_near_the_top_of_every_part_but_at_the_top_of_none_still_makes_the_list():
    # Per part, 64 items far ahead of the rest on that part alone and far behind on the others;
    # one item just behind them on every part, which every blend of two or more parts puts first.
    rows, items = 4, 1000
    als = np.full((rows, items), -1.0, np.float32)
    knn = np.full((rows, items), -1.0, np.float32)
    popularity = np.full(items, -1.0, np.float32)
    als[:, :64] = knn[:, 64:128] = 5.0
    popularity[128:192] = 5.0
    als[:, 500] = knn[:, 500] = popularity[500] = 4.0
    scorer, _, _, _ = chunk(6, rows=rows, items=items)
    scorer.popularity = popularity
    excluded = coo_matrix((rows, items), dtype=np.float32)
    lists = rank_blends(BLENDS, als, knn, popularity, excluded, K, True)
    expected = on_every_item(scorer, als, knn, excluded)
    assert all(np.array_equal(lists[blend], expected[blend]) for blend in BLENDS)
    assert lists[BLENDS[7]][0, 0] == 500  # als + knn + popularity


def test_popularity_in_double_precision_ranks_as_on_every_item():
    # The bound is summed in the popularity's own precision, as the cells are: rounded to float32
    # first, it sat below column 164's score, which then never made the list.
    eps = float(np.finfo(np.float32).eps)
    popularity = np.full(300, -10.0)
    popularity[100:165] = 1 + 1.4 * eps  # 65 tied: column 164 is not among popularity's 64
    popularity[299] = 1.0
    als = np.full((1, 300), -10.0, np.float32)
    als[0, :64] = als[0, 164] = 1.0  # 65 tied: column 164 is not among ALS's 64 either
    als[0, 299] = np.float32(1 + 2 * eps)
    scorer, _, _, _ = chunk(7, rows=2, items=300)
    scorer.popularity = popularity
    excluded = coo_matrix((1, 300), dtype=np.float32)
    blend = Blend(als=1, popularity=1)
    scores = scorer.weighed(blend, als, None, 1)
    assert np.array_equal(rank_blends((blend,), als, None, popularity, excluded, 1, True)[blend], best_first(scores, 1))


def test_no_rows_or_no_places_rank_nothing():
    scorer, als, knn, excluded = chunk(8, rows=3, items=1000)
    assert all(top.shape == (3, 0) for top in rank_blends(BLENDS, als, knn, scorer.popularity, excluded, 0, True).values())
    empty = coo_matrix((0, 1000), dtype=np.float32)
    lists = rank_blends(BLENDS, als[:0], knn[:0], scorer.popularity, empty, K, True)
    assert all(top.shape == (0, K) for top in lists.values())


def test_parts_with_a_nan_are_ranked_on_every_item_as_best_first_ranks_them():
    scorer, als, knn, excluded = chunk(9, rows=8)
    als[2, 5:50] = np.nan
    lists = rank_blends(BLENDS, als, knn, scorer.popularity, excluded, K, nan_free=False)
    expected = on_every_item(scorer, als, knn, excluded)
    assert all(np.array_equal(lists[blend], expected[blend]) for blend in BLENDS)
