"""Who should hear about an item: the customers most likely to want it, best first.

Two kinds of evidence, in two tiers, because their scores are not on one scale:
1. the model: for an item the active version knows, each customer's blended score of it (the
   served Scorer, on the customer's current history; z-scaled per customer, so comparable across
   customers). Only customers for whom it ranks among their top `MODEL_RANK_LIMIT` items count:
   a customer whose list the item would not reach is not "likely to want it".
2. category affinity: the share of the customer's purchases in the item's category, or a declared
   interest named like the category. This is how a new item, which no model has seen, finds its
   customers; it also follows the model's tier for a known item.
Customers who already bought the item are left out, as are those the job found unreachable
(consent, contact cap: shared/campaigns/job.py) before the audience is ranked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from shared.campaigns.batch import BLOCK, BatchRecommender
from shared.catalog import Item
from shared.serving import reasons
from shared.serving.recommender import kinds_by_item
from shared.training import interests
from shared.users import may_personalize

MODEL_RANK_LIMIT = 50


@dataclass(frozen=True)
class AudienceMember:
    user_id: str
    score: float
    evidence: str  # "model" or "category"
    reason: str


def item_audience(batch: BatchRecommender, item: Item, user_ids: Sequence[str], size: int,
                  now: datetime) -> list[AudienceMember]:
    """At most `size` customers of `user_ids`, the model's tier first, each tier best first."""
    shop, model = batch.shop, batch.model
    bought = {u for u in user_ids if any(e.item_id == item.item_id and e.event_type == "purchase"
                                         for e in shop.history(u))}
    candidates = [u for u in user_ids if u not in bought]
    by_model: list[AudienceMember] = []
    if batch.scoring and model is not None and item.item_id in model.index:
        column = model.index[item.item_id]
        personal = [u for u in candidates if may_personalize(shop.profiles.get(u))]
        for start in range(0, len(personal), BLOCK):
            block = personal[start:start + BLOCK]
            histories = [shop.history(u) for u in block]
            rows = batch.rows(histories, now.timestamp())
            usable = np.flatnonzero(np.diff(rows.indptr) > 0)
            if len(usable) == 0:
                continue
            scored_rows = rows[usable]
            scores, als_spread, knn_spread = model.scorer.scores_and_spreads(scored_rows)
            own = scores[:, column]
            rank = (scores > own[:, None]).sum(axis=1)
            likely = set(np.flatnonzero(rank < MODEL_RANK_LIMIT).tolist())
            tops = batch.strongest_contributors(scored_rows, [[column] if k in likely else [] for k in range(len(usable))],
                                                als_spread, knn_spread)
            for k in sorted(likely):
                history = histories[usable[k]]
                top = tops[k][0]
                kinds = kinds_by_item(history).get(top, set()) if top else set()
                title = shop.catalog.items[top].title if top in shop.catalog.items else (top or "")
                by_model.append(AudienceMember(block[usable[k]], round(float(own[k]), 6), "model",
                                               reasons.history_text(item.item_id, top, kinds, title)))
    by_model.sort(key=lambda m: -m.score)
    chosen = {m.user_id for m in by_model}
    by_category = [m for m in (_affinity(batch, u, item) for u in candidates if u not in chosen) if m is not None]
    by_category.sort(key=lambda m: (-m.score, m.user_id))
    return (by_model + by_category)[:size]


def _affinity(batch: BatchRecommender, user_id: str, item: Item) -> AudienceMember | None:
    """The share of the customer's purchases in the item's category (declared interest: at least 0.5)."""
    profile = batch.shop.profiles.get(user_id)
    if not may_personalize(profile):
        return None
    catalog = batch.shop.catalog.items
    purchases = Counter(catalog[e.item_id].category for e in batch.shop.history(user_id)
                        if e.event_type == "purchase" and e.item_id in catalog)
    share = purchases[item.category] / sum(purchases.values()) if purchases else 0.0
    declared = {key: text for key, text in interests.declared(profile.attributes if profile else {})}
    interest = declared.get(interests.normalise(item.category))
    if interest is not None and share < 0.5:
        return AudienceMember(user_id, 0.5, "category", reasons.interested_in(interest).text)
    if share > 0:
        return AudienceMember(user_id, round(share, 4), "category", reasons.new_in_category(item.category).text)
    return None
