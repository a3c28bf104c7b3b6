"""The campaign job's reasons: which history item adds most to each picked item, for a block of
customers at once (BatchRecommender.strongest_contributors)."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timezone

import numpy as np
from scipy.sparse import csr_matrix

from shared.campaigns.batch import BatchRecommender, Shop, SnapshotCatalog
from shared.catalog import Item
from shared.serving.model import ServingModel
from shared.training.artifact import ModelArtifact
from shared.training.config import TrainingConfig
from shared.training.hybrid import Blend, item_neighbours

ITEMS = 3000
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def a_batch() -> BatchRecommender:
    rng = np.random.default_rng(7)
    config = TrainingConfig()
    item_ids = [f"sku-{i}" for i in range(ITEMS)]
    bought = csr_matrix((np.ones(20_000, np.float32), (rng.integers(0, 2000, 20_000), rng.integers(0, ITEMS, 20_000))),
                        shape=(2000, ITEMS))
    blend = Blend(als=1, knn=1, popularity=0.5)
    artifact = ModelArtifact(
        item_ids=item_ids, item_factors=rng.normal(0, 0.1, (ITEMS, config.factors)).astype(np.float32),
        popular_items=item_ids[:100], parameters={**config.model_dump(mode="json"), "blend": blend.as_dict()},
        strategy=blend.strategy, item_popularity=np.asarray(bought.sum(axis=0)).ravel().astype(np.float32),
        neighbours=item_neighbours(bought, config.neighbours))
    catalog = {i: Item(item_id=i, title=i, category="c", price=10, currency="EUR", in_stock=True,
                       created_at=NOW, url=f"https://shop.example/{i}") for i in item_ids}
    return BatchRecommender(ServingModel("v1", artifact), Shop({}, {}, SnapshotCatalog(catalog)))


def block_of_rows(lengths: list[int]) -> csr_matrix:
    rng = np.random.default_rng(11)
    columns = [np.sort(rng.choice(ITEMS, n, replace=False)) for n in lengths]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    data = np.concatenate([1.0 + rng.uniform(0.5, 20.0, n) for n in lengths]).astype(np.float32)
    return csr_matrix((data, np.concatenate(columns), indptr), shape=(len(lengths), ITEMS))


def test_one_long_history_costs_a_block_no_more_than_its_own_rows_and_every_reason_is_as_alone():
    batch = a_batch()
    lengths = [3] * 1023 + [500]
    rows = block_of_rows(lengths)
    _, als_spread, knn_spread = batch.model.scorer.scores_and_spreads(rows)
    picked = [list(range(r % 50, r % 50 + 10)) for r in range(len(lengths))]
    tracemalloc.start()
    try:
        found = batch.strongest_contributors(rows, picked, als_spread, knn_spread)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Padded to the longest history, this block held arrays of 1,024 x 500 x 64 (over 450 MiB).
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"
    # Each customer's reasons are those they get scored on their own.
    for r in [0, 1, 511, 1022, 1023]:
        alone = batch.strongest_contributors(rows[r], [picked[r]], als_spread[[r]], knn_spread[[r]])
        assert found[r] == alone[0]
    assert sum(top is not None for tops in found for top in tops) > 5000
