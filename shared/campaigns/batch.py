"""Recommendations for many customers at once: what a campaign export writes, one line each.

The served model scores customers in blocks: one confidence row per customer, built from their
history exactly as serving builds it, and `Scorer.scores_and_spreads` on the whole block (the ALS
fold-in solves every row, then matrix products), as the evaluation does. The rules of the answer
stay the served ones: out-of-stock, retired and bought items are never listed (`AnswerFilter`),
at most the Mix's share of slots goes to items the customer only viewed or carted, popular items
fill a short list, and the reasons are the same texts. Customers the model cannot score (who
objected to personalization, who have no usable history, or any customer when the active
version serves popular items) get the Recommender's own answer, which needs no model scoring.

Where a line differs from GET /users/{id}/recommendations, and why:
- the reason names the history item with the largest confidence x (ALS factor similarity +
  neighbour similarity), the parts scaled as the blend scales them. Serving splits the ALS score
  exactly with implicit's explain, a Cholesky solve per recommended item: at campaign scale that
  alone would cost more than the scoring. The text is the same as online for most items
  (tests/unit/test_campaigns.py), and names what the customer did with that item, as online.
- no "new in your favourite categories" slots: new items reach customers through an item
  audience (shared/campaigns/audience.py), where the marketer decides which item to push.
- "already bought" is the purchases in the history read (the newest 500 events of the customer
  and their linked visitor ids), not the bought set kept at ingest, which is one more read per
  customer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from itertools import chain

import numpy as np
from scipy.sparse import csr_matrix

from shared.catalog import Item
from shared.history import HistoryEvent
from shared.recent import LINKED_HISTORY_LIMIT, LINKED_IDS_READ, RECENT_EVENTS
from shared.serving import reasons
from shared.serving.answers import Recommendations
from shared.serving.filters import AnswerFilter
from shared.serving.model import ServingModel
from shared.serving.recommender import SEEN, Mix, Recommender, Sources
from shared.training.evaluation import best_first
from shared.training.interactions import EVENT_CODES, Interactions
from shared.training.matrix import confidence_matrix
from shared.users import User, may_personalize

_PURCHASE = [EVENT_CODES["purchase"]]
_SEEN = [EVENT_CODES[kind] for kind in SEEN]
_NAMES = {code: str(kind) for kind, code in EVENT_CODES.items()}
_NO_KINDS: frozenset[str] = frozenset()
WORKERS = 2  # Lambda's 3,008 MB have two vCPUs
BLOCK = 1024  # customers scored together: 1,024 x 20,000 items of float32 is 80 MB
REASON_ITEMS = 3


class SnapshotCatalog:
    """The catalog read once for a job: the Recommender's Catalog, without a read per customer."""

    def __init__(self, items: dict[str, Item]) -> None:
        self.items = items
        self._newest: dict[str, list[Item]] = {}
        for item in sorted(items.values(), key=lambda i: (i.created_at is None, i.created_at), reverse=True):
            self._newest.setdefault(item.category, []).append(item)

    def details(self, item_ids: Sequence[str]) -> dict[str, Item]:
        return {item_id: self.items[item_id] for item_id in item_ids if item_id in self.items}

    def newest(self, category: str, limit: int) -> list[Item]:
        return self._newest.get(category, [])[:limit]


@dataclass(frozen=True, slots=True)
class Line:
    """One customer's line: their items with scores and reason texts (no API objects: a campaign
    writes millions of items)."""

    user_id: str
    strategy: str
    personalized: bool
    model_version: str | None
    items: list[tuple[Item, float | None, str]]  # the item, its score (None: popular), the reason

    @classmethod
    def of(cls, answer: Recommendations, catalog: dict[str, Item]) -> Line:
        return cls(answer.user_id, answer.strategy, answer.personalized, answer.model_version,
                   [(catalog[r.item_id], r.score, r.reason.text) for r in answer.items])


