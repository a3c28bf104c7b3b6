"""A customer's recent events, newest first: from their recent-activity item (one strongly
consistent GetItem of a few KB, kept at ingest: shared/recent.py), or, for an id that has none yet
(events stored before it existed), from one strongly consistent Query of the by_time LSI.

History is about items: events stored without an item_id (searches) are left out; on the Query
they count within the limit read."""

from __future__ import annotations

import threading
from datetime import datetime

from shared.history import HistoryEvent
from shared.observability import logger
from shared.purchases import PurchasedItems
from shared.recent import (LINKED_HISTORY_LIMIT, LINKED_IDS_READ, RECENT_EVENTS, RecentActivity, RecentEvent, newest,
                           recent_event)
from shared.storage import dynamo
from shared.storage.users import (CustomerItems, consent_of, customer_items, erasure_read, purchased_items,
                                  read_recent, user_from_row)
from shared.users import User

# Enough history to know a customer's taste; what the recent-activity item keeps.
HISTORY_LIMIT = RECENT_EVENTS
# What history_event reads of a stored event.
HISTORY_FIELDS = ("item_id", "event_type", "quantity", "ts", "channel", "price", "currency", "campaign_id", "properties")


def recent_history(events_table: str, user_id: str, limit: int = HISTORY_LIMIT,
                   erased_at: str | None = None) -> list[HistoryEvent]:
    """`erased_at`: the customer's last erasure, whose deletion of events may still be under way:
    the events it covers are left out (after_erasure)."""
    rows = _newest_rows(events_table, user_id, limit, erased_at)
    events = [history_event(row) for row in after_erasure(rows, erased_at) if "item_id" in row]
    readable = [event for event in events if event is not None]
    if len(readable) < len(events):
        logger.warning("stored events that do not read as history are left out",
                       extra={"events": len(events) - len(readable)})
    return readable


def _newest_rows(events_table: str, user_id: str, limit: int, erased_at: str | None) -> list[dict]:
    fields = (*HISTORY_FIELDS, "ingested_at") if erased_at else HISTORY_FIELDS
    with dynamo.aws_faults("read history"):
        response = dynamo.client().query(
            TableName=events_table, IndexName="by_time", ScanIndexForward=False, Limit=limit,
            ConsistentRead=True,  # an event stored a moment ago must count
            KeyConditionExpression="user_id = :user",
            ProjectionExpression=", ".join(fields),
            ExpressionAttributeValues=dynamo.serialize({":user": user_id}),
        )
    return [dynamo.deserialize(row) for row in response.get("Items", [])]


def after_erasure(rows: list[dict], erased_at: str | None) -> list[dict]:
    """The stored events an erasure at `erased_at` does not cover: stamped and stored after it.
    Its deletion of the others may still be under way (a long history is deleted over several
    invocations), and a request meanwhile must not use them."""
    if not erased_at:
        return rows
    return [row for row in rows
            if str(row.get("ts", "")) >= erased_at and str(row.get("ingested_at", "")) >= erased_at]


def history_event(row: dict) -> HistoryEvent | None:
    """A stored event with an item_id as a history row; an event without one (a search) is no
    history row, and its readers leave it out before calling this. None for an event no version of
    ingest writes (by hand: a time that is not one, a number for a text): it costs the customer's
    other events nothing."""
    try:
        event = HistoryEvent(
            item_id=row["item_id"], event_type=row["event_type"], quantity=int(row.get("quantity", 1)),
            timestamp=datetime.fromisoformat(row["ts"]).timestamp(), channel=row.get("channel"),
            price=float(row["price"]) if "price" in row else None, currency=row.get("currency"),
            campaign_id=row.get("campaign_id"), discount=bool((row.get("properties") or {}).get("discount")),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError):
        return None
    texts = (event.item_id, event.event_type,
             *(t for t in (event.channel, event.currency, event.campaign_id) if t is not None))
    return event if all(type(text) is str for text in texts) else None



