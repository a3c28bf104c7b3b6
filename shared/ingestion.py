"""Ingestion rules: validate each event on its own, store the valid ones exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from shared.events import Event, parse_batch
from shared.validation import Rejection


class EventWriter(Protocol):
    def write(self, events: Sequence[Event]) -> Any: ...


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]


def ingest_events(
    raw_events: list[Any], writer: EventWriter, *, max_future_seconds: int,
    now: datetime | None = None,
) -> IngestResult:
    batch = parse_batch(
        raw_events, now=now or datetime.now(timezone.utc), max_future_seconds=max_future_seconds
    )
    outcome = writer.write(batch.valid)
    return IngestResult(len(outcome.stored), len(outcome.duplicates), batch.rejected)
