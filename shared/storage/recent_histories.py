"""The nightly run's histories, read as serving reads them: each id's recent-activity item, or, for
an id without one, the Query serving falls back to.

A request's segments and recommendations read a customer's history from their recent-activity
item (shared/recent.py: their newest 500 events naming an item, at most 32 KB compressed), kept
at ingest; an id without one (events stored before the item existed, and none since) is read by a
Query of the by_time index (shared/storage/history.py). The nightly run reads the same: the items
from its read of the users table (a Scan, or the table's export), and the same Query for the ids
with events that have none (logged: `devstack backfill-recent-activity` starts theirs). So the
nightly segments are computed from exactly what the request path's are, and the nightly run
needs no pass over every event for them.

The items are decoded straight into columns (shared/history_columns.py), a page of customers at
a time: no event object is made, and numpy parses a page's times at once. An item that does not
decode that way is read one event at a time as serving reads it, and one that cannot be read at
all, or holds an item id, type or time that is not a text (nothing ingest writes), is read by the
Query, as an id without an item: one bad item costs no other customer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import zip_longest
from typing import Any

import numpy as np
import orjson

from shared.events import format_timestamp
from shared.history import HistoryEvent
from shared.history_columns import Codes, Events, HistoryColumns, event_fields, quantities
from shared.observability import logger
from shared.recent import RECENT_EVENTS, UNREADABLE, RecentActivity, decode, decompressed
from shared.storage.history import recent_history
from shared.users import User

PAGE = 5_000  # customers decoded into columns at a time
QUERY_THREADS = 16  # ids read by Query at once: each a round trip, waited on


def nightly_histories(user_ids: Iterable[str], recent: dict[str, bytes | None], events_table: str,
                      erasures: Mapping[str, str] | None = None) -> HistoryColumns:
    """The history of each of `user_ids` (the ids with stored events) as serving reads it: from
    its recent-activity payload in `recent` (owner -> stored events), else by Query. `recent` is
    emptied of the payloads read as they are decoded: at 10M events they are 250 MB. `erasures`:
    each erased customer's last erasure stamp; a Query leaves out the events it covers, as
    serving's does (an erasure in progress deleted the item, not yet all of the events)."""
    ids = list(dict.fromkeys(user_ids))
    without = [user for user in ids if user not in recent]
    owners = [user for user in ids if user in recent]
    columns = _Columns()
    unreadable: list[str] = []
    for start in range(0, len(owners), PAGE):
        unreadable += columns.add_page(owners[start:start + PAGE], recent)
    queried = without + unreadable
    if queried:
        logger.warning("histories read by Query: ids with events but no readable recent-activity item",
                       extra={"ids": len(queried), "unreadable_items": len(unreadable),
                              "fix": "devstack backfill-recent-activity (docs/operations.md)"})
        with ThreadPoolExecutor(max_workers=QUERY_THREADS) as pool:
            erased = erasures or {}
            columns.add_histories(queried, list(pool.map(
                lambda user: recent_history(events_table, user, erased_at=erased.get(user)), queried)))
    return columns.finish()


def erasure_stamps(users: Mapping[str, User]) -> dict[str, str]:
    """The erasure stamp of each erased customer, as the row stores it."""
    return {user_id: format_timestamp(user.erased_at) for user_id, user in users.items() if user.erased_at is not None}


def noting_erasures(items: Iterable[dict[str, Any]], erasures: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Raw items of the users table passed on, each erasure stamp noted in `erasures` on the way."""
    for item in items:
        stamp = item.get("erased_at", {}).get("S") if isinstance(item.get("erased_at"), dict) else None
        owner = item.get("user_id", {}).get("S") if isinstance(item.get("user_id"), dict) else None
        if stamp and owner:
            erasures[owner] = stamp
        yield item


class _Columns:
    """Customers' histories, added a page at a time, as HistoryColumns."""

    def __init__(self) -> None:
        self.items, self.types, self.channels = Codes(), Codes(), Codes()
        self.currencies, self.campaigns = Codes(), Codes()
        self.user_ids: list[str] = []
        self.counts: list[int] = []
        self.pages: list[list[np.ndarray]] = []  # one array per field, in HistoryEvent's order

    def add_page(self, page: list[str], recent: dict[str, bytes | None]) -> list[str]:
        """The histories in the payloads of a page of owners, each let go once read; the owners
        whose payload cannot be read."""
        unreadable: list[str] = []
        try:
            # At most RECENT_EVENTS each, as RecentActivity.history reads them.
            rows = [orjson.loads(decompressed(recent[owner]))[:RECENT_EVENTS] for owner in page]
            fields = _fields_of_rows([row for events in rows for row in events])
            self._add(page, [len(events) for events in rows], fields, texts_checked=True)
        except UNREADABLE:
            # Not the rows ingest writes: each customer as serving reads them, one at a time.
            for owner in page:
                try:
                    history = RecentActivity(tuple(decode(recent[owner]))).history()
                    self.add_histories([owner], [history])
                except UNREADABLE:
                    unreadable.append(owner)
        for owner in page:
            del recent[owner]
        return unreadable

    def add_histories(self, owners: list[str], histories: list[list[HistoryEvent]]) -> None:
        fields: list[Any] = event_fields([event for history in histories for event in history])
        fields[2], fields[3] = quantities(fields[2]), np.array(fields[3], dtype=np.float64)
        self._add(owners, [len(history) for history in histories], fields)

    def _add(self, owners: list[str], counts: list[int], fields: list[Any], texts_checked: bool = False) -> None:
        """A page: its owners, each one's count of events, and their events' fields (HistoryEvent's
        order, the quantities and times arrays). Nothing is kept of a page that fails.
        `texts_checked`: every item, type, channel, currency and campaign is known to be a text or
        None (_fields_of_rows checked them)."""
        item, kind, quantity, timestamp, channel, price, currency, campaign, discount = fields
        page = [self.items.of(item, texts_checked), self.types.of(kind, texts_checked), quantity, timestamp,
                self.channels.of(channel, texts_checked), np.array(price, dtype=np.float64),
                self.currencies.of(currency, texts_checked), self.campaigns.of(campaign, texts_checked),
                np.array(discount, dtype=bool)]
        self.user_ids += owners
        self.counts += counts
        self.pages.append(page)

    def finish(self) -> HistoryColumns:
        """The columns; called once: each field's pages are let go as soon as it is joined, so that
        no field is held twice over (at 10M events the joined columns are 450 MB)."""
        pages = self.pages or [[np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0),
                                np.zeros(0, np.int32), np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int32),
                                np.zeros(0, bool)]]
        self.pages = []
        columns = []
        for field in range(len(pages[0])):
            columns.append(np.concatenate([page[field] for page in pages]))
            for page in pages:
                page[field] = None
        item, kind, quantity, timestamp, channel, price, currency, campaign, discount = columns
        events = Events(item, kind, quantity, timestamp, channel, price, currency, campaign, discount,
                        self.items.values, self.types.values, self.channels.values, self.currencies.values,
                        self.campaigns.values)
        return HistoryColumns(self.user_ids, np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)]), events)


