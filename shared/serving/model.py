"""A published model, ready to answer: fold a customer in, recommend, explain, find similar items.

The customer's vector is recomputed on every request from their current history (ALS fold-in,
implicit's recalculate_user), so an event ingested a second ago changes the next answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from shared.history import HistoryEvent
from shared.training.artifact import ModelArtifact
from shared.training.config import TrainingConfig
from shared.training.interactions import EVENT_CODES, Interactions
from shared.training.matrix import confidence_matrix


@dataclass(frozen=True)
class Scored:
    item_id: str
    score: float


class ServingModel:
    def __init__(self, version: str, artifact: ModelArtifact) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        self.version = version
        self.artifact = artifact
        # Validated when the version was trained; read as stored, so tighter bounds in a later
        # release never stop an older version from serving.
        self.config = TrainingConfig.model_construct(**{**TrainingConfig().model_dump(), **artifact.parameters})
        self.item_ids = artifact.item_ids
        self.index = {item_id: i for i, item_id in enumerate(artifact.item_ids)}
        self.als = AlternatingLeastSquares(factors=artifact.item_factors.shape[1],
                                           regularization=self.config.regularization, alpha=1.0,
                                           random_state=self.config.random_seed)
        self.als.item_factors = np.ascontiguousarray(artifact.item_factors, dtype=np.float32)
        self.als.user_factors = np.zeros((1, artifact.item_factors.shape[1]), dtype=np.float32)

    def knows(self, item_id: str) -> bool:
        return item_id in self.index

    def user_row(self, history: list[HistoryEvent], now: float) -> csr_matrix:
        """The customer's confidence row, weighted exactly as in training; unknown items dropped."""
        known = [e for e in history if e.item_id in self.index]
        interactions = Interactions(
            user_ids=["customer"], item_ids=self.item_ids,
            users=np.zeros(len(known), dtype=np.int32),
            items=np.array([self.index[e.item_id] for e in known], dtype=np.int32),
            event_codes=np.array([EVENT_CODES[e.event_type] for e in known], dtype=np.int8),
            quantities=np.array([e.quantity for e in known], dtype=np.float32),
            timestamps=np.array([e.timestamp for e in known], dtype=np.float64),
        )
        return confidence_matrix(interactions, self.config, now, (1, len(self.item_ids)))

    def recommend(self, row: csr_matrix, count: int, exclude: set[str]) -> list[Scored]:
        if row.nnz == 0:
            return []
        filter_items = np.array(sorted(self.index[i] for i in exclude if i in self.index), dtype=np.int32)
        count = min(count, len(self.item_ids) - len(filter_items))
        if count <= 0:
            return []
        ids, scores = self.als.recommend(0, row, N=count, filter_already_liked_items=False,
                                         filter_items=filter_items if len(filter_items) else None,
                                         recalculate_user=True)
        return [Scored(self.item_ids[i], float(s)) for i, s in zip(ids, scores, strict=True)]

    def explain(self, row: csr_matrix, item_ids: list[str], top: int = 3) -> dict[str, list[str]]:
        """For each item, the history items that contributed most to its score, largest first.

        The customer's weights (a Cholesky factor) depend only on their history: implicit returns
        them from the first call, and they are passed back so they are computed once per request.
        """
        weights, explained = None, {}
        for item_id in item_ids:
            _, contributions, weights = self.als.explain(0, row, self.index[item_id], user_weights=weights, N=top)
            explained[item_id] = [self.item_ids[i] for i, s in contributions if s > 0]
        return explained

    def rank(self, row: csr_matrix, item_ids: list[str]) -> dict[str, float]:
        vector = self.als.recalculate_user(0, row) if row.nnz else None
        known = [i for i in item_ids if i in self.index]
        if vector is None or not known:
            return {}
        scores = self.als.item_factors[[self.index[i] for i in known]] @ np.asarray(vector).ravel()
        return dict(zip(known, map(float, scores), strict=True))

    def similar(self, item_id: str, count: int) -> list[Scored]:
        count = min(count + 1, len(self.item_ids))
        ids, scores = self.als.similar_items(self.index[item_id], N=count)
        return [Scored(self.item_ids[i], float(s)) for i, s in zip(ids, scores, strict=True)
                if self.item_ids[i] != item_id]