def recent_history_of(events_table: str, user_ids: list[str], limit: int = HISTORY_LIMIT,
                      erased_at: str | None = None) -> list[HistoryEvent]:
    """The first id's recent history with that of the newest ids linked to it, newest first, at
    most `limit`, from the query of each id (the fallback of recent_activity_of)."""
    history = recent_history(events_table, user_ids[0], limit, erased_at)
    if len(user_ids) == 1:
        return history
    for linked in user_ids[1:1 + LINKED_IDS_READ]:
        history += recent_history(events_table, linked, LINKED_HISTORY_LIMIT, erased_at)
    return sorted(history, key=lambda event: -event.timestamp)[:limit]


def recent_activity_of(events_table: str, users_table: str, user_ids: list[str],
                       limit: int = HISTORY_LIMIT, known: RecentActivity | None = None,
                       erased_at: str | None = None) -> list[HistoryEvent]:
    """What recent_history_of answers, read from the ids' recent-activity items: one strongly
    consistent BatchGetItem for the customer and their newest linked ids (`known`: the customer's
    own, read already); an id without an item (nothing stored since the item was introduced, or an
    erasure deleted it: `erased_at`, the customer's, as the profile row records it), or with one
    that does not read, is read by its Query instead."""
    ids = [user_ids[0], *user_ids[1:1 + LINKED_IDS_READ]]
    wanted = ids if known is None else ids[1:]
    items = read_recent(users_table, wanted) if wanted else {}
    if known is not None:
        items[ids[0]] = known
    history: list[HistoryEvent] = []
    for place, user_id in enumerate(ids):
        most = limit if place == 0 else LINKED_HISTORY_LIMIT
        activity = items.get(user_id)
        readable = activity is not None and not activity.unreadable
        history += activity.history(most) if readable else recent_history(events_table, user_id, most, erased_at)
    if len(ids) == 1:
        return history
    return sorted(history, key=lambda event: -event.timestamp)[:limit]


def stored_recent_events(events_table: str, user_id: str, erased_at: str | None,
                         limit: int = HISTORY_LIMIT) -> list[RecentEvent]:
    """A customer's newest stored events as their recent-activity item keeps them: what ingest
    starts the item from when a customer stored events before it existed. Events an erasure at
    `erased_at` covers (stamped or stored before it; their deletion may still be under way) are
    left out."""
    rows = after_erasure(_newest_rows(events_table, user_id, limit, erased_at), erased_at)
    return newest(event for event in map(recent_event, rows) if event is not None)


class CustomerReads:
    """What serving reads of a customer, in one round trip: `profile` reads the profile row, the
    recent activity and the bought set together (customer_items), and `history` and `purchased`
    then answer for that customer from what it read. A request asks for the profile first (consent
    decides what else may be read); anything asked without it is read on its own. One request at
    a time per thread, as a Lambda instance serves."""

    def __init__(self, events_table: str, users_table: str) -> None:
        self.events_table, self.users_table = events_table, users_table
        self._local = threading.local()

    def profile(self, user_id: str) -> User | None:
        """The profile; a visitor id linked to a customer with that customer's objections (their
        consent read too, strongly consistent: what they withdrew covers the trail linked to them)."""
        read = customer_items(self.users_table, user_id)
        self._local.read = (user_id, read)
        if read.row is None:
            return None
        user = user_from_row(read.row)
        if user.linked_to is not None:
            user = user.with_objections_of(consent_of(self.users_table, user.linked_to))
        return user

    def _taken(self, user_id: str) -> CustomerItems | None:
        found = getattr(self._local, "read", None)
        return found[1] if found is not None and found[0] == user_id else None

    def history(self, user_ids: list[str]) -> list[HistoryEvent]:
        read = self._taken(user_ids[0])
        if read is None:  # not read with the profile: its items are read now
            return recent_activity_of(self.events_table, self.users_table, user_ids)
        erased_at = erasure_read(read.row.get("erased_at")) if read.row is not None else None
        # read.recent None: no item (or an erasure deleted it), which recent_activity_of reads again
        return recent_activity_of(self.events_table, self.users_table, user_ids, known=read.recent, erased_at=erased_at)

    def purchased(self, user_id: str) -> PurchasedItems:
        read = self._taken(user_id)
        return read.purchased if read is not None else purchased_items(self.users_table, user_id)
