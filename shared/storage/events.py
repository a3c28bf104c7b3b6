"""Event storage: exactly-once writes of events together with the user's purchase summary.

Each user's events go in a DynamoDB transaction: a conditional put per event
(``attribute_not_exists``: an existing ``(user_id, event_id)`` is a duplicate, not a rewrite),
the rewrite of the user's recent-activity item (their newest events, what serving reads: shared/recent.py)
guarded by its version, one update of the user's summary (with the contact ledger: messages sent, campaigns answered)
guarded by its version and, with purchases, one update of the
user's purchase keys (the items already bought, the orders already counted), guarded by its own. Either all of it is written or
none, so a retried request never counts a purchase twice, and two requests racing on the same
user never lose an update. The chunks of several users share one transaction (up to DynamoDB's
100 actions): a call's overhead is paid once for them all, so a request of 1,000 events is about
a dozen transactions, not one per user, sent in parallel. A cancelled transaction names the
actions at fault: those users settle them (duplicates, a summary read again) and the others
simply try again; after an AWS fault each of its users is tried in a transaction of their own,
so one user's fault costs no other.

Erasure is final: events stamped before the user's last erasure are refused and named, even by a
request that was already under way when the erasure started. The recent-activity item records
that erasure, and an erasure deletes the item, so its rewrite (conditioned on the version read)
fails after one: a returning user's chunk needs no other check. An item that does not record it
yet (a new one, or one written before items recorded it) is written after checking that the
erasure read is still the one on the user's row.
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
    SummaryState, erased_since, erasure_unchanged, purchases_update, read_recent, read_summaries, recent_put,
    summary_update,
)
from shared.users import PurchaseSummary, fold_purchases
from shared.versions import next_version

# DynamoDB allows 100 actions per transaction; three are kept for the summary update, the
# update of the customer's purchase keys (already-bought items, seen orders) and the rewrite of
# their recent activity.
EVENTS_PER_TRANSACTION = 97
MAX_TRANSACTION_ACTIONS = 100
# A chunk's writes to the user's own items beside the recent activity (the summary, the new
# purchase keys), at most: what packing counts for them.
USER_ITEMS_BYTES = 4 * 1024
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
        first_of: dict[tuple[str, str], Event] = {}
        repeats: list[tuple[Event, Event]] = []  # an event id sent twice in the batch, and its first copy
        for event in events:
            if event.key in first_of:
                repeats.append((event, first_of[event.key]))
                continue
            first_of[event.key] = event
            by_user.setdefault(event.user_id, []).append(event)
        if not by_user:
            return outcome

        buying = [user for user, evs in by_user.items() if _changes_summary(evs)]
        ingested_at = format_timestamp(datetime.now(timezone.utc))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            # Two independent reads: one round trip's wait instead of two.
            summaries_read = pool.submit(read_summaries, self.users_table, buying)
            recent = read_recent(self.users_table, list(by_user))
            summaries = summaries_read.result()
            # A user read and not found has no summary and no erasure yet.
            read = {user: summaries.get(user) or SummaryState(PurchaseSummary(), None) for user in buying}
            writes = [_UserWrite(self, user, evs, read.get(user), recent.get(user), ingested_at)
                      for user, evs in by_user.items()]
            self._read_erasures(writes)
            self._start_recent(pool, [write for write in writes if write.recent is None or write.recent.unreadable])
            self._write_all(pool, writes)

        failures = 0
        for write in writes:
            failures += write.failed
            outcome.stored += write.stored
            outcome.duplicates += write.duplicates
            outcome.erased += write.erased
        # A repeat gets its first copy's outcome: refused with it (it was not stored, so it is no
        # duplicate of a stored event), a duplicate otherwise.
        refused = {id(event): erased_at for event, erased_at in outcome.erased}
        for repeat, first in repeats:
            if id(first) in refused:
                outcome.erased.append((repeat, refused[id(first)]))
            else:
                outcome.duplicates.append(repeat)
        if failures:
            raise StorageUnavailable(
                f"events of {failures} of {len(by_user)} users could not be stored; "
                f"{len(outcome.stored)} events were. Send the same batch again: "
                "events already stored are recognised and counted as duplicates"
            )
        return outcome

    def _read_erasures(self, writes: list[_UserWrite]) -> None:
        """The last erasure of the users for whom neither read says it (no summary read, no
        recent-activity item that records it): one batch."""
        unknown = [write for write in writes if write.erased_at is None]
        if unknown:
            erasures = erased_since(self.users_table, [write.user_id for write in unknown])
            for write in unknown:
                write.erased_at = erasures.get(write.user_id, "")

    def _start_recent(self, pool: ThreadPoolExecutor, writes: list[_UserWrite]) -> None:
        """The recent activity of customers who have no item yet (or an unreadable one), started
        from their stored events (one Query each, in parallel)."""

        def start(write: _UserWrite) -> None:
            try:
                write.recent = self._started_recent(write.user_id, write.erased_at or "", write.recent)
            except StorageUnavailable:
                write.failed = True

        list(pool.map(start, writes))

    def _recent(self, user_id: str, erased_at: str) -> RecentActivity:
        """A customer's recent activity as stored, or started here (see _started_recent)."""
        found = read_recent(self.users_table, [user_id]).get(user_id)
        return found if found is not None and not found.unreadable else self._started_recent(user_id, erased_at, found)

    def _started_recent(self, user_id: str, erased_at: str, stored: RecentActivity | None) -> RecentActivity:
        """A recent-activity item started from the customer's stored events (events stored before
        the item existed), so that it never hides them; it replaces the `stored` one if that does not
        read (its rewrite is conditioned on that item still being there). It records no erasure yet:
        its first write checks the erasure on the profile row (an erasure since the read cancels it,
        and the item is started again)."""
        events = tuple(stored_recent_events(self.events_table, user_id, erased_at))
        if stored is not None and stored.unreadable:
            return RecentActivity(events, stored.version, unreadable=True)
        return RecentActivity(events)

    def _write_all(self, pool: ThreadPoolExecutor, writes: list[_UserWrite]) -> None:
        """Every user's events, in rounds: each round packs the next chunk of every user still
        writing into shared transactions (the write units are the same, but every call has its
        own overhead, a round trip and the engine's setup: a few large transactions go far faster
        than one per user) and sends them in parallel."""
        active = [write for write in writes if not write.failed]
        while active:
            ready: list[tuple[_UserWrite, list[dict[str, Any]]]] = []

            def packed() -> Iterator[tuple[_UserWrite, list[dict[str, Any]]]]:
                for write in active:
                    if actions := write.next_actions():
                        ready.append((write, actions))
                        yield write, actions

            # pool.map submits each transaction as soon as it is packed: DynamoDB works on the
            # first while the next are built.
            delays = list(pool.map(self._transact, _transactions(packed())))
            active = [write for write, _ in ready if not write.failed]
            if any(delays):
                time.sleep(max(delays))  # a conflicting transaction or throttling: back off

    def _transact(self, group: list[tuple[_UserWrite, list[dict[str, Any]]]]) -> float:
        """One transaction of the chunks of one or more users; the delay to wait before the next
        round (0: none needed)."""
        try:
            with dynamo.aws_faults("store events"):
                dynamo.client().transact_write_items(TransactItems=[a for _, actions in group for a in actions])
        except StorageUnavailable:
            for write, _ in group:
                # One user's fault must cost no other: each is tried on their own from now on.
                write.failed = len(group) == 1
                write.alone = True
            return 0.0
        except ClientError as error:
            if dynamo.error_code(error) != "TransactionCanceledException":
                raise
            return self._cancelled(group, [r.get("Code") for r in error.response.get("CancellationReasons", [])])
        for write, _ in group:
            write.committed()
        return 0.0

    def _cancelled(self, group: list[tuple[_UserWrite, list[dict[str, Any]]]], reasons: list[str | None]) -> float:
        """Each user's share of a cancelled transaction's reasons (one per action, in order)."""
        shares, start = [], 0
        for write, actions in group:
            shares.append(reasons[start:start + len(actions)])
            start += len(actions)
        caused = [any(code not in (None, "None") for code in share) for share in shares]
        delay = 0.0
        for (write, _), share, cause in zip(group, shares, caused):
            if cause or not any(caused):  # a user cancelled by another's reason only tries again
                try:
                    delay = max(delay, write.cancelled(share))
                except StorageUnavailable:
                    write.failed = True
        return delay


