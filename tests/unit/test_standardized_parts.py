"""A customer's ALS and kNN scores, standardized over every item from their moments: centred, over
their spread, the same numbers alone and among other customers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix, random as sparse_random

from shared.training.hybrid import Blend, Scorer, item_neighbours, zscore

ITEMS = 20_011


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    rng = np.random.default_rng(3)
    factors = rng.normal(0.05, 0.3, (ITEMS, 16)).astype(np.float32)
    bought = sparse_random(2_000, ITEMS, density=0.002, format="csr", dtype=np.float32, random_state=4)
    bought.data[:] = 1.0
    neighbours = item_neighbours(bought, 20)
    popularity = rng.zipf(1.6, ITEMS).astype(np.float32)
    return Scorer(factors, 0.1, neighbours, popularity, Blend(als=1, knn=1, popularity=1))


@pytest.fixture(scope="module")
def rows() -> csr_matrix:
    """Confidence rows: customers with a few items each, one with many, one with none."""
    rows = sparse_random(64, ITEMS, density=0.0008, format="csr", dtype=np.float32, random_state=5)
    rows.data = 1.0 + 40.0 * rows.data
    rows = rows.tolil()
    rows[1, :400] = 12.0
    rows[2, :] = 0.0
    return csr_matrix(rows)


def raw_parts(scorer: Scorer, rows: csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """The scores before standardizing, computed the plain way, in double precision."""
    factors = scorer.als.recalculate_user(np.arange(rows.shape[0]), rows).astype(np.float64)
    als = factors @ scorer.als.item_factors.T.astype(np.float64)
    weights = rows.copy()
    weights.data = np.maximum(weights.data - 1.0, 0.0)
    knn = (weights.astype(np.float64) @ scorer.neighbours.astype(np.float64)).toarray()
    return als, knn


def test_each_part_is_centred_over_its_spread_and_a_flat_row_keeps_spread_one(scorer, rows):
    (als, als_spread), (knn, knn_spread) = scorer.parts(rows)
    raw_als, raw_knn = raw_parts(scorer, rows)
    for standardized, spread, raw in ((als, als_spread, raw_als), (knn, knn_spread, raw_knn)):
        scored = np.ones(len(raw), bool)
        scored[2] = False  # no history: every score 0
        assert np.allclose(spread[scored], raw[scored].std(axis=1), rtol=1e-4)
        exact = (raw[scored] - raw[scored].mean(axis=1, keepdims=True)) / raw[scored].std(axis=1, keepdims=True)
        assert np.allclose(standardized[scored], exact, atol=1e-4)
        assert spread[2] == 1.0 and np.all(standardized[2] == 0.0)


def test_a_row_is_standardized_alike_alone_and_among_others(scorer, rows):
    """Serving scores a customer alone, the validation and the campaigns in chunks: a row's mean
    and spread must come out the same, or a near tie between two items ranks one way online and
    another in an email. The kNN part is the same to the bit; the ALS scores are BLAS's product of
    the factors, whose kernel for one row may round the last bit otherwise than for many."""
    (together_als, together_als_spread), (together_knn, together_knn_spread) = scorer.parts(rows)
    for r in (0, 1, 2, 63):
        (als, als_spread), (knn, knn_spread) = scorer.parts(rows[r])
        assert als_spread[0] == together_als_spread[r] and knn_spread[0] == together_knn_spread[r]
        assert np.array_equal(knn[0], together_knn[r])
        assert np.allclose(als[0], together_als[r], rtol=0, atol=1e-5)


def test_reasons_scale_by_the_spreads_the_scores_were_standardized_by(scorer, rows):
    als, knn = scorer.parts(rows)
    als_spread, knn_spread = scorer.spreads(rows)
    assert np.array_equal(als_spread, als[1]) and np.array_equal(knn_spread, knn[1])


@pytest.mark.parametrize("value", [0.1, 0.7, 1 / 3, 123.456])
def test_a_flat_popularity_keeps_spread_one(value):
    """Centring a flat row can leave a tiny constant; it is no spread to scale by (all popularity
    alike made every item -1 instead of 0)."""
    assert np.abs(zscore(np.full((1, 1000), value, np.float32))).max() < 1e-3


def test_scores_too_small_for_float32_to_spread_are_flat_not_infinite(rows):
    """Item factors near nothing (a shop's fit gone to almost zero): a spread float32 holds as 0
    would make every score infinite or NaN, and every list arbitrary."""
    factors = np.random.default_rng(6).normal(0.0, 1e-24, (ITEMS, 16)).astype(np.float32)
    scorer = Scorer(factors, 0.1, None, np.ones(ITEMS, np.float32), Blend(als=1))
    (als, spread), _ = scorer.parts(rows)
    assert np.isfinite(als).all() and np.all(spread == 1.0)
