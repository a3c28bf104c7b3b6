"""Every customer as the nightly segments see them, read without numpy: the Segments function
imports this module (through the segments service) and ships no numpy or scipy."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.history import HistoryEvent
from shared.storage import dynamo
from shared.storage.history import HISTORY_FIELDS, HISTORY_LIMIT, history_event_of_item
from shared.storage.scan import parallel_scan, scan_by_key
from shared.storage.users import all_user_rows, user_from_row
from shared.users import User

SCAN_SEGMENTS = 8
# What history_event reads of an event, and the user it belongs to.
USER_HISTORY_FIELDS = ("user_id", *HISTORY_FIELDS)


@dataclass(frozen=True)
class Customers:
    """Stored profiles, each customer's newest events, and the category of every catalog item."""

    users: dict[str, User]
    # Lists (HistoryPages), or columns on the nightly run (shared/history_columns.py)
    histories: Mapping[str, list[HistoryEvent]]
    categories: dict[str, str]  # item_id -> category


class HistoryPages:
    """Each customer's newest `limit` events, as recent_history returns them, fed page by page
    from several scan threads. Like recent_history, events naming no item (searches) count within
    the limit but are left out of the history."""

    def __init__(self, limit: int = HISTORY_LIMIT) -> None:
        self.limit = limit
        self.histories: dict[str, list[tuple[float, HistoryEvent | None]]] = {}
        self.lock = threading.Lock()

    def add_page(self, items: list[dict[str, Any]]) -> None:
        page = [(item["user_id"]["S"], _entry(item)) for item in items]
        with self.lock:
            for user_id, entry in page:
                history = self.histories.setdefault(user_id, [])
                history.append(entry)
                if len(history) >= 2 * self.limit:
                    # Trimmed as it grows: a customer with a long past holds at most twice the limit.
                    history.sort(key=lambda e: -e[0])
                    del history[self.limit:]

    def finish(self) -> dict[str, list[HistoryEvent]]:
        return {user: [event for _, event in sorted(entries, key=lambda e: -e[0])[:self.limit] if event is not None]
                for user, entries in self.histories.items()}


def _entry(item: dict[str, Any]) -> tuple[float, HistoryEvent | None]:
    """An event's time, and its history row (None for an event naming no item, such as a search)."""
    if "item_id" in item:
        event = history_event_of_item(item)
        return event.timestamp, event
    return datetime.fromisoformat(item["ts"]["S"]).timestamp(), None


def scan_events(events_table: str, on_page: Any, fields: tuple[str, ...], segments: int = SCAN_SEGMENTS,
                **scan_arguments: Any) -> None:
    """One parallel pass over the events, projected to `fields` (placeholders #f0, #f1, ...)."""
    names = {f"#f{n}": field for n, field in enumerate(fields)}
    parallel_scan(events_table, segments, on_page, ProjectionExpression=", ".join(names),
                  ExpressionAttributeNames=names, **scan_arguments)


def catalog_categories(items_table: str) -> dict[str, str]:
    return scan_by_key(items_table, "item_id", lambda row: row["category"], ProjectionExpression="item_id, category")


def catalog_labels(items_table: str) -> tuple[dict[str, str], dict[str, str]]:
    """item_id -> category and item_id -> title, in one scan of the catalog."""
    rows = scan_by_key(items_table, "item_id", _label, ProjectionExpression="item_id, category, #title",
                       ExpressionAttributeNames={"#title": "title"})
    return _labels_of(rows)


def catalog_labels_of(items: Iterable[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """The same from stored items (DynamoDB JSON), such as an export's."""
    return _labels_of({item["item_id"]["S"]: _label(dynamo.deserialize(item)) for item in items})


def _label(row: dict[str, Any]) -> tuple[str, str]:
    return row["category"], row.get("title", "")


def _labels_of(rows: dict[str, tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    return ({item_id: category for item_id, (category, _) in rows.items()},
            {item_id: title for item_id, (_, title) in rows.items()})


def load_customers(events_table: str, users_table: str, items_table: str,
                   segments: int = SCAN_SEGMENTS) -> Customers:
    """Segments' inputs alone, for a run whose training read did not happen."""
    users = {user_id: user_from_row(row) for user_id, row in all_user_rows(users_table, segments).items()}
    histories = HistoryPages()
    scan_events(events_table, histories.add_page, USER_HISTORY_FIELDS, segments)
    return Customers(users, histories.finish(), catalog_categories(items_table))
