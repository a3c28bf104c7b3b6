"""Click and search events: what makes them valid, and that a stored search, which names no item,
breaks no later read: history, training, recommendations, segments, the nightly scan, export."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from devstack.demo_data import generate_shop
from shared.events import EventType
from shared.storage import dynamo
from shared.storage.customers import load_customers
from shared.storage.history import recent_history
from shared.storage.training_data import load_training_data
from shared.training.config import TrainingConfig
from shared.training.interactions import EVENT_CODES
from tests.factories import event
from tests.training_data import A_MODEL_SERVES, END, store_events


def search(event_id: str = "s-1", user_id: str = "u-1", query: str = "oak board", **fields):
    """A search naming no item (give item_id to name the result picked)."""
    sent = event(event_id, user_id, event_type="search", properties={"query": query})
    del sent["item_id"]
    return {**sent, **fields}


def click(event_id: str = "k-1", user_id: str = "u-1", item_id: str = "sku-1", **fields):
    return event(event_id, user_id, item_id, "click", **fields)


def test_the_new_types_come_last_so_stored_codes_keep_their_meaning():
    assert list(EventType)[:5] == ["view", "add_to_cart", "remove_from_cart", "purchase", "return"]
    assert list(EventType)[5:7] == ["click", "search"]  # message_sent came after them
    assert EVENT_CODES[EventType.PURCHASE] == 3


def test_training_weights_a_click_a_little_and_a_search_not_at_all():
    weights = TrainingConfig().event_weights
    assert (weights[EventType.CLICK], weights[EventType.SEARCH]) == (0.1, 0.0)


def test_a_search_without_an_item_and_a_click_are_stored(api, moto_tables):
    status, body = api.json("POST", "/events", {"events": [search(), click(), search("s-2", item_id="sku-2")]})

    assert (status, body["accepted"]) == (200, 3), body
    rows = {row["event_id"]["S"]: row for row in dynamo.client().scan(TableName=moto_tables["EventsTable"])["Items"]}
    assert "item_id" not in rows["s-1"]  # not even a null
    assert rows["s-1"]["properties"]["M"]["query"] == {"S": "oak board"}
    assert rows["s-2"]["item_id"] == {"S": "sku-2"}  # a search may name the result picked
    assert rows["k-1"]["item_id"] == {"S": "sku-1"}


@pytest.mark.parametrize(("sent", "field"), [
    (search(properties={}), "properties.query"),
    (search(properties={"q": "oak"}), "properties.query"),
    (search(query="   "), "properties.query"),
    (search(properties={"query": 42}), "properties.query"),
    ({k: v for k, v in click().items() if k != "item_id"}, "item_id"),
    (click(item_id=None), "item_id"),
    ({k: v for k, v in event().items() if k != "item_id"}, "item_id"),  # every other type still needs one
    ({k: v for k, v in event(event_type="add_to_cart").items() if k != "item_id"}, "item_id"),
])
def test_a_search_needs_its_query_and_every_other_type_an_item(api, sent, field):
    status, body = api.json("POST", "/events", {"events": [sent]})

    assert status == 422, body
    assert [[e["field"] for e in r["errors"]] for r in body["rejected"]] == [[field]]


def test_a_purchase_without_an_item_is_still_refused(api):
    sent = {k: v for k, v in event(event_type="purchase").items() if k != "item_id"}
    status, body = api.json("POST", "/events", {"events": [sent]})
    assert status == 422
    assert "item_id" in {e["field"] for e in body["rejected"][0]["errors"]}


def test_history_leaves_searches_out_but_counts_them_within_the_limit(api, moto_tables):
    events = [event("v-1", item_id="sku-1", timestamp="2025-01-01T10:00:00Z"),
              click("k-1", item_id="sku-2", timestamp="2025-01-01T11:00:00Z"),
              search("s-1", timestamp="2025-01-01T12:00:00Z")]
    assert api.json("POST", "/events", {"events": events})[0] == 200
    table = moto_tables["EventsTable"]

    assert [(e.item_id, e.event_type) for e in recent_history(table, "u-1")] == [("sku-2", "click"), ("sku-1", "view")]
    # The newest two events are the search and the click.
    assert [e.item_id for e in recent_history(table, "u-1", limit=2)] == ["sku-2"]
    # The nightly read agrees with the request (the recent-activity item keeps no search at all).
    assert [e.item_id for e in load_customers(table, moto_tables["UsersTable"], moto_tables["ItemsTable"])
            .histories["u-1"]] == ["sku-2", "sku-1"]


def test_the_training_loader_skips_searches_and_keeps_clicks(moto_tables):
    store_events(moto_tables["EventsTable"], [
        search("s-1", timestamp="2025-03-01T10:00:00Z"), click("k-1", timestamp="2025-03-01T10:01:00Z"),
        event("p-1", event_type="purchase", timestamp="2025-03-01T10:02:00Z")])

    data = load_training_data(moto_tables["EventsTable"], moto_tables["UsersTable"], TrainingConfig(),
                              datetime(2025, 3, 2, tzinfo=timezone.utc))

    kinds = {code: kind for kind, code in EVENT_CODES.items()}
    assert sorted(kinds[int(c)] for c in data.interactions.event_codes) == ["click", "purchase"]
    assert data.interactions.item_ids == ["sku-1"]


@pytest.fixture
def shop_with_searches(api, moto_tables):
    """A small generated shop whose customers also searched and clicked, with a model trained on it."""
    shop = generate_shop(seed=2, n_users=80, n_items=40, end=END)
    assert api.json("POST", "/items", {"items": shop.items})[0] == 200
    extra = []
    for number, e in enumerate([e for e in shop.events if e["event_type"] == "view"][::3]):
        stamp = {"timestamp": e["timestamp"], "channel": e["channel"]}
        extra.append(search(f"s-{number}", e["user_id"], f"query {number}", **stamp))
        extra.append(click(f"k-{number}", e["user_id"], e["item_id"], **stamp))
    store_events(moto_tables["EventsTable"], shop.events + extra)
    manifest = api.train_and_wait(A_MODEL_SERVES)  # the nightly read: training and segments
    assert manifest["status"] == "accepted" and manifest["active"], manifest["reason"]
    return shop


def test_a_customer_who_searched_and_clicked_gets_recommendations_segments_and_an_export(api, shop_with_searches):
    buyer = Counter(e["user_id"] for e in shop_with_searches.events
                    if e["event_type"] == "purchase").most_common(1)[0][0]
    # And searches sent through the API, a moment ago: the request path reads them at once.
    assert api.json("POST", "/events", {"events": [search("s-now", buyer, "linen"), search("s-now-2", buyer)]})[0] == 200

    status, recommended = api.json("GET", f"/users/{buyer}/recommendations?limit=10")
    assert status == 200 and recommended["personalized"], recommended
    assert recommended["items"]

    status, segments = api.json("GET", f"/users/{buyer}/segments")
    assert status == 200, segments
    assert segments["tags"]
    status, nightly = api.json("GET", "/segments")  # materialized by the training run, from the same read
    assert status == 200 and nightly["run"] and nightly["segments"], nightly

    status, exported = api.json("GET", f"/users/{buyer}/export")
    assert status == 200
    events = list(exported["events"])
    while exported.get("next_cursor"):
        exported = api.json("GET", f"/users/{buyer}/export?cursor={exported['next_cursor']}")[1]
        events += exported["events"]
    searches = [e for e in events if e["event_type"] == "search"]
    assert {e["event_id"] for e in searches} >= {"s-now", "s-now-2"}
    assert all("item_id" not in e and e["properties"]["query"] for e in searches)
    assert any(e["event_type"] == "click" for e in events)