class _UserWrite:
    """One user's events of a request, written chunk after chunk (the summary, purchase keys and
    recent activity of a chunk are what the next one starts from): the actions of the chunk's next
    attempt, and what a commit or a cancellation of them means."""

    def __init__(self, store: EventStore, user_id: str, events: list[Event], state: SummaryState | None,
                 recent: RecentActivity | None, ingested_at: str) -> None:
        self.store = store
        self.user_id = user_id
        self.state = state
        self.recent = recent
        # The last erasure ("": none); events stamped before it are refused. None until read.
        self.erased_at: str | None = _last_erasure(state, recent)
        self.stored: list[Event] = []
        self.duplicates: list[Event] = []
        self.erased: list[tuple[Event, str]] = []
        self.failed = False
        self.alone = False  # in a transaction of its own (after a fault)
        self.size = 0  # the bytes of the next attempt, about
        items = [(event, event_item(event, ingested_at)) for event in events]
        self._chunks = _chunks(items, EVENTS_PER_TRANSACTION, MAX_TRANSACTION_BYTES)
        self._plain: dict[int, dict[str, Any]] = {}
        self._pending: list[tuple[Event, dict[str, Any]]] = []
        self._attempts = 0
        self._delays: Iterator[float] = iter(())
        self._after: tuple[SummaryState | None, RecentActivity] | None = None

    def next_actions(self) -> list[dict[str, Any]] | None:
        """The actions of the next attempt; None when every chunk is written (or refused)."""
        while True:
            if self.erased_at:
                refused = [entry for entry in self._pending if entry[0].ts < self.erased_at]
                self._pending = [entry for entry in self._pending if entry[0].ts >= self.erased_at]
                self.erased += [(event, self.erased_at) for event, _ in refused]
            if self._pending:
                return self._actions()
            chunk = next(self._chunks, None)
            if chunk is None:
                return None
            self._pending = [(event, dynamo.serialize(item)) for event, item in chunk]
            self._plain = {id(event): item for event, item in chunk}
            self._attempts, self._delays = 0, iter(dynamo.backoff_delays(TRANSACTION_ATTEMPTS))

    def _actions(self) -> list[dict[str, Any]]:
        store, user_id, state, recent = self.store, self.user_id, self.state, self.recent
        assert recent is not None  # read, or started, before any write
        actions = [
            {"Put": {"TableName": store.events_table, "Item": item,
                     "ConditionExpression": "attribute_not_exists(event_id)"}}
            for _, item in self._pending
        ]
        erased_at = self.erased_at or ""
        events = [event for event, _ in self._pending]
        new_recent, payload = recent.adding(
            (e for e in (recent_event(self._plain[id(event)]) for event in events) if e is not None), erased_at)
        # An erasure deletes the recent item: the rewrite of the one read fails after one. An item
        # that does not record the erasure yet is written after checking it on the profile row.
        actions.append(recent_put(store.users_table, user_id, recent, new_recent, payload))
        new_state = state
        if _changes_summary(events):
            assert state is not None  # read for every user whose events change the summary (write())
            purchases = state.purchases
            if _has_purchase(events):
                purchases, add_items, add_orders = state.purchases.adding(events)
                actions.append(purchases_update(
                    store.users_table, user_id, state.purchases, purchases, add_items, add_orders))
            new_state = SummaryState(
                fold_purchases(state.summary, events, state.purchases.orders),
                next_version(state.version),
                state.erased_at,
                purchases,
                fold_contacts(state.contacts, events),
            )
            actions.append(summary_update(store.users_table, user_id, state.version, new_state,
                                          write_contacts=new_state.contacts != state.contacts))
        elif recent.version is None or recent.erased_at is None:
            actions.append(erasure_unchanged(store.users_table, user_id, erased_at))
        self._after = (new_state, new_recent)
        self.size = sum(stored_size(self._plain[id(event)]) for event in events) + len(payload) + USER_ITEMS_BYTES
        return actions

    def committed(self) -> None:
        self.stored += [event for event, _ in self._pending]
        self._pending = []
        assert self._after is not None
        self.state, self.recent = self._after

    def cancelled(self, reasons: list[str | None]) -> float:
        """Settle this user's share of a cancelled transaction; the delay to back off by (0: none)."""
        self._attempts += 1
        if self._attempts >= TRANSACTION_ATTEMPTS:
            raise StorageUnavailable("store events: DynamoDB transactions kept being cancelled")
        delay = next(self._delays)
        # The event puts first, then the user's items (the recent activity's rewrite, the
        # purchase keys' update, the profile row's update or check).
        put_reasons, user_reasons = reasons[: len(self._pending)], reasons[len(self._pending):]
        known = {i for i, code in enumerate(put_reasons) if code == "ConditionalCheckFailed"}
        self.duplicates += [event for i, (event, _) in enumerate(self._pending) if i in known]
        self._pending = [entry for i, entry in enumerate(self._pending) if i not in known]
        if "ConditionalCheckFailed" in user_reasons:  # another request updated them, or an erasure
            self.state = (read_summaries(self.store.users_table, [self.user_id]).get(self.user_id)
                          or SummaryState(PurchaseSummary(), None))
            self.erased_at = self.state.erased_at or ""
            self.recent = self.store._recent(self.user_id, self.erased_at)
            return 0.0
        return 0.0 if known else delay


def _last_erasure(state: SummaryState | None, recent: RecentActivity | None) -> str | None:
    """The user's last erasure as what was read says it ("": none), or None if nothing read says."""
    known = [erasure for erasure in (state.erased_at or "" if state is not None else None,
                                     recent.erased_at if recent is not None else None) if erasure is not None]
    return max(known) if known else None


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


def _transactions(ready: list[tuple[_UserWrite, list[dict[str, Any]]]]
                  ) -> Iterator[list[tuple[_UserWrite, list[dict[str, Any]]]]]:
    """Users' chunks packed into transactions within DynamoDB's limits (actions, bytes); a user
    who must be alone goes alone."""
    group: list[tuple[_UserWrite, list[dict[str, Any]]]] = []
    actions = size = 0
    for write, chunk in ready:
        if write.alone:
            yield [(write, chunk)]
            continue
        if group and (actions + len(chunk) > MAX_TRANSACTION_ACTIONS or size + write.size > MAX_TRANSACTION_BYTES):
            yield group
            group, actions, size = [], 0, 0
        group.append((write, chunk))
        actions += len(chunk)
        size += write.size
    if group:
        yield group