def _fields_of_rows(rows: list[list[Any]]) -> list[Any]:
    """The fields (HistoryEvent's order) of stored rows [ts, item, type, quantity?, channel?, price?,
    currency?, campaign?, discount?] (trailing defaults left out, as RecentEvent.row writes them);
    an error for a row ingest does not write."""
    if not rows:
        return [[], [], np.zeros(0, np.int64), np.zeros(0), [], [], [], [], []]
    lengths = set(map(len, rows))
    if not lengths <= _STORED_LENGTHS:
        raise KeyError(f"a stored row of {min(lengths - _STORED_LENGTHS)} fields")
    # Transposed in C: a row's left-out trailing fields come as _LEFT_OUT, then take their
    # defaults, in the columns that have any (a padded copy of each row was a fifth of the read).
    columns = list(zip_longest(*rows, fillvalue=_LEFT_OUT))
    columns += [()] * (len(_DEFAULT_OF) - len(columns))
    shortest = min(lengths)
    for field in range(shortest, len(_DEFAULT_OF)):
        default = _DEFAULT_OF[field]
        columns[field] = ([default if value is _LEFT_OUT else value for value in columns[field]] if columns[field]
                          else [default] * len(rows))
    stamps, item, kind, quantity, channel, price, currency, campaign, discount = columns
    # The checks of RecentEvent.from_row, a column at a time: a row serving refuses is refused here.
    if not set(map(type, stamps)) | set(map(type, item)) | set(map(type, kind)) <= {str}:
        raise TypeError("a stored row's time, item or type is not a text")
    if not set(map(type, channel)) | set(map(type, currency)) | set(map(type, campaign)) <= {str, type(None)}:
        raise TypeError("a stored row's channel, currency or campaign is not a text")
    return [item, kind, _whole(quantity), _seconds(stamps), channel, price, currency, campaign, discount]


def _whole(stored: Sequence[Any]) -> np.ndarray:
    """int() of each stored quantity, as RecentEvent.from_row reads it, a page at once. A number
    past int64 (orjson reads one as a float) is refused: the page is read as serving reads it."""
    try:
        return np.array(stored, dtype=np.int64)
    except OverflowError as error:
        raise ValueError("a quantity past int64") from error


# What RecentEvent.from_row fills in for each field a stored row leaves out (its trailing
# defaults), and the lengths of the rows it reads.
_DEFAULT_OF = (None, None, None, 1, None, None, None, None, 0)
_STORED_LENGTHS = frozenset(range(3, len(_DEFAULT_OF) + 1))
_LEFT_OUT = object()


def _seconds(stamps: Sequence[str]) -> np.ndarray:
    """datetime.fromisoformat(s).timestamp() of each: numpy parses the times ingest writes
    (UTC, "Z", 2026-11-01T03:00:00.000000Z) all at once, to the same float; any other form goes
    through datetime."""
    texts = np.array(stamps)
    if texts.dtype == np.dtype("<U27") and len(texts):
        chars = texts.view("<U1").reshape(-1, 27)
        if (chars[:, 26] == "Z").all() and (chars[:, 10] == "T").all() and (np.char.str_len(texts) == 27).all():
            try:
                return np.ascontiguousarray(chars[:, :26]).view("<U26").ravel().astype("datetime64[us]").astype(
                    np.int64) / 1e6
            except ValueError:
                pass
    return np.array([datetime.fromisoformat(s).timestamp() for s in stamps], dtype=np.float64)
