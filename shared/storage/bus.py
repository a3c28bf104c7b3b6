"""The event bus triggers are published on: Amazon EventBridge, a JSON Lines file, or nothing.

Chosen from the settings as ModelStore.from_settings chooses a folder or a bucket: LOCAL_BUS_FILE
(the local stack sets it in its state folder) writes to the file, EVENT_BUS_NAME to EventBridge,
and with neither publishing is off, so a deployment or a test without a bus works as before.

Every entry has the same shape everywhere: Source, DetailType, Detail (JSON text), Time, and on the
file an id (EventBridge gives its own). EventBridge takes at most 10 entries and 256 KB a call and
may refuse some entries of a call (FailedEntryCount): those, and only those, are sent again with
backoff; entries still refused raise StorageUnavailable. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import StorageUnavailable
from shared.limits import chunks_within
from shared.storage.dynamo import CLIENT_CONFIG, backoff_delays
from shared.triggers import SOURCE, Trigger

MAX_ENTRIES_PER_CALL = 10
MAX_BYTES_PER_CALL = 256 * 1024
# The size EventBridge counts for an entry's Time, whatever its format.
TIME_BYTES = 14
PUT_ATTEMPTS = 6


class EventBus(Protocol):
    def publish(self, triggers: Sequence[Trigger]) -> int: ...


class NoBus:
    """No bus configured: publishing is off."""

    def publish(self, triggers: Sequence[Trigger]) -> int:
        return 0


def entry(trigger: Trigger) -> dict[str, Any]:
    return {"Source": SOURCE, "DetailType": trigger.detail_type, "Detail": trigger.detail_json(),
            "Time": trigger.time}


def entry_size(item: dict[str, Any]) -> int:
    """As EventBridge counts it: the UTF-8 bytes of Source, DetailType, Detail and Resources, plus Time."""
    return (TIME_BYTES + sum(len(item.get(k, "").encode()) for k in ("Source", "DetailType", "Detail"))
            + sum(len(r.encode()) for r in item.get("Resources", [])))


def batches(entries: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """At most 10 entries and 256 KB a call; an entry larger than that alone is refused by the bus."""
    return chunks_within(entries, MAX_ENTRIES_PER_CALL, MAX_BYTES_PER_CALL, entry_size)


@lru_cache(maxsize=1)
def events_client() -> Any:
    return boto3.client("events", config=CLIENT_CONFIG)


class EventBridgeBus:
    def __init__(self, name: str, client: Callable[[], Any] = events_client,
                 sleep: Callable[[float], None] = time.sleep, attempts: int = PUT_ATTEMPTS) -> None:
        self.name = name
        self.client = client
        self.sleep = sleep
        self.attempts = attempts

    def publish(self, triggers: Sequence[Trigger]) -> int:
        entries = [{**entry(trigger), "Time": datetime.fromisoformat(trigger.time), "EventBusName": self.name}
                   for trigger in triggers]
        for batch in batches(entries):
            self._put(batch)
        return len(entries)

    def _put(self, batch: list[dict[str, Any]]) -> None:
        pending, codes = batch, set()
        for delay in backoff_delays(self.attempts, base=0.1, cap=5.0):
            try:
                response = self.client().put_events(Entries=pending)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                raise StorageUnavailable(f"publish events: EventBridge refused the call ({code})") from error
            except BotoCoreError as error:
                raise StorageUnavailable("publish events: EventBridge is unreachable") from error
            if not response.get("FailedEntryCount"):
                return
            results = response.get("Entries", [])
            codes = {result.get("ErrorCode", "") for result in results if result.get("ErrorCode")}
            pending = [item for item, result in zip(pending, results) if result.get("ErrorCode")]
            self.sleep(delay)
        raise StorageUnavailable(f"publish events: EventBridge kept refusing {len(pending)} of {len(batch)} "
                                 f"entries ({', '.join(sorted(codes))})")


class LocalBus:
    """The local stack's bus: one JSON line per entry, appended; readers see the newest last."""

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(self, triggers: Sequence[Trigger]) -> int:
        lines = "".join(json.dumps({"id": str(uuid.uuid4()), **entry(trigger)}) + "\n" for trigger in triggers)
        if not lines:
            return 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.path.open("a", encoding="utf-8") as file:
                file.write(lines)
        except OSError as error:
            raise StorageUnavailable(f"publish events: cannot write the local bus file: {error}") from None
        return len(triggers)

    def read(self, detail_type: str | None = None, since: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` entries of that detail-type with a Time after `since` (ISO 8601), newest last."""
        after = _utc(since) if since else None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if detail_type and item.get("DetailType") != detail_type:
                continue
            if after and _utc(item["Time"]) <= after:
                continue
            found.append(item)
        return found[-limit:] if limit > 0 else []


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def bus_from_settings(event_bus_name: str | None, local_bus_file: str | None) -> EventBus:
    if local_bus_file:
        return LocalBus(Path(local_bus_file))
    if event_bus_name:
        return EventBridgeBus(event_bus_name)
    return NoBus()
