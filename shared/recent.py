"""A customer's recent activity: their newest events, compact, in one item kept current at ingest.

Serving reads a customer's history on every request. Reading it from the events table is a Query
of up to 500 rows (about 95 KB, 24 strongly consistent read units); the same rows kept compact in
one item of the users table (``shared/storage/users.py``) are a GetItem of a few KB. Ingest
rewrites the item in the same transaction as the events it stores, so an event stored a moment
ago is in it, and a retried event, which fails its own put, is never added twice.

What the item holds is what serving reads of an event (``HistoryEvent``) and its time, newest
first: at most ``RECENT_EVENTS`` events, and at most ``RECENT_MAX_BYTES`` once compressed (ids
are up to 256 bytes: a customer whose ids are long keeps fewer events, never a larger item).
Events naming no item (searches) are no history and are not kept.

The standard library only: storage, ingest and serving all use it.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from shared.history import HistoryEvent
from shared.versions import next_version

# What serving reads of a customer's own history (storage/history.py's HISTORY_LIMIT is this).
RECENT_EVENTS = 500
# The newest linked visitor ids (devices used before signing in) whose history counts, and how
# many events of each: a bounded read however many devices a customer has linked. The merged
# history is cut to RECENT_EVENTS again.
LINKED_IDS_READ = 5
LINKED_HISTORY_LIMIT = 100
# The stored payload's cap: a GetItem of it costs at most 8 strongly consistent read units, and a
# rewrite at ingest at most 64 write units (2 per KB in a transaction). An item holds 400 KB.
RECENT_MAX_BYTES = 32 * 1024


@dataclass(frozen=True)
class RecentEvent:
    """One event as the recent-activity item keeps it: its fixed-width UTC stamp (string order is
    time order, as on the by_time index) and what a history row holds."""

    ts: str
    item_id: str
    event_type: str
    quantity: int = 1
    channel: str | None = None
    price: float | None = None
    currency: str | None = None
    campaign_id: str | None = None
    discount: bool = False
    # The stamp in seconds, when the stamp was read (from_row checks it is a time); else worked out.
    seconds: float | None = field(default=None, compare=False, repr=False)

    def history_event(self) -> HistoryEvent:
        seconds = self.seconds if self.seconds is not None else datetime.fromisoformat(self.ts).timestamp()
        return HistoryEvent(item_id=self.item_id, event_type=self.event_type, quantity=self.quantity,
                            timestamp=seconds, channel=self.channel,
                            price=self.price, currency=self.currency, campaign_id=self.campaign_id,
                            discount=self.discount)

    def row(self) -> list:
        row = [self.ts, self.item_id, self.event_type, self.quantity, self.channel, self.price, self.currency,
               self.campaign_id, 1 if self.discount else 0]
        while row[-1] in (None, 0) and len(row) > 4:  # trailing defaults are left out
            row.pop()
        return row

    @classmethod
    def from_row(cls, row: list) -> RecentEvent:
        """The event of a stored row; one of UNREADABLE for a row ingest does not write, so that an
        item that went wrong fails where it is read, not in what serving does with it."""
        ts, item_id, event_type, quantity, channel, price, currency, campaign, discount = (
            row + [1, None, None, None, None, 0][len(row) - 3:])
        if not (type(ts) is str and type(item_id) is str and type(event_type) is str
                and _text_or_none(channel) and _text_or_none(currency) and _text_or_none(campaign)):
            raise TypeError("a stored event's stamp, ids or names are not texts")
        return cls(ts, item_id, event_type, int(quantity), channel, float(price) if price is not None else None,
                   currency, campaign, bool(discount), datetime.fromisoformat(ts).timestamp())


def _text_or_none(value: object) -> bool:
    return value is None or type(value) is str


# What reading a stored payload that ingest did not write raises: corrupt bytes, rows of another
# shape, texts that are not times.
UNREADABLE = (zlib.error, ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError,
              RecursionError)


def recent_event(stored: dict) -> RecentEvent | None:
    """A stored event (as ingest writes it, or a Query returns it) as kept; None without an item,
    or for a row no version of ingest writes (by hand: no type, a text for a number, a time that is
    not one), which costs the customer's other events, and a batch's other customers, nothing."""
    if stored.get("item_id") is None:
        return None
    try:
        price, kind, channel = stored.get("price"), stored["event_type"], stored.get("channel")
        event = RecentEvent(  # ingest's own events hold enums: their values are what is kept
            ts=stored["ts"], item_id=stored["item_id"], event_type=getattr(kind, "value", kind),
            quantity=int(stored.get("quantity", 1)), channel=getattr(channel, "value", channel),
            price=float(price) if price is not None else None, currency=stored.get("currency"),
            campaign_id=stored.get("campaign_id"), discount=bool((stored.get("properties") or {}).get("discount")))
        return RecentEvent.from_row(event.row())  # what the item must read back as, checked once here
    except UNREADABLE:
        return None


def newest(events: Iterable[RecentEvent], limit: int | None = None) -> list[RecentEvent]:
    """Newest first, at most `limit` (RECENT_EVENTS by default; ties by stamp in a fixed order, so
    a rewrite is stable)."""
    return sorted(events, key=lambda e: (e.ts, e.item_id, e.event_type), reverse=True)[:limit or RECENT_EVENTS]


def encode(events: list[RecentEvent]) -> bytes:
    return zlib.compress(json.dumps([e.row() for e in events], separators=(",", ":")).encode(), 6)


def decode(payload: bytes) -> list[RecentEvent]:
    return [RecentEvent.from_row(row) for row in json.loads(decompressed(payload))[:RECENT_EVENTS]]


# What a payload may inflate to: RECENT_EVENTS rows of the longest ids, escaped (a control
# character is six), are about 1.6 MB, and ingest may write them. One past it (by hand: many tiny
# rows compress far below RECENT_MAX_BYTES) does not read, and its customer is read by Query,
# instead of a decode of millions of rows on every request.
MAX_INFLATED_BYTES = 4 * 1024 * 1024


def decompressed(payload: bytes) -> bytes:
    """The payload inflated; ValueError past MAX_INFLATED_BYTES or cut short (zlib.decompress's error)."""
    inflater = zlib.decompressobj()
    data = inflater.decompress(payload, MAX_INFLATED_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("a recent-activity payload that inflates past its bound")
    if not inflater.eof:
        raise ValueError("a recent-activity payload cut short")
    return data


def bounded(events: list[RecentEvent], max_bytes: int | None = None) -> tuple[list[RecentEvent], bytes]:
    """The newest of `events` (newest first already) whose encoding fits `max_bytes`
    (RECENT_MAX_BYTES by default), and that encoding: the oldest go first, in steps, until it fits."""
    max_bytes = max_bytes or RECENT_MAX_BYTES
    kept = events
    payload = encode(kept)
    while len(payload) > max_bytes and kept:
        kept = kept[:max(0, min(len(kept) - 1, int(len(kept) * max_bytes / len(payload) * 0.95)))]
        payload = encode(kept)
    return kept, payload


@dataclass(frozen=True)
class RecentActivity:
    """A customer's recent-activity item as read: their newest events, the version ingest
    conditions its rewrite on (None: no item yet), and the customer's last erasure as the item
    records it ("": none; None: not recorded, as in an item written before it was).

    What the item records is current: ingest writes it only after checking it on the profile row,
    and an erasure deletes the item, so a rewrite conditioned on the version read fails after one."""

    events: tuple[RecentEvent, ...] = ()
    version: int | None = None
    erased_at: str | None = None
    # The stored item does not read (see UNREADABLE): serving reads the customer's events instead,
    # and ingest replaces it (`version`: its stored version, if that reads).
    unreadable: bool = False

    def adding(self, added: Iterable[RecentEvent], erased_at: str) -> tuple[RecentActivity, bytes]:
        """The item after storing `added` (events just stored) with the last erasure `erased_at`
        recorded, and its payload."""
        kept, payload = bounded(newest([*self.events, *added]))
        return RecentActivity(tuple(kept), next_version(self.version), erased_at), payload

    def history(self, limit: int | None = None) -> list[HistoryEvent]:
        return [event.history_event() for event in self.events[:limit or RECENT_EVENTS]]
