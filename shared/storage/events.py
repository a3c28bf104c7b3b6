"""Event storage: exactly-once writes of events together with the user's purchase summary.

Each user's events go in one DynamoDB transaction: a conditional put per event
(``attribute_not_exists``: an existing ``(user_id, event_id)`` is a duplicate, not a rewrite),
the rewrite of the user's recent-activity item (their newest events, what serving reads: shared/recent.py)
guarded by its version, one update of the user's summary (with the contact ledger: messages sent, campaigns answered)
guarded by its version and, with purchases, one update of the
user's purchase keys (the items already bought, the orders already counted), guarded by its own. Either all of it is written or
none, so a retried request never counts a purchase twice, and two requests racing on the same
user never lose an update. Users are written in parallel: the work is waiting on I/O.

Erasure is final: every transaction also checks the user's row for an erasure (``erased_at``)
later than its oldest event, so an event from before an erasure can never be stored, even by a
request that was already under way when the erasure started. Such events are refused and named.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from shared.contact import changes_contacts, fold_contacts
from shared.errors import StorageUnavailable
from shared.events import Event, EventType, format_timestamp
from shared.limits import MAX_TRANSACTION_BYTES, chunks_within, stored_size
from shared.recent import RecentActivity, recent_event
from shared.storage import dynamo
from shared.storage.history import stored_recent_events
from shared.storage.users import (
    SummaryState, erased_since, not_erased_since, purchases_update, read_recent, read_summaries, recent_put,
    summary_update,
)
from shared.users import PurchaseSummary, fold_purchases

# DynamoDB allows 100 actions per transaction; three are kept for the summary update, the
# update of the customer's purchase keys (already-bought items, seen orders) and the rewrite of
# their recent activity.
EVENTS_PER_TRANSACTION = 97
TRANSACTION_ATTEMPTS = 8
SUMMARY_EVENTS = (EventType.PURCHASE, EventType.RETURN)


@dataclass
class WriteOutcome:
    stored: list[Event] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)
    erased: list[tuple[Event, str]] = field(default_factory=list)  # refused: from before this erasure


def event_item(event: Event, ingested_at: str) -> dict[str, Any]:
    item = event.model_dump(mode="python", exclude={"timestamp"}, exclude_none=True)
    if not item.get("properties"):
        item.pop("properties", None)
    item["ts"] = event.ts
    item["ingested_at"] = ingested_at
    return item


class EventStore:
    def __init__(self, events_table: str, users_table: str, concurrency: int = 16) -> None:
        self.events_table = events_table
        self.users_table = users_table
        self.concurrency = concurrency

    def write(self, events: Sequence[Event]) -> WriteOutcome:
        """Store new events, skip known ones; raise StorageUnavailable if any user failed."""
        outcome = WriteOutcome()
        by_user: dict[str, list[Event]] = {}
        seen: set[tuple[str, str]] = set()
        for event in events:
            if event.key in seen:
                outcome.duplicates.append(event)
                continue
            seen.add(event.key)
            by_user.setdefault(event.user_id, []).append(event)
        if not by_user:
            return outcome

        buying = [user for user, evs in by_user.items() if _changes_summary(evs)]
        summaries = read_summaries(self.users_table, buying)
        recent = read_recent(self.users_table, list(by_user))
        ingested_at = format_timestamp(datetime.now(timezone.utc))

        failures = 0
        workers = min(self.concurrency, len(by_user))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(self._write_user, user, evs, summaries.get(user), recent.get(user), ingested_at)
                for user, evs in by_user.items()
            ]
            for future in futures:
                try:
                    stored, duplicates, erased = future.result()
                except StorageUnavailable:
                    failures += 1
                    continue
                outcome.stored.extend(stored)
                outcome.duplicates.extend(duplicates)
                outcome.erased.extend(erased)
        if failures:
            raise StorageUnavailable(
                f"events of {failures} of {len(by_user)} users could not be stored; "
                f"{len(outcome.stored)} events were. Send the same batch again: "
                "events already stored are recognised and counted as duplicates"
            )
        return outcome

    def _write_user(
        self, user_id: str, events: list[Event], state: SummaryState | None, recent: RecentActivity | None,
        ingested_at: str,
    ) -> tuple[list[Event], list[Event], list[tuple[Event, str]]]:
        stored: list[Event] = []
        duplicates: list[Event] = []
        erased: list[tuple[Event, str]] = []
        items = [(event, event_item(event, ingested_at)) for event in events]
        for chunk in _chunks(items, EVENTS_PER_TRANSACTION, MAX_TRANSACTION_BYTES):
            chunk_stored, chunk_duplicates, chunk_erased, state, recent = self._write_chunk(
                user_id, chunk, state, recent)
            stored += chunk_stored
            duplicates += chunk_duplicates
            erased += [(event, state.erased_at) for event in chunk_erased if state and state.erased_at]
        return stored, duplicates, erased

    def _recent(self, user_id: str, state: SummaryState | None, read: bool = True
                ) -> tuple[RecentActivity, str | None]:
        """A customer's recent activity as stored (`read`: read it; otherwise it was just found
        missing), and the oldest stamp it holds when it is started here: from their stored events
        when they have some but no item yet (events stored before the item existed), so that the
        item never hides them. An erasure recorded after that stamp cancels the transaction (its
        condition), and the item is started again."""
        found = read_recent(self.users_table, [user_id]).get(user_id) if read else None
        if found is not None:
            return found, None
        erased_at = state.erased_at if state is not None else erased_since(self.users_table, [user_id]).get(user_id)
        stored = stored_recent_events(self.events_table, user_id, erased_at)
        return RecentActivity(tuple(stored)), (stored[-1].ts if stored else None)

    def _write_chunk(
        self, user_id: str, items: list[tuple[Event, dict[str, Any]]], state: SummaryState | None,
        recent: RecentActivity | None,
    ) -> tuple[list[Event], list[Event], list[Event], SummaryState | None, RecentActivity | None]:
        pending = [(event, dynamo.serialize(item)) for event, item in items]
        plain = {id(event): item for event, item in items}
        duplicates: list[Event] = []
        erased: list[Event] = []
        started_from: str | None = None  # the oldest stored event the recent item was started from
        if recent is None:  # the batch's read found none
            recent, started_from = self._recent(user_id, state, read=False)
        for delay in dynamo.backoff_delays(TRANSACTION_ATTEMPTS):
            if state is not None:
                pending, refused = state.split_erased(pending)
                erased += refused
            if not pending:
                return [], duplicates, erased, state, recent
            actions = [
                {
                    "Put": {
                        "TableName": self.events_table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(event_id)",
                    }
                }
                for _, item in pending
            ]
            new_state = state
            oldest = min(event.ts for event, _ in pending)
            if started_from is not None:  # an erasure after the events it was started from: start again
                oldest = min(oldest, started_from)
            events = [event for event, _ in pending]
            new_recent, payload = recent.adding(
                e for e in (recent_event(plain[id(event)]) for event, _ in pending) if e is not None)
            actions.append(recent_put(self.users_table, user_id, recent, new_recent, payload))
            if _changes_summary(events):
                state = state or SummaryState(PurchaseSummary(), None)
                purchases = state.purchases
                if _has_purchase(events):
                    purchases, add_items, add_orders = state.purchases.adding(events)
                    actions.append(purchases_update(
                        self.users_table, user_id, state.purchases, purchases, add_items, add_orders))
                new_state = SummaryState(
                    fold_purchases(state.summary, events, state.purchases.orders),
                    (state.version or 0) + 1,
                    state.erased_at,
                    purchases,
                    fold_contacts(state.contacts, events),
                )
                actions.append(summary_update(self.users_table, user_id, state.version, new_state, oldest,
                                              write_contacts=new_state.contacts != state.contacts))
            else:
                actions.append(not_erased_since(self.users_table, user_id, oldest))
            try:
                with dynamo.aws_faults("store events"):
                    dynamo.client().transact_write_items(TransactItems=actions)
                return [event for event, _ in pending], duplicates, erased, new_state, new_recent
            except ClientError as error:
                if dynamo.error_code(error) != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
            # One reason per action, in order: the event puts, then the user's items (the recent
            # activity's rewrite, the purchase keys' update, the profile row's update or check).
            put_reasons, user_reasons = reasons[: len(pending)], reasons[len(pending) :]
            known = {i for i, code in enumerate(put_reasons) if code == "ConditionalCheckFailed"}
            duplicates += [event for i, (event, _) in enumerate(pending) if i in known]
            pending = [entry for i, entry in enumerate(pending) if i not in known]
            if "ConditionalCheckFailed" in user_reasons:  # another request updated them, or an erasure
                state = read_summaries(self.users_table, [user_id]).get(user_id) or SummaryState(PurchaseSummary(), None)
                recent, started_from = self._recent(user_id, state)
            elif not known:
                time.sleep(delay)  # a conflicting transaction or throttling: back off
        raise StorageUnavailable("store events: DynamoDB transactions kept being cancelled")

def _has_purchase(events: Any) -> bool:
    return any(event.event_type is EventType.PURCHASE for event in events)


def _changes_summary(events: Any) -> bool:
    """Purchases and returns change the summary; sends and events attributed to a campaign may
    change the contact ledger, kept beside it under the same version."""
    return any(event.event_type in SUMMARY_EVENTS or changes_contacts(event) for event in events)


def _chunks(items: list[tuple[Event, dict[str, Any]]], count: int, max_bytes: int
            ) -> Iterator[list[tuple[Event, dict[str, Any]]]]:
    """At most `count` events and `max_bytes` stored bytes a chunk: DynamoDB's transaction limits."""
    return chunks_within(items, count, max_bytes, lambda entry: stored_size(entry[1]))
