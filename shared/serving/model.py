"""A published model, ready to answer: fold a customer in, recommend, explain, find similar items.

The customer is scored on every request from their current history (ALS fold-in, implicit's
recalculate_user, blended with item neighbours and popularity by shared/training/hybrid.py's
Scorer, the code the evaluation ranked with), so an event ingested a second ago changes the next
answer.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from shared.events import MAX_QUANTITY
from shared.history import HistoryEvent
from shared.purchases import PurchasedItems, item_key
from shared.training.artifact import ModelArtifact
from shared.training.config import TrainingConfig
from shared.training.evaluation import top_items
from shared.training.hybrid import Blend, Scorer
from shared.training.interactions import EVENT_CODES, Interactions
from shared.training.matrix import confidence_matrix


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float


class ServingModel:
    """Serves the version's strategy: a blend (hybrid, als, knn) scored by the training's Scorer,
    or, for a popular-strategy version (no model in it), nothing personal: `personalized` is
    False and the recommender answers with the popular lists."""

    def __init__(self, version: str, artifact: ModelArtifact) -> None:
        self.version = version
        self.artifact = artifact
        # Validated when the version was trained; read as stored, so tighter bounds in a later
        # release never stop an older version from serving.
        self.config = TrainingConfig.model_construct(**{**TrainingConfig().model_dump(), **artifact.parameters})
        self.item_ids = artifact.item_ids
        self.index = {item_id: i for i, item_id in enumerate(artifact.item_ids)}
        # The bought set holds keys of ids (shared/purchases.py): keyed once per version, a
        # customer's bought items are then one probe per key they have.
        self._ids_by_key = {item_key(item_id): item_id for item_id in artifact.item_ids}
        self.strategy = artifact.strategy
        self.personalized = artifact.has_model
        # Versions before the blend: ALS alone (their parameters hold no blend).
        blend = Blend.of(artifact.parameters.get("blend")) or Blend(als=1)
        popularity = (artifact.item_popularity if artifact.item_popularity is not None
                      else np.zeros(len(self.item_ids), dtype=np.float32))
        self.scorer = Scorer(artifact.item_factors if self.personalized else np.zeros((0, 1), np.float32),
                             self.config.regularization, artifact.neighbours, popularity, blend,
                             self.config.random_seed)
        self.als = self.scorer.als
        # A request scores its customer's row, then explains the items picked from the same row:
        # the fold-in (recalculate_user) and the raw scores are computed once for both.
        self._last: tuple[csr_matrix, tuple] | None = None
        compute = self.scorer.parts

        def parts(rows: csr_matrix) -> tuple:
            last = self._last
            if last is not None and last[0] is rows:
                return last[1]
            found = compute(rows)
            self._last = (rows, found)
            return found

        self.scorer.parts = parts  # type: ignore[method-assign]

    def knows(self, item_id: str) -> bool:
        return self.als is not None and item_id in self.index

    def bought(self, purchased: Container[str]) -> set[str]:
        """The model's items among `purchased` (a bought set of keys, or any set of ids)."""
        if isinstance(purchased, PurchasedItems):
            return {self._ids_by_key[key] for key in purchased.keys if key in self._ids_by_key}
        return {item_id for item_id in self.item_ids if item_id in purchased}

    def user_row(self, history: list[HistoryEvent], now: float) -> csr_matrix:
        """The customer's confidence row, weighted exactly as in training (`interactions`)."""
        return confidence_matrix(self.interactions([history]), self.config, now, (1, len(self.item_ids)))

    def interactions(self, histories: Sequence[Sequence[HistoryEvent]]) -> Interactions:
        """The customers' events (row k: histories[k]) as training reads stored events: unknown items
        dropped, only the types it counts, each quantity within MAX_QUANTITY (a row written by hand
        may hold any). Serving's row and a campaign's rows both come from here."""
        cells = [(row, self.index[e.item_id], EVENT_CODES[e.event_type],
                  min(max(e.quantity, -MAX_QUANTITY), MAX_QUANTITY), e.timestamp)
                 for row, history in enumerate(histories) for e in history
                 if e.item_id in self.index and e.event_type in EVENT_CODES]
        users, items, codes, quantities, times = zip(*cells) if cells else ((), (), (), (), ())
        return Interactions(
            user_ids=[str(n) for n in range(len(histories))], item_ids=self.item_ids,
            users=np.array(users, dtype=np.int32), items=np.array(items, dtype=np.int32),
            event_codes=np.array(codes, dtype=np.int8), quantities=np.array(quantities, dtype=np.float32),
            timestamps=np.array(times, dtype=np.float64),
        )

    def recommend(self, row: csr_matrix, count: int, exclude: set[str]) -> list[Scored]:
        """The best `count` items for the row, as the evaluation ranks them (the same scorer and
        the same top-N code), the excluded ones left out."""
        if row.nnz == 0 or not self.personalized:
            return []
        left_out = sorted(self.index[i] for i in exclude if i in self.index)
        count = min(count, len(self.item_ids) - len(left_out))
        if count <= 0:
            return []
        scores = self.scorer.scores(row)
        excluded = csr_matrix((np.ones(len(left_out), np.float32), (np.zeros(len(left_out), np.int32), left_out)),
                              shape=(1, len(self.item_ids)))
        ranked = top_items(lambda _: scores, np.zeros(1, dtype=np.int64), excluded, count)[0]
        return [Scored(self.item_ids[i], float(scores[0, i])) for i in ranked]

    def explain(self, row: csr_matrix, item_ids: list[str], top: int = 3) -> dict[str, list[str]]:
        """For each item, the history items that added most to its score, largest first (the
        ALS part as implicit's explain splits it, the neighbours part by similarity)."""
        if not item_ids or not self.personalized:
            return {item_id: [] for item_id in item_ids}
        found = self.scorer.contributions(row, [self.index[i] for i in item_ids])
        explained = {}
        for item_id in item_ids:
            parts = sorted(found[self.index[item_id]].items(), key=lambda part: -part[1])
            explained[item_id] = [self.item_ids[j] for j, value in parts[:top] if value > 0]
        return explained

    def rank(self, row: csr_matrix, item_ids: list[str]) -> dict[str, float]:
        known = [i for i in item_ids if i in self.index]
        if row.nnz == 0 or not known or not self.personalized:
            return {}
        scores = self.scorer.scores(row)[0]
        return {i: float(scores[self.index[i]]) for i in known}

    def similar(self, item_id: str, count: int) -> list[Scored]:
        count = min(count + 1, len(self.item_ids))
        ids, scores = self.als.similar_items(self.index[item_id], N=count)
        return [Scored(self.item_ids[i], float(s)) for i, s in zip(ids, scores, strict=True)
                if self.item_ids[i] != item_id]
