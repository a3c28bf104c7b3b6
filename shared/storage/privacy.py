"""A customer's rights over their data: consent, access (export) and erasure.

Erasure first replaces the customer's row by a suppression record (``erased_at``, and their
objections if they had any: each purpose withdrawn, with when, where, which text and who recorded
it; GDPR allows keeping what is needed to honour an objection), then deletes their
events and segment memberships. Ingest checks that record in the same transaction as every
event it stores, so an event stamped before the erasure can never come back, even from a request
already under way. Deleting runs within the function's time; what is left is finished by the
scheduled sweep (or by erasing again), and the record says whether the erasure is complete.

Every consent change is kept in the customer's consent history (shared/storage/users.py), which
export shows and erasure deletes (the suppression record keeps the objections, the proof needed).
Withdrawing profiling ends the customer's behavioural segment memberships at once.

A customer's linked visitor ids (devices used before signing in) are theirs too: export pages
through their events after the customer's own, and erasure erases them with the customer. Every
suppression record is written before any deleting starts, so the sweep finds each one unfinished.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from boto3.dynamodb.types import Binary

from shared.consent import Consent, ConsentHistory, ConsentUpdate, Purpose, Recorder
from shared.errors import DomainError
from shared.events import UNKNOWN_ERASURE, format_timestamp
from shared.segments.families import needs_consent
from shared.storage import dynamo
from shared.storage.segments import SegmentStore
from shared.storage.users import COMPLETE, IN_PROGRESS, UserStore, erasure_read, linked_visitors, user_from_row

# An export page holds at most this much JSON, far under Lambda's 6 MB response limit.
EXPORT_PAGE_BYTES = 2_000_000
EXPORT_QUERY_LIMIT = 5000  # DynamoDB returns at most 1 MB a page whatever this says
# Erasure deletes a page of keys at a time and checks the clock between pages.
ERASE_KEYS_PER_PAGE = 5000
DELETE_THREADS = 8


@dataclass
class Erasure:
    user_id: str
    erased_at: str
    status: str = IN_PROGRESS
    erased: dict[str, int] = field(default_factory=lambda: {"events": 0, "segment_memberships": 0})
    objections_kept: list[str] = field(default_factory=list)  # the purposes withdrawn, kept as proof
    linked_visitors: list[str] = field(default_factory=list)


class PrivacyStore:
    def __init__(self, events_table: str, users_table: str, segments_table: str) -> None:
        self.events_table = events_table
        self.users = UserStore(users_table)
        self.segments = SegmentStore(segments_table)

    def set_consent(self, user_id: str, update: ConsentUpdate, recorder: Recorder) -> Consent:
        """Record the purposes sent; profiling withdrawn ends the behavioural memberships now, the
        customer's and their linked visitor ids' (the nightly run lists those as members of their own)."""
        row = self.users.set_consent(user_id, update, recorder)
        consent = user_from_row(row).consent
        if Purpose.PROFILING in update.updates() and not consent.granted(Purpose.PROFILING):
            for owner in dict.fromkeys([user_id, *linked_visitors(row)]):
                self.segments.end_memberships(owner, needs_consent)
        return consent

    def consent(self, user_id: str) -> tuple[Consent, ConsentHistory]:
        row = self.users.row(user_id)
        consent = user_from_row(row).consent if row else Consent()
        return consent, self.users.consent_history(user_id)

    def export(self, user_id: str, cursor: str | None = None) -> dict[str, Any]:
        """The profile, the consent with its history, segment memberships, what is kept from the
        events (the customer's and each linked visitor id's) and a page of events (next_cursor for
        the rest): the customer's own, then each linked visitor id's, oldest link
        first (each event names its user_id). A link only ever adds an id, newest first in the
        profile: one made while the pages are read is read last, and none is skipped or read twice."""
        profile = self.users.row(user_id)
        # Each id once (a list written by hand may repeat one): a repeated id would page its events
        # again and again, and its cursor name its first place each time, so the pages would never end.
        owners = list(dict.fromkeys([user_id, *reversed(linked_visitors(profile))]))
        place, start = _export_position(dynamo.decode_cursor(cursor) if cursor else None, owners)
        events, last = self._events_page(owners[place], start)
        if last is not None:
            next_cursor = _export_cursor(owners, place, last)
        else:
            next_cursor = _export_cursor(owners, place + 1, "") if place + 1 < len(owners) else None
        consent = user_from_row(profile).consent if profile else Consent()
        # A linked visitor's memberships are the customer's, as their events are: the erasure ends them too.
        runs = self.segments.run_records()  # read once for the customer and each linked id
        memberships = [{"user_id": owner, **membership} for owner in owners
                       for membership in self.segments.memberships(owner, runs)]
        return {"user_id": user_id, "profile": as_json(profile), "consent": consent,
                "consent_history": self.users.consent_history(user_id),
                "segment_memberships": as_json(memberships),
                "derived": self._derived(user_id),
                # A linked visitor's bought set and recent activity are held about the customer too.
                "linked_derived": [{"user_id": visitor, **self._derived(visitor)} for visitor in owners[1:]],
                "events": events, "next_cursor": next_cursor}

    def _derived(self, user_id: str) -> dict[str, Any]:
        """What is kept from the customer's events to serve them fast: their bought set (one-way
        keys of the items bought and orders counted) and their recent-activity item (copies of
        their newest events, which the export lists among the events)."""
        bought = self.users.purchase_keys(user_id)
        recent = self.users.recent_activity(user_id)
        return {"bought_set": None if bought is None else {
                    "items": len(bought.items), "orders": len(bought.orders),
                    "items_truncated": bought.items_truncated, "orders_truncated": bought.orders_truncated},
                "recent_activity": None if recent is None else {
                    "events": len(recent.events), "unreadable": recent.unreadable}}

    def erase(self, user_id: str, seconds_left: Callable[[], float]) -> Erasure:
        """Suppress, then delete while `seconds_left()` is positive. Calling again erases again.
        The customer's linked visitor ids go with them."""
        erased_at = format_timestamp(datetime.now(timezone.utc))
        # Every record first, the customer's naming the visitors (from the profile, or from the
        # suppression record of an erasure a fault interrupted, read and replaced together: a link
        # made meanwhile is named, or refused once the record says in progress): the sweep or a
        # retry then finishes whatever is left.
        kept, linked = self.users.suppress(user_id, erased_at, IN_PROGRESS, names_links=True, keeps_link=True)
        erasures = [Erasure(owner, erased_at) for owner in [user_id, *linked]]
        erasures[0].objections_kept = kept
        for erasure in erasures[1:]:
            erasure.objections_kept = self.users.suppress(erasure.user_id, erased_at, IN_PROGRESS).objections_kept
        # The visitors' events first: the customer's record says complete only after them.
        for erasure in [*erasures[1:], erasures[0]]:
            self.segments.note_erasure(erasure.user_id)
            erasure.erased["segment_memberships"] = self.segments.end_memberships(erasure.user_id, lambda _: True)
            self._delete_events(erasure, seconds_left)
        return self._with_visitors(erasures[0], linked, erasures[1:])

    def pending_erasures(self) -> list[str]:
        """Customers whose erasure ran out of time (a filtered Scan: the sweep, never a request)."""
        return self.users.with_erasure_status(IN_PROGRESS)

    def finish(self, user_id: str, seconds_left: Callable[[], float]) -> Erasure | None:
        """Go on with an erasure that ran out of time, as of its own time: events the customer
        sent after it are theirs again and stay. None when there is none to finish."""
        row = self.users.row(user_id) or {}
        if row.get("erasure_status") != IN_PROGRESS:
            return None
        linked = [visitor for visitor in linked_visitors(row) if visitor != user_id]
        visitors = []
        for visitor in linked:  # first, as erase() does; a visitor's own links are not followed
            visitor_row = self.users.row(visitor) or {}
            if "erasure_status" not in visitor_row:  # a fault came between the customer's record and this one
                stamp = erasure_read(row.get("erased_at"))
                if stamp in (None, "", UNKNOWN_ERASURE):  # not a stamp that would refuse its every event
                    stamp = format_timestamp(datetime.now(timezone.utc))
                self.users.suppress(visitor, stamp, IN_PROGRESS)
                visitor_row = {"erased_at": stamp, "erasure_status": IN_PROGRESS}
            visitors.append(self._finish_own(visitor, visitor_row, seconds_left))
        return self._with_visitors(self._finish_own(user_id, row, seconds_left), linked, visitors)

    def _finish_own(self, user_id: str, row: dict[str, Any], seconds_left: Callable[[], float]) -> Erasure:
        """The erasure of this id's own events and memberships, as its record says."""
        # A stamp that does not read is taken as later than any event: every event goes.
        erasure = Erasure(user_id, erasure_read(row.get("erased_at")) or UNKNOWN_ERASURE,
                          objections_kept=list(row.get("consent") or {}))
        if row.get("erasure_status") != IN_PROGRESS:
            erasure.status = COMPLETE
            return erasure
        self.segments.note_erasure(user_id)  # again: for the runs that read them since erase() noted it
        erasure.erased["segment_memberships"] = self.segments.end_memberships(user_id, lambda _: True)
        return self._delete_events(erasure, seconds_left)

    def _with_visitors(self, customer: Erasure, linked: list[str], visitors: list[Erasure]) -> Erasure:
        """The customer's erasure with their visitors': complete when all are. Until then the
        customer's record stays in progress and names them (the sweep comes back to it); then it
        forgets them."""
        own_complete = customer.status == COMPLETE
        customer.linked_visitors = linked
        for visitor in visitors:
            customer.erased = {k: v + visitor.erased[k] for k, v in customer.erased.items()}
            if visitor.status != COMPLETE:
                customer.status = IN_PROGRESS
        if linked and customer.status == COMPLETE:
            self.users.forget_links(customer.user_id, linked)
        elif linked and own_complete:
            self.users.set_erasure_status(customer.user_id, IN_PROGRESS)
        return customer

    def _delete_events(self, erasure: Erasure, seconds_left: Callable[[], float]) -> Erasure:
        start: dict[str, Any] | None = None
        while seconds_left() > 0:
            keys, start = self._event_keys(erasure, start)
            dynamo.batch_delete(self.events_table, keys, threads=DELETE_THREADS)
            erasure.erased["events"] += len(keys)
            if start is None:
                erasure.status = COMPLETE
                break
        self.users.set_erasure_status(erasure.user_id, erasure.status)
        return erasure

    def _event_keys(self, erasure: Erasure, start: dict[str, Any] | None
                    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """A page of keys of the events the erasure covers: every event stored before it, whatever
        its stamp, and any stamped before it; and where the next page starts (None: the last)."""
        request: dict[str, Any] = {
            "TableName": self.events_table, "ConsistentRead": True, "Limit": ERASE_KEYS_PER_PAGE,
            "ProjectionExpression": "user_id, event_id", "KeyConditionExpression": "user_id = :user",
            "FilterExpression": "ingested_at < :at OR ts < :at",
            "ExpressionAttributeValues": dynamo.serialize({":user": erasure.user_id, ":at": erasure.erased_at})}
        if start:
            request["ExclusiveStartKey"] = start
        with dynamo.aws_faults("read events"):
            response = dynamo.client().query(**request)
        return [dynamo.deserialize(row) for row in response.get("Items", [])], response.get("LastEvaluatedKey")

    def _events_page(self, user_id: str, start: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the user's events, and the last event_id read when more follow."""
        request: dict[str, Any] = {"TableName": self.events_table, "ConsistentRead": True,
                                   "Limit": EXPORT_QUERY_LIMIT, "KeyConditionExpression": "user_id = :user",
                                   "ExpressionAttributeValues": dynamo.serialize({":user": user_id})}
        if start is not None:
            request["ExclusiveStartKey"] = dynamo.serialize({"user_id": user_id, "event_id": start})
        with dynamo.aws_faults("read events"):
            response = dynamo.client().query(**request)
        events: list[dict[str, Any]] = []
        size = 0
        for row in response.get("Items", []):
            event = as_json(dynamo.deserialize(row))
            size += len(json.dumps(event, default=str))
            if events and size > EXPORT_PAGE_BYTES:  # cut here; the next page starts after the last one kept
                return events, events[-1]["event_id"]
            events.append(event)
        last = response.get("LastEvaluatedKey")
        return events, dynamo.deserialize(last)["event_id"] if last else None


# An export cursor: the last event_id read, as before linked ids existed (the customer's own
# events); for a linked id's events, that id and NUL first (ids hold no NUL). The id, not its
# place: a link made meanwhile moves the places.
def _export_cursor(owners: list[str], place: int, event_id: str) -> str:
    return dynamo.encode_cursor(event_id if place == 0 else f"\x00{owners[place]}\x00{event_id}")


def _export_position(key: str | None, owners: list[str]) -> tuple[int, str | None]:
    """(the place among `owners` of the id the cursor names, the event id to start after)."""
    if key is None:
        return 0, None
    if not key.startswith("\x00"):
        if not key:  # no event id is empty (DynamoDB refuses an empty key)
            raise DomainError("cursor is not one this API returned", field="cursor")
        return 0, key
    _, linked_id, event_id = (key.split("\x00") + ["", ""])[:3]
    if linked_id not in owners[1:]:  # an erasure forgot the links meanwhile
        raise DomainError("cursor is not one this API returned (or the linked ids changed)", field="cursor")
    return owners.index(linked_id, 1), event_id or None


def as_json(value: Any) -> Any:
    """A stored value as JSON can show it, whole: a binary value (B, BS: no request writes one,
    another tool or a hand may) as its base64 text, a set as a list. An export holds everything
    kept of the customer, so nothing is left out."""
    if isinstance(value, Binary):
        value = value.value
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((as_json(item) for item in value), key=str)
    return value
