"""Every customer's newest events from stored items, straight into columns (shared/history_columns.py).

What HistoryPages (shared/storage/customers.py) answers, for the nightly run: fed the same pages
(a Scan's, or an export's lines) from several threads, each customer's newest `limit` events,
newest first, events naming no item counted within the limit and left out. Each event's fields go
into lists page by page and become arrays at the end: no HistoryEvent object is made, and numpy
parses the page's times at once. tests/unit/test_history_columns.py checks the answers are
HistoryPages' own.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import numpy as np

from shared.history_columns import Codes, Events, HistoryColumns, quantities
from shared.storage.child_process import PicklesWithoutLock
from shared.storage.history import HISTORY_LIMIT, discount_of, text_of, whole


class HistoryColumnPages(PicklesWithoutLock):
    def __init__(self, limit: int = HISTORY_LIMIT) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.users, self.items, self.types = Codes(), Codes(), Codes()
        self.channels, self.currencies, self.campaigns = Codes(), Codes(), Codes()
        self.pages: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]] = []

    def add_page(self, items: list[dict[str, Any]]) -> None:
        stamps = [item["ts"]["S"] for item in items]
        seconds = _seconds(stamps)
        named = [item for item in items if "item_id" in item]
        has_item = (np.ones(len(items), bool) if len(named) == len(items)
                    else np.fromiter(("item_id" in item for item in items), bool, len(items)))
        # The fields of the events that name an item, read in this thread; coded under the lock.
        fields = [
            [item["user_id"]["S"] for item in items],
            [item["item_id"]["S"] for item in named],
            [item["event_type"]["S"] for item in named],
            _whole_numbers([q["N"] if (q := item.get("quantity")) else "1" for item in named]),
            _texts([item.get("channel") for item in named]),
            [float(p["N"]) if (p := item.get("price")) else np.nan for item in named],
            _texts([item.get("currency") for item in named]),
            _texts([item.get("campaign_id") for item in named]),
            [discount_of(item.get("properties")) for item in named],
        ]
        with self.lock:
            self.pages.append((self.users.of(fields[0]), seconds, has_item, [
                self.items.of(fields[1]), self.types.of(fields[2]), fields[3],
                self.channels.of(fields[4]), np.array(fields[5], dtype=np.float64), self.currencies.of(fields[6]),
                self.campaigns.of(fields[7]), np.array(fields[8], dtype=bool)]))

    def extend(self, other: HistoryColumnPages) -> None:
        """Add the pages another reader read (of the files after this one's), its codes made ours."""
        with self.lock:
            users, items, types, channels, currencies, campaigns = (
                mine.of(theirs.values) for mine, theirs in ((self.users, other.users), (self.items, other.items),
                                                            (self.types, other.types), (self.channels, other.channels),
                                                            (self.currencies, other.currencies),
                                                            (self.campaigns, other.campaigns)))
            for user, seconds, has_item, columns in other.pages:
                item, kind, quantity, channel, price, currency, campaign, discount = columns
                self.pages.append((users[user], seconds, has_item, [
                    items[item], types[kind], quantity, channels[channel], price, currencies[currency],
                    campaigns[campaign], discount]))

    def finish(self) -> HistoryColumns:
        """The columns; called once, as the pages are let go while they are joined, so that no
        field lies in memory twice over (at 10M events that was the run's peak)."""
        if not self.pages:
            return HistoryColumns([], np.zeros(1, np.int64), _events([], np.zeros(0), self))
        user_parts, second_parts, has_item_parts = ([page[f] for page in self.pages] for f in range(3))
        column_parts = [[page[3][c] for page in self.pages] for c in range(8)]
        self.pages = []
        users, seconds, has_item = (_joined(parts) for parts in (user_parts, second_parts, has_item_parts))
        # Newest first within each customer; equal times in the order read, as HistoryPages' stable sorts keep them.
        order = np.lexsort((-seconds, users))
        grouped = users[order]
        first = np.searchsorted(grouped, grouped, side="left")
        kept = order[(np.arange(len(order)) - first < self.limit) & has_item[order]]
        del order, grouped, first
        # An event's place among the named events (their fields are stored for those alone).
        named_kept = (np.cumsum(has_item) - 1)[kept]
        columns = [_joined(parts)[named_kept] for parts in column_parts]
        events = _events(columns, seconds[kept], self)
        counts = np.bincount(users[kept], minlength=len(self.users.values))
        return HistoryColumns(self.users.values, np.concatenate([[0], np.cumsum(counts)]), events)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The arrays joined, and the list emptied: the parts are let go as soon as they are copied."""
    joined = np.concatenate(parts)
    parts.clear()
    return joined


def _events(columns: list[np.ndarray], seconds: np.ndarray, pages: HistoryColumnPages) -> Events:
    if not columns:
        empty = np.zeros(0, np.int32)
        columns = [empty, empty, np.zeros(0, np.int64), empty, np.zeros(0), empty, empty, np.zeros(0, bool)]
    item, kind, quantity, channel, price, currency, campaign, discount = columns
    return Events(item, kind, quantity, seconds, channel, price, currency, campaign, discount, pages.items.values,
                  pages.types.values, pages.channels.values, pages.currencies.values, pages.campaigns.values)


def _whole_numbers(numbers: list[str]) -> np.ndarray:
    """whole() of each stored number: numpy parses a page of plain integers at once; a page with
    any other (a fraction, a number past int64) goes through whole()."""
    try:
        return np.array(numbers, dtype=np.int64)
    except (ValueError, OverflowError):
        return quantities([whole(number) for number in numbers])


def _texts(values: list[dict[str, Any] | None]) -> list[Any]:
    """text_of() of each stored attribute, the usual text read in place."""
    return [text if value and (text := value.get("S")) is not None else text_of(value) for value in values]


def _seconds(stamps: list[str]) -> np.ndarray:
    """datetime.fromisoformat(s).timestamp() of each: numpy parses the times ingest writes
    (UTC, "Z") all at once, to the same float; any other form goes through datetime."""
    if all(len(s) == 27 and s[-1] == "Z" and s[10] == "T" for s in stamps):  # 2026-11-01T03:00:00.000000Z
        try:
            return np.array([s[:-1] for s in stamps], dtype="datetime64[us]").astype(np.int64) / 1e6
        except ValueError:
            pass
    return np.array([datetime.fromisoformat(s).timestamp() for s in stamps], dtype=np.float64)
