"""Interactions gathered into compact numpy arrays while they stream in from storage.

Millions of rows must not become millions of dicts: each page of rows is reduced, as it arrives,
to numpy columns, the ids mapped to integer indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.events import EventType
from shared.history_columns import Codes

EVENT_CODES = {event_type: code for code, event_type in enumerate(EventType)}
PURCHASE_CODE = EVENT_CODES[EventType.PURCHASE]


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

    def without_users(self, user_ids: set[str]) -> Interactions:
        """Without the interactions of `user_ids`: what reading the same rows without theirs gives,
        ids coded in the order they first come (an item only they touched is gone too)."""
        gone = np.fromiter(map(user_ids.__contains__, self.user_ids), bool, len(self.user_ids))
        if not gone.any():
            return self
        return self.kept(~gone[self.users])

    def kept(self, mask: np.ndarray) -> Interactions:
        """The rows of `mask`, as reading only them gives: ids coded in the order they first come,
        and an id none of them names gone (the export path's reader knows only the ids its rows name)."""
        rows = self.select(mask)
        users, kept_users = _coded_in_order_seen(rows.users, self.user_ids)
        items, kept_items = _coded_in_order_seen(rows.items, self.item_ids)
        return Interactions(kept_users, kept_items, users, items, rows.event_codes, rows.quantities, rows.timestamps,
                            rows.baskets)

    def select(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.user_ids, self.item_ids, self.users[mask], self.items[mask],
                            self.event_codes[mask], self.quantities[mask], self.timestamps[mask],
                            None if self.baskets is None else self.baskets[mask])


def _coded_in_order_seen(codes: np.ndarray, values: list[str]) -> tuple[np.ndarray, list[str]]:
    """`codes` renumbered 0, 1, 2... in the order each first comes, and the values of the new codes."""
    present, first = np.unique(codes, return_index=True)
    order = present[np.argsort(first)]
    renumbered = np.zeros(len(values), np.int32)
    renumbered[order] = np.arange(len(order), dtype=np.int32)
    return renumbered[codes], [values[code] for code in order.tolist()]


class InteractionLog:
    """Append-only builder of Interactions; feed it from one thread at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._users, self._items = Codes(), Codes()
        self._baskets: dict[tuple[int, str, str | int], int] = {}
        self._pages: list[tuple[np.ndarray, ...]] = []
        self.count = 0

    def add(self, user_id: str, item_id: str, event_type: str, quantity: float, timestamp: float,
            order_id: str | None = None) -> None:
        self.add_page([user_id], [item_id], [event_type], [quantity], [timestamp], [order_id])

    def add_page(self, user_ids: Sequence[str], item_ids: Sequence[str], event_types: Sequence[str],
                 quantities: Sequence[float], timestamps: Sequence[float],
                 order_ids: Sequence[str | None] | None = None) -> None:
        """The rows of one storage page: ids become integer indexes (coded in C, by dicts), the rest
        numpy columns. A nightly run adds millions of rows: nothing here is Python work on every
        row but the baskets of purchases."""
        if self.count + len(user_ids) > self.limit:
            raise TooManyInteractions(f"the window holds more than {self.limit:,} interactions")
        columns = (item_ids, event_types, quantities, timestamps, *(() if order_ids is None else (order_ids,)))
        if any(len(column) != len(user_ids) for column in columns):
            raise ValueError("a page's columns must all have a value for every row")
        users = self._users.of(user_ids)
        codes = np.fromiter(map(EVENT_CODES.__getitem__, event_types), np.int8, len(event_types))
        seconds = np.asarray(timestamps, dtype=np.float64)
        self._pages.append((users, self._items.of(item_ids), codes, np.asarray(quantities, dtype=np.float32),
                            seconds, self._basket_column(users, codes, seconds, order_ids)))
        self.count += len(user_ids)

    def _basket_column(self, users: np.ndarray, codes: np.ndarray, seconds: np.ndarray,
                       order_ids: Sequence[str | None] | None) -> np.ndarray:
        """Only purchases have a basket (-1 otherwise); a purchase without an order id belongs to its
        customer's basket of that UTC day."""
        baskets = np.full(len(users), -1, np.int64)
        bought = np.flatnonzero(codes == PURCHASE_CODE)
        if len(bought):
            orders = [order_ids[row] for row in bought.tolist()] if order_ids is not None else [None] * len(bought)
            keys = [(user, "order", order) if order is not None else (user, "day", int(second // 86_400))
                    for user, order, second in zip(users[bought].tolist(), orders, seconds[bought].tolist())]
            # Tuples: a plain dict's setdefault (Codes' fast path is for texts).
            index = self._baskets
            baskets[bought] = np.fromiter((index.setdefault(key, len(index)) for key in keys), np.int64, len(keys))
        return baskets

    def finish(self) -> Interactions:
        columns = [np.concatenate([page[c] for page in self._pages]) if self._pages else np.zeros(0, dtype)
                   for c, dtype in enumerate((np.int32, np.int32, np.int8, np.float32, np.float64, np.int64))]
        return Interactions(list(self._users.values), list(self._items.values), *columns)
