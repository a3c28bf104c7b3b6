"""Customers stored before the bought set existed get their keys, once, beside live ingest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from devstack.backfill import backfill
from shared.config import get_settings
from shared.events import Event
from shared.storage import dynamo
from shared.storage.events import EventStore, event_item
from shared.storage.users import purchased_items

NOW = datetime.now(timezone.utc)


def purchase(n: int, user: str, item: str, order: str | None) -> Event:
    return Event.model_validate({
        "event_id": f"p-{user}-{n}", "user_id": user, "item_id": item, "event_type": "purchase",
        "timestamp": (NOW - timedelta(days=n + 1)).isoformat(), "price": 2.5, "currency": "EUR",
        "channel": "web", **({"order_id": order} if order else {})}, context={"now": NOW, "max_future_seconds": 300})


def stored_the_old_way(events: list[Event]) -> None:
    """Events as the code before the bought set wrote them: no keys item."""
    table = get_settings().events_table
    for event in events:
        dynamo.client().put_item(TableName=table, Item=dynamo.serialize(event_item(event, "before")))


def test_old_purchases_get_their_keys_once_and_ingest_goes_on_counting_against_them(moto_tables):
    settings = get_settings()
    old = [purchase(n, "u-old", f"sku-{n % 40}", f"o-{n // 3}") for n in range(120)]
    old += [purchase(200, "u-old", "sku-no-order", None)]
    stored_the_old_way(old)
    assert len(purchased_items(settings.users_table, "u-old")) == 0

    first = backfill(settings.events_table, settings.users_table)
    again = backfill(settings.events_table, settings.users_table)

    bought = purchased_items(settings.users_table, "u-old")
    assert len(bought) == 41 and "sku-7" in bought and "sku-no-order" in bought
    assert (first.customers, first.item_keys_added, first.order_keys_added) == (1, 41, 41)  # 40 orders + 1 day
    assert (again.item_keys_added, again.order_keys_added) == (0, 0)
    # A later line of an old order is not a new order; a new order is.
    EventStore(settings.events_table, settings.users_table).write(
        [purchase(0, "u-old", "sku-late", "o-0").model_copy(update={"event_id": "late"}),
         purchase(0, "u-old", "sku-new", "o-new").model_copy(update={"event_id": "new"})])
    row = dynamo.deserialize(dynamo.client().get_item(
        TableName=settings.users_table, Key=dynamo.serialize({"user_id": "u-old"}))["Item"])
    assert row["orders"] == 1 and "sku-late" in purchased_items(settings.users_table, "u-old")


def test_an_erased_customer_gets_no_keys_back(moto_tables):
    settings = get_settings()
    stored_the_old_way([purchase(n, "u-gone", f"sku-{n}", None) for n in range(5)])
    dynamo.client().put_item(TableName=settings.users_table, Item=dynamo.serialize(
        {"user_id": "u-gone", "erased_at": NOW.isoformat()}))  # the erasure's record; its events still going

    totals = backfill(settings.events_table, settings.users_table)

    assert totals.item_keys_added == 0 and len(purchased_items(settings.users_table, "u-gone")) == 0
