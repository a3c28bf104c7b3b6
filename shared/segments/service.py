"""The segments service: a customer's tags on request, and every customer's in the nightly run.

Both gather the same typed inputs (the stored customer, their recent history, the categories
of what they bought). A request hands them to `segment_customer`; the nightly run hands everyone's
to `segment_everyone` (shared/segments/batch.py), the same rules over arrays, which gives every
customer exactly the tags and reasons `segment_customer` gives them
(tests/unit/test_segments_batch_agreement.py), so the members a nightly run writes are the tags a
request would show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.config import Settings
from shared.history import HistoryEvent
from shared.events import format_timestamp
from shared.observability import logger
from shared.nightly_triggers import TrackedMembers, previous_run, publish_run_triggers
from shared.segments.families import needs_consent
from shared.segments.features import CustomerFeatures
from shared.segments.rules import CustomSegment
from shared.segments.tags import Tag, segment_customer
from shared.storage.bus import EventBus, NoBus
from shared.storage.customers import Customers, load_customers
from shared.storage.history import CustomerReads
from shared.storage.segments import SegmentStore
from shared.storage.users import withheld
from shared.users import User, may_profile


@dataclass(frozen=True)
class CustomerSegments:
    personalized: bool
    features: CustomerFeatures
    tags: list[Tag]


def customer_segments(settings: Settings, user_id: str, statistics: dict[str, Any],
                      definitions: Sequence[CustomSegment], now: datetime,
                      categories_of: Callable[[list[str]], Mapping[str, str]]) -> CustomerSegments | None:
    """The customer's tags computed now from their current data; None for a customer not known at
    all. `categories_of`: the categories of items, by id (the function's snapshot of them)."""
    # The profile and the recent-activity item in one BatchGetItem, as serving reads them; a
    # customer without the item yet is read by the Query.
    reads = CustomerReads(settings.events_table, settings.users_table)
    user = reads.profile(user_id)
    history = reads.history([user_id]) if may_profile(user) else []
    if user is None and not history:
        return None
    categories = dict(categories_of([e.item_id for e in history if e.event_type == "purchase"]))
    return _segments(user, history, categories, statistics, definitions, now)


def _segments(user: User | None, history: list[HistoryEvent], categories: dict[str, str],
              statistics: dict[str, Any], definitions: Sequence[CustomSegment], now: datetime) -> CustomerSegments:
    personalized, features, tags = segment_customer(user, history, categories, statistics, now, definitions)
    return CustomerSegments(personalized, features, tags)


def current_members(settings: Settings, store: SegmentStore, segment_id: str, limit: int, cursor: str | None
                    ) -> tuple[str, list[dict[str, str]], str | None]:
    """A page of the latest run's members (its run id, the members, the next cursor), less those who
    objected to profiling or were erased since the run read them: they leave every list at once."""
    index, members, next_cursor = store.members(segment_id, limit, cursor)
    since = format_timestamp(datetime.fromisoformat(index["at"]))
    hidden = withheld(settings.users_table, [m["user_id"] for m in members], since, needs_consent(segment_id))
    return index["run"], [m for m in members if m["user_id"] not in hidden], next_cursor


def materialize_segments(settings: Settings, store: SegmentStore, statistics: dict[str, Any], now: datetime,
                         run: str, customers: Customers | None = None, bus: EventBus | None = None
                         ) -> dict[str, Any]:
    """Every customer's tags, written as the members of a new run.

    `customers` is what the nightly run already read for training; without it they are read here.
    With a `bus`, the run's triggers are published once the members are written (shared/nightly_triggers.py).
    """
    if customers is None:
        customers = load_customers(settings.events_table, settings.users_table, settings.items_table)
    users, histories, categories = customers.users, customers.histories, customers.categories
    definitions = store.definitions()
    bus = bus or NoBus()
    previous, since = previous_run(bus, store)
    tracked = TrackedMembers()

    # numpy: imported here, by the nightly run (the train function ships it), never by the Segments function.
    from shared.segments.batch import segment_everyone

    everyone, read_at = users.keys() | histories.keys(), format_timestamp(customers.as_of or now)
    members = segment_everyone(users, histories, categories, statistics, now, definitions).by_segment()
    # Erased since the customers were read (on the export path, hours before): no member of this
    # run, so that the index counts only those it lists.
    left_out = store.erased_since(read_at, everyone)
    if left_out:
        members = [kept for group in members if (kept := group.without(left_out)) is not None]
    for group in members:
        tracked.see(group)
    index = store.write_run(run, now.isoformat(), members)
    del members  # a million ids and reasons: not kept while the triggers are made
    # Listed now: an erasure from here on ends its customer's memberships in this run itself. One
    # noted while the run was written found no run to end them in: they are ended here.
    erased = left_out | store.end_erased(read_at, everyone - left_out)
    logger.info("segments materialized", extra={"run": run, "segments": len(index["segments"]),
                                                "customers": len(everyone), "erased_meanwhile": len(erased)})
    publish_run_triggers(settings, bus, previous, since, tracked.run(run), customers, now, erased)
    return index


def materialize_after_training(settings: Settings, models: Any, now: datetime,
                               customers: Customers | None = None, bus: EventBus | None = None) -> dict[str, Any]:
    """With the statistics of whichever version is active after the run (none: no RFM or value tags).

    They are read from statistics.json, as the Segments function reads them. A version active
    since before that file existed gets it here (the train function ships numpy to read the
    artifact), so the Segments function has the statistics again after the next nightly run.
    """
    pointer = models.active()
    statistics = models.ensure_statistics(pointer.version) if pointer else {}
    return materialize_segments(settings, SegmentStore(settings.segments_table), statistics, now,
                                run=now.strftime("%Y%m%dT%H%M%S"), customers=customers, bus=bus)
