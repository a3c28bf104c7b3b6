"""Ingestion rules: validate each event on its own, store the valid ones exactly once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from shared.events import UNKNOWN_ERASURE, Event, parse_batch
from shared.validation import FieldError, Rejection


class EventWriter(Protocol):
    def write(self, events: Sequence[Event]) -> Any: ...


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]
    refused_after_erasure: int = 0


def ingest_events(
    raw_events: list[Any], writer: EventWriter, *, max_future_seconds: int,
    now: datetime | None = None, refusal: Callable[[Event], FieldError | None] | None = None,
) -> IngestResult:
    """refusal: a rule a valid event must also pass (a client's, shared/client_events.py)."""
    batch = parse_batch(
        raw_events, now=now or datetime.now(timezone.utc), max_future_seconds=max_future_seconds
    )
    if refusal is not None:
        batch.refuse(refusal, "event_id")
    outcome = writer.write(batch.valid)
    place = {id(event): number for number, event in enumerate(batch.valid)}
    batch.reject_stored({place[id(event)]: FieldError("timestamp", _erased_message(erased_at))
                         for event, erased_at in outcome.erased}, "event_id")
    return IngestResult(len(outcome.stored), len(outcome.duplicates), batch.rejected, len(outcome.erased))


def _erased_message(erased_at: str) -> str:
    if erased_at == UNKNOWN_ERASURE:
        return ("the customer's data was erased, at a time the stored record does not tell; their events are "
                "refused until they are erased again")
    return f"the customer's data was erased at {erased_at}; events from before an erasure are refused"