@dataclass(frozen=True)
class Shop:
    """Everything a job reads once: profiles, histories by id (customers' and visitors'), the catalog."""

    profiles: dict[str, User]
    histories: dict[str, list[HistoryEvent]]
    catalog: SnapshotCatalog

    def history(self, user_id: str) -> list[HistoryEvent]:
        """The customer's events and their newest linked visitor ids', newest first: as serving reads
        them (recent_activity_of), so that a customer with many devices costs a block no more."""
        profile = self.profiles.get(user_id)
        own = self.histories.get(user_id, [])[:RECENT_EVENTS]
        if not profile or not profile.linked_visitors:
            return own
        linked = (self.histories.get(i, [])[:LINKED_HISTORY_LIMIT] for i in profile.linked_visitors[:LINKED_IDS_READ])
        return sorted(chain(own, *linked), key=lambda e: -e.timestamp)[:RECENT_EVENTS]


class BatchRecommender:
    def __init__(self, model: ServingModel | None, shop: Shop, mix: Mix | None = None) -> None:
        self.model = model
        self.shop = shop
        self.mix = mix or Mix()
        self.recommender = Recommender(Sources(
            model=lambda: model, catalog=shop.catalog,
            history=lambda ids: shop.history(ids[0]), profile=shop.profiles.get), self.mix)
        self.scoring = model is not None and model.personalized
        self.factors: np.ndarray | None = None
        self._gram: np.ndarray | None = None  # Y'Y + regularization x I, once per job
        if model is not None and self.scoring:
            # Items no answer may show, whoever asks: not in the catalog, out of stock, retired.
            self.hidden = np.array([not AnswerFilter().allows(shop.catalog.items.get(i)) for i in model.item_ids])
            self.factors = model.scorer.als.item_factors if model.scorer.als is not None else None

    def recommend(self, user_ids: Sequence[str], limit: int, now: datetime) -> Iterator[Line]:
        """One line per customer, in the order given. Two blocks are scored at a time: numpy and
        BLAS release the GIL, so one block's matrix work runs beside the other's Python."""
        blocks = (user_ids[start:start + BLOCK] for start in range(0, len(user_ids), BLOCK))
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            pending: deque[Future[list[Line]]] = deque()
            for block in blocks:
                pending.append(pool.submit(self._block, block, limit, now))
                if len(pending) > WORKERS:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()

    def _block(self, user_ids: Sequence[str], limit: int, now: datetime) -> list[Line]:
        lines: dict[str, Line] = {}
        scored: list[tuple[str, list[HistoryEvent]]] = []
        known = self.model.index if self.model is not None else {}
        for user_id in user_ids:
            profile = self.shop.profiles.get(user_id)
            history = self.shop.history(user_id) if self.scoring and may_personalize(profile) else []
            if any(e.item_id in known for e in history):
                scored.append((user_id, history))
            else:  # no consent, no usable history, or no model that scores: the Recommender's answer
                lines[user_id] = Line.of(self.recommender.recommend(user_id, limit, now=now), self.shop.catalog.items)
        if scored:
            for (user_id, _), line in zip(scored, self._scored(scored, limit, now)):
                lines[user_id] = line
        return [lines[user_id] for user_id in user_ids]

    def _scored(self, customers: list[tuple[str, list[HistoryEvent]]], limit: int, now: datetime) -> list[Line]:
        model = self.model
        assert model is not None
        interactions = model.interactions([history for _, history in customers])
        shape = (len(customers), len(model.item_ids))
        rows = confidence_matrix(interactions, model.config, now.timestamp(), shape)
        scores, als_spread, knn_spread = model.scorer.scores_and_spreads(rows)
        scores[:, self.hidden] = -np.inf
        bought = _cells(interactions, _PURCHASE, shape)
        scores[bought.nonzero()] = -np.inf
        picked_rows = self._pick(scores, _cells(interactions, _SEEN, shape), limit)
        tops = self.strongest_contributors(rows, picked_rows, als_spread, knn_spread)
        catalog, item_ids = self.shop.catalog.items, model.item_ids
        kinds = _kinds(interactions, [[model.index[t] if t else -1 for t in row] for row in tops])
        picked_scores = [np.round(scores[r, picked], 6).tolist() for r, picked in enumerate(picked_rows)]
        lines = []
        for r, (user_id, _) in enumerate(customers):
            items = []
            for j, top, score in zip(picked_rows[r], tops[r], picked_scores[r]):
                title = catalog[top].title if top in catalog else (top or "")
                items.append((catalog[item_ids[j]], score,
                              reasons.history_text(item_ids[j], top, kinds.get((r, top), _NO_KINDS), title)))
            if len(items) < limit:
                profile = self.shop.profiles.get(user_id)
                already = chain((item.item_id for item, _, _ in items), (item_ids[j] for j in bought[r].indices))
                items += [(catalog[p.item_id], p.score, p.reason.text) for p in self.recommender.popular_filling(
                    limit - len(items), AnswerFilter().taking(already), profile.country if profile else None)]
            lines.append(Line(user_id, model.strategy, True, model.version, items))
        return lines

    def _pick(self, scores: np.ndarray, seen: csr_matrix, limit: int) -> list[list[int]]:
        """Each row's best `limit` showable items, at most the Mix's share of them seen before."""
        depth = min(scores.shape[1], 3 * limit + 10)
        order = best_first(scores, depth)
        showable = np.isfinite(np.take_along_axis(scores, order, axis=1))
        was_seen = np.asarray(seen[np.arange(len(order))[:, None], order].todense()) > 0
        seen_before = np.cumsum(was_seen & showable, axis=1)
        allowed = showable & (~was_seen | (seen_before <= self.mix.seen_slots(limit)))
        taken = allowed & (np.cumsum(allowed, axis=1) <= limit)
        return [row[keep].tolist() for row, keep in zip(order, taken)]

    def rows(self, histories: list[list[HistoryEvent]], now: float) -> csr_matrix:
        """The customers' confidence rows, weighted as serving weighs one (ServingModel.user_row)."""
        model = self.model
        assert model is not None
        shape = (len(histories), len(model.item_ids))
        return confidence_matrix(model.interactions(histories), model.config, now, shape)

    def strongest_contributors(self, rows: csr_matrix, picked: list[list[int]], als_spread: np.ndarray | None,
                               knn_spread: np.ndarray | None) -> list[list[str | None]]:
        """For each row and each of its picked items, the history item that adds most to it (None:
        none adds), as serving's explain finds it: the ALS part as implicit's explain splits it,
        the neighbour part by similarity, each over the row's spread as the blend scales it.

        The rows are taken in bands of history length (1, 2, 3-4, 5-8, ...), each padded to its own
        longest: padded to the block's, one customer with 500 events among 1,023 with a few took a
        block from 59 to 503 MiB. A band pads each row to less than twice its length."""
        lengths = np.diff(rows.indptr)
        bands = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
        if len(rows.indptr) < 2 or bands.min() == bands.max():
            return self._strongest_in_band(rows, picked, als_spread, knn_spread)
        found: list[list[str | None]] = [[] for _ in picked]
        for band in np.unique(bands).tolist():
            members = np.flatnonzero(bands == band)
            tops = self._strongest_in_band(rows[members], [picked[r] for r in members.tolist()],
                                           None if als_spread is None else als_spread[members],
                                           None if knn_spread is None else knn_spread[members])
            for r, top in zip(members.tolist(), tops):
                found[r] = top
        return found

    def _strongest_in_band(self, rows: csr_matrix, picked: list[list[int]], als_spread: np.ndarray | None,
                           knn_spread: np.ndarray | None) -> list[list[str | None]]:
        model = self.model
        assert model is not None
        width = max((len(p) for p in picked), default=0)
        if width == 0 or rows.nnz == 0:
            return [[None] * len(p) for p in picked]
        targets = np.full((rows.shape[0], width), -1, dtype=np.int64)
        for r, p in enumerate(picked):
            targets[r, :len(p)] = p
        wanted = np.maximum(targets, 0)
        # Each row's history entries side by side (rows x longest history), zero-padded, so every
        # row's contributions are one batched product and one argmax.
        lengths = np.diff(rows.indptr)
        owner = np.repeat(np.arange(rows.shape[0]), lengths)
        position = np.arange(rows.nnz) - rows.indptr[:-1][owner]
        longest = int(lengths.max())
        history = np.zeros((rows.shape[0], longest), dtype=np.int64)
        confidence = np.zeros((rows.shape[0], longest), dtype=np.float64)
        history[owner, position], confidence[owner, position] = rows.indices, rows.data
        parts = np.zeros((rows.shape[0], longest, width), dtype=np.float64)
        blend = model.scorer.blend
        if als_spread is not None and self.factors is not None:
            parts += blend.als * self._als_contributions(history, confidence, wanted) / als_spread[:, None, None]
        if knn_spread is not None and model.scorer.neighbours is not None:
            neighbours = model.scorer.neighbours
            similar = np.asarray(neighbours[np.repeat(history.ravel(), width), np.tile(wanted, longest).ravel()])
            weights = np.maximum(confidence - 1.0, 0.0)  # what each history item weighs (hybrid._history_weights)
            parts += (blend.knn * weights / knn_spread[:, None])[:, :, None] * similar.reshape(parts.shape)
        parts[confidence <= 0] = -np.inf  # padding
        strongest = parts.argmax(axis=1)  # (rows, width): a position in the row's history
        adds = np.take_along_axis(parts, strongest[:, None, :], axis=1)[:, 0, :] > 0
        found: list[list[str | None]] = [[None] * len(p) for p in picked]
        for r, k in zip(*(axis.tolist() for axis in np.nonzero(adds & (targets >= 0)))):
            found[r][k] = model.item_ids[history[r, strongest[r, k]]]
        return found

    def _als_contributions(self, history: np.ndarray, confidence: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """(rows, history, picked): c_j x (W_u^-1 y_i) . y_j, implicit's explain for every row at once,
        with W_u = Y'Y + regularization x I + sum over the history of (c_j - 1) y_j y_j'."""
        model = self.model
        assert model is not None and self.factors is not None and model.scorer.als is not None
        factors = self.factors
        if self._gram is None:
            wide = factors.astype(np.float64)
            self._gram = wide.T @ wide + model.scorer.als.regularization * np.eye(factors.shape[1])
        seen = factors[history]  # (rows, history, factors); padding has confidence 0
        stretch = np.where(confidence > 0, confidence - 1.0, 0.0).astype(np.float32)[:, :, None]
        # float32 products (batched BLAS is several times faster so), the solve in float64 as implicit's.
        weighted = self._gram + np.matmul((seen * stretch).transpose(0, 2, 1), seen)
        solved = np.linalg.solve(weighted, factors[wanted].transpose(0, 2, 1).astype(np.float64))
        return confidence[:, :, None] * np.matmul(seen.astype(np.float64), solved)


def _cells(interactions: Interactions, codes: list[int], shape: tuple[int, int]) -> csr_matrix:
    """1 where the row's customer had an event of these codes with the item."""
    chosen = np.isin(interactions.event_codes, codes)
    cells = csr_matrix((np.ones(int(chosen.sum()), dtype=np.float32),
                        (interactions.users[chosen], interactions.items[chosen])), shape=shape)
    cells.sum_duplicates()
    return cells


def _kinds(interactions: Interactions, tops: list[list[int]]) -> dict[tuple[int, str], set[str]]:
    """What each row's customer did with each of its top contributors: {(row, item_id): {"view", ...}}."""
    n_items = len(interactions.item_ids)
    wanted = np.array([r * n_items + j for r, row in enumerate(tops) for j in row if j >= 0], dtype=np.int64)
    keys = interactions.users.astype(np.int64) * n_items + interactions.items
    chosen = np.flatnonzero(np.isin(keys, wanted))
    found: dict[tuple[int, str], set[str]] = {}
    for r, j, code in zip(interactions.users[chosen].tolist(), interactions.items[chosen].tolist(),
                          interactions.event_codes[chosen].tolist()):
        found.setdefault((r, interactions.item_ids[j]), set()).add(_NAMES[code])
    return found
