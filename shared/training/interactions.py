"""Interactions gathered into compact numpy arrays while they stream in from storage.

Millions of rows must not become millions of dicts: each row is reduced to four numbers and two
ids mapped to integer indexes as it arrives, in fixed-size blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.events import EventType

EVENT_CODES = {event_type: code for code, event_type in enumerate(EventType)}
BLOCK = 65_536


class TooManyInteractions(Exception):
    pass


@dataclass(frozen=True)
class Interactions:
    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray  # int32 index into user_ids
    items: np.ndarray  # int32 index into item_ids
    event_codes: np.ndarray  # int8, EVENT_CODES
    quantities: np.ndarray  # float32
    timestamps: np.ndarray  # float64, seconds since the epoch

    def __len__(self) -> int:
        return len(self.users)

    def select(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.user_ids, self.item_ids, self.users[mask], self.items[mask],
                            self.event_codes[mask], self.quantities[mask], self.timestamps[mask])


class InteractionLog:
    """Append-only builder of Interactions; safe to feed from one thread at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._user_index: dict[str, int] = {}
        self._item_index: dict[str, int] = {}
        self._blocks: list[np.ndarray] = []
        self._current = self._new_block()
        self._filled = 0
        self.count = 0

    @staticmethod
    def _new_block() -> np.ndarray:
        return np.zeros(BLOCK, dtype=[("u", "i4"), ("i", "i4"), ("e", "i1"), ("q", "f4"), ("t", "f8")])

    def add(self, user_id: str, item_id: str, event_type: EventType, quantity: float, timestamp: float) -> None:
        if self.count >= self.limit:
            raise TooManyInteractions(f"the window holds more than {self.limit:,} interactions")
        if self._filled == BLOCK:
            self._blocks.append(self._current)
            self._current, self._filled = self._new_block(), 0
        user = self._user_index.setdefault(user_id, len(self._user_index))
        item = self._item_index.setdefault(item_id, len(self._item_index))
        self._current[self._filled] = (user, item, EVENT_CODES[event_type], quantity, timestamp)
        self._filled += 1
        self.count += 1

    def add_page(self, user_ids: Sequence[str], item_ids: Sequence[str], event_types: Sequence[EventType],
                 quantities: Sequence[float], timestamps: Sequence[float]) -> None:
        """The rows of one storage page."""
        for row in zip(user_ids, item_ids, event_types, quantities, timestamps, strict=True):
            self.add(*row)

    def finish(self) -> Interactions:
        rows = np.concatenate([*self._blocks, self._current[: self._filled]])
        return Interactions(list(self._user_index), list(self._item_index), rows["u"].copy(),
                            rows["i"].copy(), rows["e"].copy(), rows["q"].copy(), rows["t"].copy())
