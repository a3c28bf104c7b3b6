"""Interactions gathered into compact numpy arrays while they stream in from storage.

Millions of rows must not become millions of dicts: each page of rows is reduced, as it arrives,
to numpy columns, the ids mapped to integer indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.events import EventType

EVENT_CODES = {event_type: code for code, event_type in enumerate(EventType)}


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
    # int64, a purchase's basket (the customer's order; without an order id, their UTC day), unique
    # across customers, -1 for other events: what "bought together" counts. None where no one
    # needs baskets (serving).
    baskets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    def select(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.user_ids, self.item_ids, self.users[mask], self.items[mask],
                            self.event_codes[mask], self.quantities[mask], self.timestamps[mask],
                            None if self.baskets is None else self.baskets[mask])


class InteractionLog:
    """Append-only builder of Interactions; feed it from one thread at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._user_index: dict[str, int] = {}
        self._item_index: dict[str, int] = {}
        self._basket_index: dict[tuple[int, str, str | int], int] = {}
        self._pages: list[tuple[np.ndarray, ...]] = []
        self.count = 0

    def add(self, user_id: str, item_id: str, event_type: str, quantity: float, timestamp: float,
            order_id: str | None = None) -> None:
        self.add_page([user_id], [item_id], [event_type], [quantity], [timestamp], [order_id])

    def add_page(self, user_ids: Sequence[str], item_ids: Sequence[str], event_types: Sequence[str],
                 quantities: Sequence[float], timestamps: Sequence[float],
                 order_ids: Sequence[str | None] | None = None) -> None:
        """The rows of one storage page: ids become integer indexes, the rest numpy columns."""
        if self.count + len(user_ids) > self.limit:
            raise TooManyInteractions(f"the window holds more than {self.limit:,} interactions")
        users, items, baskets = self._user_index, self._item_index, self._basket_index
        user_column = np.fromiter((users.setdefault(u, len(users)) for u in user_ids), np.int32, len(user_ids))
        seconds = np.asarray(timestamps, dtype=np.float64)
        orders = order_ids if order_ids is not None else [None] * len(user_ids)
        # Only purchases have a basket (-1 otherwise); a purchase without an order id belongs to its
        # customer's basket of that UTC day.
        purchase = EventType.PURCHASE.value
        basket_keys = (None if kind != purchase else (user, "order", order) if order is not None
                       else (user, "day", int(second // 86_400))
                       for user, kind, order, second in zip(user_column.tolist(), event_types, orders, seconds.tolist(),
                                                            strict=True))
        self._pages.append((
            user_column,
            np.fromiter((items.setdefault(i, len(items)) for i in item_ids), np.int32, len(item_ids)),
            np.fromiter((EVENT_CODES[t] for t in event_types), np.int8, len(event_types)),
            np.asarray(quantities, dtype=np.float32),
            seconds,
            np.fromiter((-1 if key is None else baskets.setdefault(key, len(baskets)) for key in basket_keys),
                        np.int64, len(user_ids)),
        ))
        self.count += len(user_ids)

    def finish(self) -> Interactions:
        columns = [np.concatenate([page[c] for page in self._pages]) if self._pages else np.zeros(0, dtype)
                   for c, dtype in enumerate((np.int32, np.int32, np.int8, np.float32, np.float64, np.int64))]
        return Interactions(list(self._user_index), list(self._item_index), *columns)
