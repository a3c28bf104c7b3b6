"""The nightly run's triggers: tracked segments entered and left, viewed items back in stock or
cheaper, and new items matching declared interests (the rules: shared/triggers.py).

Called by the segments service around `write_run`: the previous run's tracked members are read
before the new run replaces the index, and the events are published after the new members are
written. The segments are what readers depend on; a bus that fails loses this run's events (logged
and counted as TriggersUnpublished), never the run. docs/triggers.md has the why.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from shared.errors import StorageUnavailable
from shared.events import format_timestamp
from shared.history import purchased_item_ids
from shared.observability import logger, metrics
from shared.segments.members import SegmentMembers
from shared.storage.bus import EventBus, NoBus
from shared.storage.catalog import triggers_catalog
from shared.storage.customers import Customers
from shared.storage.segments import SegmentStore
from shared.storage.users import withheld
from shared.triggers import (TRACKED_SEGMENTS, SegmentRun, Trigger, interest_events, segment_events,
                             viewed_item_events)

MEMBERS_PAGE = 1000


def previous_run(bus: EventBus, store: SegmentStore) -> tuple[SegmentRun | None, datetime | None]:
    """The tracked segments' members of the latest run written, and its time; nothing on the first
    run, or when publishing is off (nothing is read then)."""
    if isinstance(bus, NoBus):
        return None, None
    index = store.index()
    if index is None:
        return None, None
    members: dict[str, dict[str, str]] = {}
    for segment_id in TRACKED_SEGMENTS:
        found = members.setdefault(segment_id, {})
        cursor: str | None = None
        while segment_id in index["segments"]:
            _, page, cursor = store.members(segment_id, MEMBERS_PAGE, cursor)
            found.update({member["user_id"]: member["reason"] for member in page})
            if cursor is None:
                break
    names = {segment_id: entry["name"] for segment_id, entry in index["segments"].items()
             if segment_id in TRACKED_SEGMENTS}
    return SegmentRun(index["run"], members, names), datetime.fromisoformat(index["at"])


class TrackedMembers:
    """The tracked segments' members as the new run yields them."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str, str]] = {segment_id: {} for segment_id in TRACKED_SEGMENTS}
        self.names: dict[str, str] = {}

    def see(self, group: SegmentMembers) -> None:
        if group.segment_id in self.members:
            self.members[group.segment_id] = group.first_reasons()
            self.names[group.segment_id] = group.name

    def run(self, run: str) -> SegmentRun:
        return SegmentRun(run, self.members, self.names)


def publish_run_triggers(settings: Any, bus: EventBus, previous: SegmentRun | None, since: datetime | None,
                         current: SegmentRun, customers: Customers, now: datetime,
                         erased: AbstractSet[str] = frozenset()) -> int:
    """Publish this run's triggers; the number published (0 when the bus failed: logged and counted).
    None names a customer `erased` since the run read them."""
    if isinstance(bus, NoBus):
        return 0
    triggers: list[Trigger] = []
    try:
        triggers = segment_events(previous, current, customers.users,
                                  customers.users.keys() | customers.histories.keys(), now)
        if since is not None:
            items = triggers_catalog(settings.items_table, format_timestamp(since))
            bought = purchased_item_ids(customers.histories)
            triggers += viewed_item_events(customers.histories, customers.users, items, since, now)
            triggers += interest_events(customers.users, bought, items, since, now)
        # The customers were read minutes (on the export path, hours) before: one who objected to
        # profiling or was erased since, themselves or through their customer, is named by none.
        named = {user_id for trigger in triggers if isinstance(user_id := getattr(trigger.detail, "user_id", None), str)}
        gone = set(erased) | (withheld(settings.users_table, sorted(named - erased),
                                       format_timestamp(customers.as_of or now), True) if named - erased else set())
        if gone:
            triggers = [trigger for trigger in triggers if getattr(trigger.detail, "user_id", None) not in gone]
        published = bus.publish(triggers)
    except Exception as error:  # noqa: BLE001 - whatever the bus or stored data did, the segments are written
        foreseen = isinstance(error, StorageUnavailable)  # else a fault of the triggers' own: with its traceback
        (logger.error if foreseen else logger.exception)("nightly triggers not published; the segments are written",
                                                         extra={"triggers": len(triggers), "error": str(error)})
        metrics.add_metric("TriggersUnpublished", MetricUnit.Count, max(len(triggers), 1))
        return 0
    logger.info("nightly triggers published", extra={"triggers": published, "run": current.run})
    metrics.add_metric("TriggersPublished", MetricUnit.Count, published)
    return published
