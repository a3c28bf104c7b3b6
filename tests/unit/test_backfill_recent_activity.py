"""Customers whose events predate the recent-activity item get it, once, holding what serving read
of them before, beside live ingest and erasure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import devstack.backfill_recent as migration
from devstack.backfill_recent import backfill_recent
from shared.config import get_settings
from shared.events import Event, format_timestamp
from shared.storage import dynamo
from shared.storage.events import EventStore, event_item
from shared.storage.history import recent_history
from shared.storage.users import read_recent, recent_key

NOW = datetime.now(timezone.utc)


def event(n: int, user: str, kind: str = "view", **fields: object) -> Event:
    body = {"event_id": f"{user}-{n}", "user_id": user, "event_type": kind,
            "timestamp": (NOW - timedelta(minutes=n + 1)).isoformat(), "channel": "ios", **fields}
    if kind == "search":
        body["properties"] = {"query": "red shoes"}
    else:
        body.setdefault("item_id", f"sku-{n % 37}")
    if kind == "purchase":
        body.update(price=4.5, currency="EUR", order_id=f"o-{n}")
    return Event.model_validate(body, context={"now": NOW, "max_future_seconds": 300})


def stored_the_old_way(events: list[Event]) -> None:
    """Events as the code before the recent-activity item wrote them: no item."""
    table = get_settings().events_table
    for stored in events:
        dynamo.client().put_item(TableName=table, Item=dynamo.serialize(event_item(stored, "before")))


def old_customer(user: str, count: int) -> list[Event]:
    return [event(n, user, "search" if n % 50 == 7 else "purchase" if n % 9 == 0 else "view")
            for n in range(count)]


def test_an_old_customer_gets_the_history_serving_read_and_ingest_goes_on_from_it(moto_tables):
    settings = get_settings()
    store = EventStore(settings.events_table, settings.users_table)
    stored_the_old_way(old_customer("u-old", 530))  # more than an item holds, searches among them
    store.write([event(n, "u-new") for n in range(3)])  # ingest started theirs
    version_before = read_recent(settings.users_table, ["u-new"])["u-new"].version
    served_before = recent_history(settings.events_table, "u-old")  # the Query serving falls back to
    assert read_recent(settings.users_table, ["u-old"]) == {} and len(served_before) > 400

    first = backfill_recent(settings.events_table, settings.users_table, threads=1)
    again = backfill_recent(settings.events_table, settings.users_table, threads=1)

    item = read_recent(settings.users_table, ["u-old"])["u-old"]
    assert item.history() == served_before  # the same events, newest first: only where they are read changed
    assert read_recent(settings.users_table, ["u-new"])["u-new"].version == version_before  # untouched
    assert (first.ids, first.had_one, first.started, first.failed) == (2, 1, 1, 0)
    assert (again.had_one, again.started) == (2, 0)
    # Their next event goes on top of the item the backfill started.
    store.write([event(-2, "u-old", "purchase", item_id="sku-new")])
    history = read_recent(settings.users_table, ["u-old"])["u-old"].history()
    assert history[0].item_id == "sku-new" and history[1:] == served_before[:len(history) - 1]


def test_an_erased_customer_gets_no_item_back_even_if_erased_while_it_runs(moto_tables, monkeypatch):
    settings = get_settings()
    stored_the_old_way(old_customer("u-gone", 5) + old_customer("u-leaving", 5))
    erase("u-gone")  # the erasure's record; their events are still being deleted
    read_events = migration.stored_recent_events

    def erased_meanwhile(events_table: str, user_id: str, erased_at: str) -> object:
        found = read_events(events_table, user_id, erased_at)
        if user_id == "u-leaving" and not erased_at:
            erase("u-leaving")  # after the backfill read their events, before it writes
        return found

    monkeypatch.setattr(migration, "stored_recent_events", erased_meanwhile)
    totals = backfill_recent(settings.events_table, settings.users_table, threads=1)

    assert (totals.nothing_to_keep, totals.started) == (2, 0)
    assert read_recent(settings.users_table, ["u-gone", "u-leaving"]) == {}


def erase(user: str) -> None:
    dynamo.client().put_item(TableName=get_settings().users_table, Item=dynamo.serialize(
        {"user_id": user, "erased_at": format_timestamp(datetime.now(timezone.utc))}))


def test_an_item_ingest_starts_meanwhile_is_kept_with_its_new_event(moto_tables, monkeypatch):
    settings = get_settings()
    stored_the_old_way(old_customer("u-back", 20))
    store = EventStore(settings.events_table, settings.users_table)
    read_events = migration.stored_recent_events

    def customer_comes_back_meanwhile(*args: object, **kwargs: object) -> object:
        found = read_events(*args, **kwargs)  # the backfill read their events; then they send one
        store.write([event(-3, "u-back", "add_to_cart", item_id="sku-meanwhile")])
        return found

    monkeypatch.setattr(migration, "stored_recent_events", customer_comes_back_meanwhile)
    totals = backfill_recent(settings.events_table, settings.users_table, threads=1)

    assert (totals.started_meanwhile, totals.started) == (1, 0)
    history = read_recent(settings.users_table, ["u-back"])["u-back"].history()
    assert history[0].item_id == "sku-meanwhile" and len(history) == 19 + 1  # one of their 20 was a search


def test_an_item_that_does_not_read_is_replaced_with_what_serving_reads(moto_tables):
    settings = get_settings()
    EventStore(settings.events_table, settings.users_table).write([event(n, "u-1") for n in range(20)])
    key = dynamo.serialize(recent_key("u-1"))
    stored = dynamo.client().get_item(TableName=settings.users_table, Key=key)["Item"]
    dynamo.client().put_item(TableName=settings.users_table, Item={**stored, "events": {"B": b"damaged"}})
    assert read_recent(settings.users_table, ["u-1"])["u-1"].unreadable

    first = backfill_recent(settings.events_table, settings.users_table, threads=1)
    again = backfill_recent(settings.events_table, settings.users_table, threads=1)

    item = read_recent(settings.users_table, ["u-1"])["u-1"]
    assert not item.unreadable and item.history() == recent_history(settings.events_table, "u-1")
    assert (first.replaced, first.started, first.had_one) == (1, 0, 0)
    assert (again.replaced, again.had_one) == (0, 1)
