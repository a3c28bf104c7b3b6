"""What the nightly read keeps for experiments and attribution: impressions and clicks that name a
recommendation, and purchases. The Scan path keeps them from the same pages as training and
segments (no read of its own); the export path reads them from the events export after training
(outcomes_of_chain, in a module of its own so that the child process that runs it imports little)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any

from shared.events import CALENDAR_END, EventType
from shared.observability import logger
from shared.experiments.attribution import Purchase, Touch

if TYPE_CHECKING:
    from shared.storage.exports import Export

# What the read needs of an event beyond history's fields.
OUTCOME_FIELDS = ("recommendation_id", "items", "order_id")
_IMPRESSION, _CLICK, _PURCHASE = EventType.IMPRESSION.value, EventType.CLICK.value, EventType.PURCHASE.value
# An export's line of an event that can be an outcome holds its type as a JSON text: the lines
# without any of these (views, carts: most events) are not parsed (exports.current_items).
OUTCOME_LINES_HOLD = tuple(f'"{kind}"'.encode() for kind in (_IMPRESSION, _CLICK, _PURCHASE))
EVENT_KEY = ("user_id", "event_id")


@dataclass
class Outcomes:
    touches: list[Touch] = field(default_factory=list)
    purchases: list[Purchase] = field(default_factory=list)

    def joined(self, links: dict[str, str]) -> Outcomes:
        """The same outcomes with each visitor id linked to a customer (`links`: visitor -> customer)
        replaced by the customer's: what a visitor saw and clicked before signing in counts for the
        customer who bought."""
        if not links:
            return self
        return Outcomes([replace(t, user_id=links.get(t.user_id, t.user_id)) for t in self.touches],
                        [replace(p, user_id=links.get(p.user_id, p.user_id)) for p in self.purchases])


class OutcomePages:
    """Fed page by page (DynamoDB JSON items, a Scan's or an export's) from several threads; keeps
    events stamped at or after `since`."""

    def __init__(self, since: str) -> None:
        self.since = since
        self.outcomes = Outcomes()
        self.lock = threading.Lock()

    def add_page(self, items: list[dict[str, Any]]) -> None:
        touches: list[Touch] = []
        purchases: list[Purchase] = []
        unreadable = 0
        for item in items:
            try:
                self._add(item, touches, purchases)
            except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError):
                # An event no version of ingest writes (by hand: a number for a text, no time): it
                # costs the other outcomes nothing.
                unreadable += 1
        if unreadable:
            logger.warning("stored events that do not read as outcomes are left out", extra={"events": unreadable})
        if touches or purchases:
            with self.lock:
                self.outcomes.touches += touches
                self.outcomes.purchases += purchases

    def _add(self, item: dict[str, Any], touches: list[Touch], purchases: list[Purchase]) -> None:
        """The event's touches or purchase, added to the page's lists once the whole event has read."""
        kind, stamp = item["event_type"]["S"], item["ts"]["S"]
        if stamp < self.since or kind not in (_IMPRESSION, _CLICK, _PURCHASE):
            return
        user, at = _text(item["user_id"]["S"]), datetime.fromisoformat(stamp).timestamp()
        if at >= CALENDAR_END:  # by hand: no day of the report can hold it
            return
        if kind == _PURCHASE and "item_id" in item:
            revenue = Decimal(item.get("price", {}).get("N", "0")) * Decimal(item.get("quantity", {}).get("N", "1"))
            order = item.get("order_id", {}).get("S")
            purchases.append(Purchase(user, _text(item["item_id"]["S"]), at, float(revenue),
                                      _text(order) if order is not None else None))
        elif "recommendation_id" in item:
            rid = _text(item["recommendation_id"]["S"])
            shown = ([_text(entry["S"]) for entry in item.get("items", {}).get("L", [])] if kind == _IMPRESSION
                     else [_text(item["item_id"]["S"])] if "item_id" in item else [])
            touches += [Touch(user, item_id, kind, at, rid) for item_id in shown]


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError("not a text")
    return value


def outcomes_of_chain(chain: list[Export], outcomes_since: str, page_size: int, links: dict[str, str]) -> Outcomes:
    """The outcomes of the events table as of the chain's last export (the full export's lines
    that hold an outcome's type, as the incremental exports left them, then the events those
    added), each visitor linked to a customer (`links`) counted as the customer, as on the Scan
    path. `page_size` items are handed to the page handler at a time, as a Scan's pages are."""
    # Imported here: the functions that only record and report outcomes (admin) ship no orjson.
    from shared.storage.exports import added_items, chain_changes, current_items

    pages = OutcomePages(outcomes_since)
    if chain:
        changes, met = chain_changes(chain[1:], EVENT_KEY), set()
        files = chain[0].listed_files()
        _add_pages(pages, current_items(files, changes, EVENT_KEY, met, holding=OUTCOME_LINES_HOLD), page_size)
        _add_pages(pages, added_items(changes, met), page_size)  # after: `met` is complete
    return pages.outcomes.joined(links)


def _add_pages(pages: OutcomePages, items: Iterator[dict[str, Any]], page_size: int) -> None:
    while page := list(islice(items, page_size)):
        pages.add_page(page)
