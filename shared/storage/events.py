"""Event storage: exactly-once writes of events together with the user's purchase summary.

Each user's events go in one DynamoDB transaction: a conditional put per event
(``attribute_not_exists``: an existing ``(user_id, event_id)`` is a duplicate, not a rewrite)
and one update of the user's summary guarded by its version. Either all of it is written or
none, so a retried request never counts a purchase twice, and two requests racing on the same
user never lose an update. Users are written in parallel: the work is waiting on I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from shared.errors import StorageUnavailable
from shared.events import Event, EventType, format_timestamp
from shared.storage import dynamo
from shared.users import PurchaseSummary, fold_purchases

# DynamoDB allows 100 actions per transaction; one is kept for the summary update.
EVENTS_PER_TRANSACTION = 99
TRANSACTION_ATTEMPTS = 8
SUMMARY_FIELDS = ("purchase_count", "units", "spend", "first_purchase_at", "last_purchase_at")


@dataclass
class WriteOutcome:
    stored: list[Event] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)


@dataclass
class _SummaryState:
    summary: PurchaseSummary
    version: int | None  # None: the user has no summary yet


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

        buying = [user for user, evs in by_user.items() if _has_purchase(evs)]
        summaries = self._read_summaries(buying)
        ingested_at = format_timestamp(datetime.now(timezone.utc))

        failures = 0
        workers = min(self.concurrency, len(by_user))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(self._write_user, user, evs, summaries.get(user), ingested_at)
                for user, evs in by_user.items()
            ]
            for future in futures:
                try:
                    stored, duplicates = future.result()
                except StorageUnavailable:
                    failures += 1
                    continue
                outcome.stored.extend(stored)
                outcome.duplicates.extend(duplicates)
        if failures:
            raise StorageUnavailable(
                f"events of {failures} of {len(by_user)} users could not be stored; "
                f"{len(outcome.stored)} events were. Send the same batch again: "
                "events already stored are recognised and counted as duplicates"
            )
        return outcome

    def _write_user(
        self, user_id: str, events: list[Event], state: _SummaryState | None, ingested_at: str
    ) -> tuple[list[Event], list[Event]]:
        stored: list[Event] = []
        duplicates: list[Event] = []
        for chunk in _chunks(events, EVENTS_PER_TRANSACTION):
            chunk_stored, chunk_duplicates, state = self._write_chunk(
                user_id, chunk, state, ingested_at
            )
            stored += chunk_stored
            duplicates += chunk_duplicates
        return stored, duplicates

    def _write_chunk(
        self, user_id: str, events: list[Event], state: _SummaryState | None, ingested_at: str
    ) -> tuple[list[Event], list[Event], _SummaryState | None]:
        pending = [(event, dynamo.serialize(event_item(event, ingested_at))) for event in events]
        duplicates: list[Event] = []
        for delay in dynamo.backoff_delays(TRANSACTION_ATTEMPTS):
            if not pending:
                return [], duplicates, state
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
            if _has_purchase(event for event, _ in pending):
                state = state or _SummaryState(PurchaseSummary(), None)
                new_state = _SummaryState(
                    fold_purchases(state.summary, (event for event, _ in pending)),
                    (state.version or 0) + 1,
                )
                actions.append(self._summary_update(user_id, state.version, new_state))
            try:
                with dynamo.aws_faults("store events"):
                    dynamo.client().transact_write_items(TransactItems=actions)
                return [event for event, _ in pending], duplicates, new_state
            except ClientError as error:
                if dynamo.error_code(error) != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
            # One reason per action, in order: the event puts, then the summary update if any.
            put_reasons, summary_reason = reasons[: len(pending)], reasons[len(pending) :]
            known = {i for i, code in enumerate(put_reasons) if code == "ConditionalCheckFailed"}
            duplicates += [event for i, (event, _) in enumerate(pending) if i in known]
            pending = [entry for i, entry in enumerate(pending) if i not in known]
            if summary_reason == ["ConditionalCheckFailed"]:  # another request updated it first
                state = self._read_summaries([user_id]).get(user_id)
            elif not known:
                time.sleep(delay)  # a conflicting transaction or throttling: back off
        raise StorageUnavailable("store events: DynamoDB transactions kept being cancelled")

    def _summary_update(
        self, user_id: str, expected_version: int | None, state: _SummaryState
    ) -> dict[str, Any]:
        values = {
            ":version": state.version,
            **{f":{name}": getattr(state.summary, name) for name in SUMMARY_FIELDS},
        }
        if expected_version is None:
            condition = "attribute_not_exists(summary_version)"
        else:
            condition = "summary_version = :expected"
            values[":expected"] = expected_version
        assignments = ", ".join(f"{name} = :{name}" for name in SUMMARY_FIELDS)
        return {
            "Update": {
                "TableName": self.users_table,
                "Key": dynamo.serialize({"user_id": user_id}),
                "UpdateExpression": f"SET {assignments}, summary_version = :version",
                "ConditionExpression": condition,
                "ExpressionAttributeValues": dynamo.serialize(values),
            }
        }

    def _read_summaries(self, user_ids: list[str]) -> dict[str, _SummaryState]:
        if not user_ids:
            return {}
        rows = dynamo.batch_get(
            self.users_table,
            [{"user_id": user} for user in user_ids],
            consistent=True,
            projection=", ".join(("user_id", "summary_version", *SUMMARY_FIELDS)),
        )
        return {
            row["user_id"]: _SummaryState(
                PurchaseSummary.model_validate(row), row.get("summary_version")
            )
            for row in rows
            if "summary_version" in row
        }


def _has_purchase(events: Any) -> bool:
    return any(event.event_type is EventType.PURCHASE for event in events)


def _chunks(items: list[Event], size: int) -> Iterator[list[Event]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
