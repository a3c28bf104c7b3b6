"""Every customer as the nightly segments see them. The Segments function imports this module
(through the segments service) and ships no numpy or scipy: what reads the histories into numpy
columns is imported by load_customers, which only the nightly run and the campaign job call."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.history import HistoryEvent
from shared.storage import dynamo
from shared.storage.catalog import catalog_categories, category_of, known_categories
from shared.storage.history import HISTORY_FIELDS
from shared.storage.scan import parallel_scan, scan_by_key
from shared.storage.users import all_rows_and_recent, users_from_rows
from shared.users import User

SCAN_SEGMENTS = 8
# What history_event reads of an event, and the user it belongs to.
USER_HISTORY_FIELDS = ("user_id", *HISTORY_FIELDS)


@dataclass(frozen=True)
class Customers:
    """Stored profiles, each customer's newest events, and the category of every catalog item."""

    users: dict[str, User]
    # Lists, or columns on the nightly run (shared/storage/recent_histories.py)
    histories: Mapping[str, list[HistoryEvent]]
    categories: dict[str, str]  # item_id -> category
    # When the tables stood as read: the exports' time on the export path; None, read just now.
    as_of: datetime | None = None


class EventIds:
    """The user ids of events pages, fed from several scan threads: the ids with events, whose
    histories the segments read."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.lock = threading.Lock()

    def add_page(self, items: list[dict[str, Any]]) -> None:
        page = {item["user_id"]["S"] for item in items}
        with self.lock:
            self.ids.update(page)

    def sorted(self) -> list[str]:
        return sorted(self.ids)


def scan_events(events_table: str, on_page: Any, fields: tuple[str, ...], segments: int = SCAN_SEGMENTS,
                **scan_arguments: Any) -> None:
    """One parallel pass over the events, projected to `fields` (placeholders #f0, #f1, ...)."""
    names = {f"#f{n}": field for n, field in enumerate(fields)}
    parallel_scan(events_table, segments, on_page, ProjectionExpression=", ".join(names),
                  ExpressionAttributeNames=names, **scan_arguments)


def catalog_labels(items_table: str) -> tuple[dict[str, str], dict[str, str]]:
    """item_id -> category and item_id -> title, in one scan of the catalog."""
    rows = scan_by_key(items_table, "item_id", _label, ProjectionExpression="item_id, category, #title",
                       ExpressionAttributeNames={"#title": "title"})
    return _labels_of(rows)


def catalog_labels_of(items: Iterable[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """The same from stored items (DynamoDB JSON), such as an export's."""
    return _labels_of({item["item_id"]["S"]: _label(dynamo.deserialize(item)) for item in items})


def _label(row: dict[str, Any]) -> tuple[str | None, str]:
    title = row.get("title")
    # A title that is not a text (written by hand) as none, as category_of reads a category.
    return category_of(row), title if isinstance(title, str) else ""


def _labels_of(rows: dict[str, tuple[str | None, str]]) -> tuple[dict[str, str], dict[str, str]]:
    return (known_categories({item_id: category for item_id, (category, _) in rows.items()}),
            {item_id: title for item_id, (_, title) in rows.items()})


def load_customers(events_table: str, users_table: str, items_table: str,
                   segments: int = SCAN_SEGMENTS) -> Customers:
    """Segments' inputs alone, for a run whose training read did not happen: every profile, and
    the history of each id with events as serving reads it (shared/storage/recent_histories.py)."""
    # numpy: imported here, by the nightly run and the campaign job, never by the Segments function.
    from shared.storage.recent_histories import erasure_stamps, nightly_histories

    rows, recent = all_rows_and_recent(users_table, segments)
    with_events = EventIds()
    scan_events(events_table, with_events.add_page, ("user_id",), segments)
    users = users_from_rows(rows)
    return Customers(users, nightly_histories(with_events.sorted(), recent, events_table, erasure_stamps(users)),
                     catalog_categories(items_table))
