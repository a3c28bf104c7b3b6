"""What a request reads is bounded and small (issue 17): the recent-activity item kept at ingest
and the catalog snapshot, with the freshness of before (moto)."""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from collections import Counter
from datetime import timedelta

import pytest

from devstack.demo_data import generate_shop
from shared import recent
from shared.catalog import Item
from shared.recent import RecentActivity, RecentEvent
from shared.serving.catalog_snapshot import CatalogSnapshot
from shared.storage import dynamo
from shared.storage.catalog import catalog_snapshot, triggers_catalog
from shared.storage.history import recent_activity_of, recent_history
from shared.storage.users import RECENT_SUFFIX, read_recent
from tests.factories import ago, event, purchase
from tests.training_data import A_MODEL_SERVES, END, store_events


def tables():
    from shared.config import get_settings
    settings = get_settings()
    return settings.events_table, settings.users_table, settings.items_table


def recent_item(user_id: str) -> dict | None:
    response = dynamo.client().get_item(TableName=tables()[1], Key=dynamo.serialize({"user_id": user_id + RECENT_SUFFIX}))
    return response.get("Item")


def kept(user_id: str) -> list[RecentEvent]:
    activity = read_recent(tables()[1], [user_id]).get(user_id)
    return list(activity.events) if activity else []


# --- the recent-activity item, kept at ingest ---

def test_an_event_stored_a_moment_ago_is_read_from_the_recent_item(api):
    assert api.json("POST", "/events", {"events": [event("e-1", item_id="sku-1", timestamp=ago(hours=2))]})[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-2", timestamp=ago(seconds=1))]})[0] == 200

    history = recent_activity_of(*tables()[:2], ["u-1"])

    assert [(e.item_id, e.event_type) for e in history] == [("sku-2", "purchase"), ("sku-1", "view")]
    assert history == recent_history(tables()[0], "u-1")  # what the Query would have answered


def test_the_recent_item_keeps_the_newest_events_within_its_bound(api, monkeypatch):
    monkeypatch.setattr(recent, "RECENT_EVENTS", 40)
    views = [event(f"e-{n}", item_id=f"sku-{n}", timestamp=ago(minutes=200 - n)) for n in range(100)]
    for start in (0, 50):  # two requests: the second rewrites the item the first left
        assert api.json("POST", "/events", {"events": views[start:start + 50]})[1]["accepted"] == 50

    assert [e.item_id for e in kept("u-1")] == [f"sku-{n}" for n in range(99, 59, -1)]
    assert int(recent_item("u-1")["count"]["N"]) == 40


def test_long_ids_keep_fewer_events_never_a_larger_item():
    long_ids = [RecentEvent(ts=f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}.000000Z", item_id=f"{n:04d}-{os.urandom(120).hex()}",
                            event_type="view") for n in range(recent.RECENT_EVENTS)]

    after, payload = RecentActivity().adding(long_ids, "")

    assert len(payload) <= recent.RECENT_MAX_BYTES and 0 < len(after.events) < recent.RECENT_EVENTS
    assert after.events[0].item_id.startswith("0499")  # the newest are the ones kept
    assert recent.decode(payload) == list(after.events)


def test_a_retried_batch_adds_nothing_twice_to_the_recent_item(api):
    first = [event(f"e-{n}", item_id=f"sku-{n}", timestamp=ago(minutes=60 - n)) for n in range(30)]
    assert api.json("POST", "/events", {"events": first})[1]["accepted"] == 30

    status, body = api.json("POST", "/events", {"events": first + [purchase("p-1", item_id="sku-99", timestamp=ago(seconds=1))]})

    assert status == 200 and body["accepted"] == 1 and body["duplicates"] == 30
    items = [e.item_id for e in kept("u-1")]
    assert len(items) == 31 and Counter(items).most_common(1)[0][1] == 1 and items[0] == "sku-99"


def test_erasure_deletes_the_recent_item_and_export_shows_its_events(api):
    assert api.json("POST", "/events", {"events": [event("e-1", item_id="sku-1"), purchase("p-1", item_id="sku-2")]})[0] == 200
    exported = api.json("GET", "/users/u-1/export")[1]["events"]
    assert {e.item_id for e in kept("u-1")} == {e["item_id"] for e in exported} == {"sku-1", "sku-2"}

    assert api.json("DELETE", "/users/u-1")[0] in (200, 202)

    assert recent_item("u-1") is None
    assert recent_activity_of(*tables()[:2], ["u-1"]) == []


def test_a_customer_from_before_the_item_is_read_by_query_and_keeps_that_history(api):
    store_events(tables()[0], [event(f"old-{n}", item_id=f"sku-{n}", timestamp=(END - timedelta(days=n)).isoformat())
                               for n in range(5)])
    assert recent_item("u-1") is None
    assert [e.item_id for e in recent_activity_of(*tables()[:2], ["u-1"])] == [f"sku-{n}" for n in range(5)]

    assert api.json("POST", "/events", {"events": [event("new-1", item_id="sku-new", timestamp=ago(seconds=1))]})[0] == 200

    # The item starts from the events stored before it: nothing the Query showed is hidden.
    assert [e.item_id for e in kept("u-1")] == ["sku-new", *(f"sku-{n}" for n in range(5))]


def damaged(user_id: str, **attributes: dict) -> None:
    """The customer's recent-activity item as stored, with these attributes (DynamoDB JSON) replaced."""
    dynamo.client().put_item(TableName=tables()[1], Item={**recent_item(user_id), **attributes})


def payload(rows: list) -> dict:
    return {"B": zlib.compress(json.dumps(rows).encode())}


STAMP = "2026-01-01T00:00:00.000000Z"
DAMAGE = {
    "bytes that do not decompress": {"events": {"B": b"not zlib at all"}},
    "not a list of rows": {"events": payload({"ts": STAMP})},
    "a row too short": {"events": payload([[STAMP, "sku-1"]])},
    "an item id that is a number": {"events": payload([[STAMP, 7, "view"]])},
    "a stamp that is not a time": {"events": payload([["yesterday", "sku-1", "view"]])},
    "a price that is a word": {"events": payload([[STAMP, "sku-1", "purchase", 1, "web", "cheap"]])},
    "events that are a text": {"events": {"S": "sku-1,sku-2"}},
    "an erasure that is a number": {"erased_at": {"N": "1"}},
    "another customer's item": {"recent_of": {"S": "u-2"}},
    "an erasure that is no time": {"erased_at": {"S": "soon"}},
    "a version that is a text": {"recent_version": {"S": "two"}},
    "a version that is not whole": {"recent_version": {"N": "1.5"}},
    "a version that is a list": {"recent_version": {"L": []}},
    "rows nested past Python's recursion limit": {"events": {"B": zlib.compress(b"[" * 200_000 + b"]" * 200_000)}},
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE)
def test_an_unreadable_recent_item_is_read_by_query_and_replaced_at_the_next_ingest(api, damage):
    assert api.json("POST", "/events", {"events": [event("e-1", item_id="sku-1", timestamp=ago(hours=2)),
                                                   purchase("p-1", item_id="sku-2", timestamp=ago(hours=1))]})[0] == 200
    damaged("u-1", **damage)

    # Serving reads what the Query answers, and every route that reads the history answers.
    assert [e.item_id for e in recent_activity_of(*tables()[:2], ["u-1"])] == ["sku-2", "sku-1"]
    assert recent_activity_of(*tables()[:2], ["u-1"]) == recent_history(tables()[0], "u-1")
    assert api.json("GET", "/users/u-1/recommendations")[0] == 200
    segments = api.json("GET", "/users/u-1/segments")
    assert segments[0] == 200 and segments[1]["features"]["channels"] == {"web": 2}  # both events, from the Query

    # The next event replaces the item with one that reads, started from the stored events.
    assert api.json("POST", "/events", {"events": [event("e-2", item_id="sku-3", timestamp=ago(seconds=1))]})[0] == 200
    activity = read_recent(tables()[1], ["u-1"])["u-1"]
    assert not activity.unreadable and [e.item_id for e in activity.events] == ["sku-3", "sku-2", "sku-1"]
    assert recent_activity_of(*tables()[:2], ["u-1"]) == recent_history(tables()[0], "u-1")


def test_a_linked_visitors_events_count_for_the_customer(api):
    status, body = api.anonymous().json("POST", "/visitors")
    visitor, token = body["visitor_id"], body["token"]
    assert api.json("POST", "/events", {"events": [event("v-1", user_id=visitor, item_id="sku-seen",
                                                         timestamp=ago(seconds=5))]})[0] == 200
    assert api.json("POST", "/events", {"events": [event("c-1", item_id="sku-own", timestamp=ago(hours=1))]})[0] == 200
    assert api.as_customer("u-1").json("POST", "/users/u-1/visitors", {"visitor_token": token})[0] == 200

    history = recent_activity_of(*tables()[:2], ["u-1", visitor])

    assert [e.item_id for e in history] == ["sku-seen", "sku-own"]


# --- answers, with a model ---

@pytest.fixture
def shop(api, moto_tables):
    shop = generate_shop(seed=2, n_users=80, n_items=40, end=END)
    assert api.json("POST", "/items", {"items": shop.items})[0] == 200
    store_events(moto_tables["EventsTable"], shop.events)
    assert api.train_and_wait(A_MODEL_SERVES)["active"]
    return shop


def snapshot() -> CatalogSnapshot:
    module = sys.modules["lambda_RecommendFunction_app"]
    return module.catalog_view


def wait_for_snapshot() -> None:
    deadline = time.monotonic() + 30
    while not snapshot().ready():
        assert time.monotonic() < deadline, "the catalog snapshot did not load"
        time.sleep(0.02)


def test_a_purchase_stored_a_moment_ago_personalizes_the_next_answer(api, shop):
    before = api.json("GET", "/users/newcomer/recommendations?limit=5")[1]
    assert before["personalized"] is False  # nothing of theirs yet: popular items
    bought = before["items"][0]["item_id"]

    assert api.json("POST", "/events", {"events": [purchase("p-1", "newcomer", bought, timestamp=ago(seconds=1))]})[0] == 200
    after = api.json("GET", "/users/newcomer/recommendations?limit=5")[1]

    assert after["personalized"] is True and bought not in {i["item_id"] for i in after["items"]}


def test_an_item_out_of_stock_since_the_snapshot_is_never_returned(api, shop):
    popular = api.json("GET", "/popular?limit=5")[1]["items"]
    wait_for_snapshot()
    gone = popular[0]["item_id"]
    assert snapshot().details([gone])[gone].in_stock
    # Changed behind the function's back: the snapshot still says in stock, at the old price.
    dynamo.client().update_item(TableName=tables()[2], Key=dynamo.serialize({"item_id": gone}),
                                UpdateExpression="SET in_stock = :no", ExpressionAttributeValues={":no": {"BOOL": False}})
    cheaper = popular[1]["item_id"]
    dynamo.client().update_item(TableName=tables()[2], Key=dynamo.serialize({"item_id": cheaper}),
                                UpdateExpression="SET price = :p", ExpressionAttributeValues={":p": {"N": "0.5"}})

    again = api.json("GET", "/popular?limit=5")[1]["items"]
    buyer = Counter(e["user_id"] for e in shop.events if e["event_type"] == "purchase").most_common(1)[0][0]
    recommended = api.json("GET", f"/users/{buyer}/recommendations?limit=10&include_purchased=true")[1]["items"]

    assert gone not in {i["item_id"] for i in again} and len(again) == 5
    assert float(next(i for i in again if i["item_id"] == cheaper)["price"]) == 0.5
    assert gone not in {i["item_id"] for i in recommended}
    assert gone not in {i["item_id"] for i in api.json("GET", f"/items/{cheaper}/similar?limit=10")[1]["items"]}


def test_a_catalog_item_that_does_not_read_is_left_out_of_every_answer_until_stored_again(api, shop):
    popular = api.json("GET", "/popular?limit=5")[1]["items"]
    wait_for_snapshot()
    damaged = popular[0]["item_id"]
    dynamo.client().update_item(TableName=tables()[2], Key=dynamo.serialize({"item_id": damaged}),
                                UpdateExpression="SET price = :p", ExpressionAttributeValues={":p": {"S": "cheap"}})
    buyer = Counter(e["user_id"] for e in shop.events if e["event_type"] == "purchase").most_common(1)[0][0]

    # Re-checked at request time (the snapshot still holds it): left out, the others answer.
    answers = [api.json("GET", path) for path in (
        "/popular?limit=5", f"/users/{buyer}/recommendations?limit=10", f"/items/{popular[1]['item_id']}/similar",
        f"/items/{popular[1]['item_id']}/bought-together", f"/users/{buyer}/segments")]
    assert all(status == 200 for status, _ in answers)
    assert all(damaged not in {i["item_id"] for i in body.get("items", [])} for _, body in answers)
    assert len(answers[0][1]["items"]) == 5
    status, body = api.json("GET", f"/items/{damaged}")
    assert status == 404 and "does not read" in body["error"]["message"]
    triggered = {item.item_id for item in triggers_catalog(tables()[2], "2000-01-01")}
    assert damaged not in catalog_snapshot(tables()[2]) and damaged not in triggered and len(triggered) > 30

    fixed = {k: v for k, v in next(i for i in shop.items if i["item_id"] == damaged).items() if k != "item_id"}
    assert api.json("PUT", f"/items/{damaged}", fixed)[0] == 200
    assert api.json("GET", f"/items/{damaged}")[0] == 200 and damaged in catalog_snapshot(tables()[2])


def test_the_catalog_is_scanned_once_not_on_every_request(api, shop, monkeypatch):
    from shared.storage import catalog

    scans = []
    real = catalog.scan_by_key
    monkeypatch.setattr(catalog, "scan_by_key", lambda *a, **k: scans.append(a[0]) or real(*a, **k))
    buyer = Counter(e["user_id"] for e in shop.events if e["event_type"] == "purchase").most_common(1)[0][0]

    for _ in range(10):
        assert api.json("GET", f"/users/{buyer}/recommendations?limit=5")[0] == 200
        assert api.json("GET", "/popular?limit=5")[0] == 200
    wait_for_snapshot()

    assert len(scans) == 1


# --- the snapshot's schedule, on its own ---

def test_the_snapshot_reloads_in_the_background_only_when_it_is_old():
    now = [0.0]
    loads, started, reads = [], [], []
    catalog = {"sku-1": Item(item_id="sku-1", title="Mug", category="kitchen")}
    view = CatalogSnapshot(load_all=lambda: loads.append(now[0]) or catalog,
                           read=lambda ids: reads.append(list(ids)) or {i: catalog[i] for i in ids if i in catalog},
                           newest_ids=lambda category, limit: [], refresh_seconds=300, clock=lambda: now[0],
                           start=started.append)

    def request() -> dict:  # what an answer asks: rows to compose from, then the returned ones again
        found = view.details(["sku-1"])
        view.current(["sku-1"])
        return found

    assert request() == catalog and reads == [["sku-1"], ["sku-1"]]  # not loaded yet: read by key
    assert len(started) == 1 and loads == []  # the load was handed to the background, not run here
    request()
    assert len(started) == 1  # one load at a time
    started[0]()
    reads.clear()
    for _ in range(50):
        now[0] += 1
        assert request() == catalog
    assert (len(started), len(loads), len(reads)) == (1, 1, 50)  # loaded: only the returned item is read

    now[0] += 300
    request()
    assert len(started) == 2  # old: one reload, in the background again


def loaded_snapshot() -> tuple[list[float], dict[str, Item], list[list[str]], CatalogSnapshot]:
    """(its clock, the catalog it reads, the reads by key, a snapshot loaded at once)."""
    now = [0.0]
    catalog = {"sku-1": Item(item_id="sku-1", title="Mug", category="kitchen")}
    reads: list[list[str]] = []
    view = CatalogSnapshot(load_all=lambda: dict(catalog),
                           read=lambda ids: reads.append(list(ids)) or {i: catalog[i] for i in ids if i in catalog},
                           newest_ids=lambda category, limit: [i for i, item in catalog.items() if item.category == category],
                           refresh_seconds=300, clock=lambda: now[0], start=lambda load: load())
    view.refresh_when_due()
    assert view.ready()
    return now, catalog, reads, view


def test_an_item_the_catalog_feed_sends_after_its_first_events_shows_within_30_s_and_at_once_as_new():
    """An event's item read by key before the feed sent it is not read on every request after,
    nor hidden until the next load (300 s): it is read again after 30 s, and at once when the
    by-category index lists it (new in a favourite category)."""
    now, catalog, reads, view = loaded_snapshot()

    assert view.details(["sku-1", "sku-2"]) == {"sku-1": catalog["sku-1"]} and reads == [["sku-2"]]
    assert view.details(["sku-2"]) == {} and reads == [["sku-2"]]  # absent: not read on every request
    catalog["sku-2"] = Item(item_id="sku-2", title="Teapot", category="kitchen")
    now[0] += 10
    assert [i.item_id for i in view.newest("kitchen", 5)] == ["sku-1", "sku-2"]  # the index lists it: read now
    assert view.details(["sku-2"]) == {"sku-2": catalog["sku-2"]}



def test_an_absent_item_is_read_again_after_30_s_not_before():
    now, catalog, reads, view = loaded_snapshot()
    assert view.details(["sku-9"]) == {}
    catalog["sku-9"] = Item(item_id="sku-9", title="Spoon", category="kitchen")
    now[0] += 29
    assert view.details(["sku-9"]) == {} and reads == [["sku-9"]]
    now[0] += 1
    assert view.details(["sku-9"]) == {"sku-9": catalog["sku-9"]} and reads == [["sku-9"], ["sku-9"]]


# --- a customer's segments: the categories of what they bought, from a snapshot ---

def categories_snapshot():
    return sys.modules["lambda_SegmentsFunction_app"].categories


def test_a_customers_segments_read_the_categories_from_a_snapshot_and_a_new_item_at_once(api, shop, monkeypatch):
    """Before, each request read the category of everything the customer bought by key (about 82
    of a request's 85.8 read units for 170 purchases); now from a snapshot loaded in the
    background, with an item added since read by key."""
    buyer = Counter(e["user_id"] for e in shop.events if e["event_type"] == "purchase").most_common(1)[0][0]
    first = api.json("GET", f"/users/{buyer}/segments")[1]
    deadline = time.monotonic() + 30
    while not categories_snapshot().ready():
        assert time.monotonic() < deadline, "the categories snapshot did not load"
        time.sleep(0.02)
    read = []
    batch_get = dynamo.batch_get
    monkeypatch.setattr(dynamo, "batch_get", lambda table, keys, **kw: read.append((table, len(keys)))
                        or batch_get(table, keys, **kw))

    for _ in range(3):
        again = api.json("GET", f"/users/{buyer}/segments")[1]
        assert again["tags"] == first["tags"] and again["features"] == first["features"]
    assert first["features"]["category_purchases"] and not [r for r in read if r[0] == tables()[2]]

    assert api.json("PUT", "/items/sku-new", {"title": "Spade", "category": "tools-new"})[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-new", buyer, "sku-new", timestamp=ago(seconds=1))]})[0] == 200
    after = api.json("GET", f"/users/{buyer}/segments")[1]
    assert after["features"]["category_purchases"].get("tools-new") == 1
    assert [r for r in read if r[0] == tables()[2]] == [(tables()[2], 1)]  # the new item only, by key


def by_hand(user_id: str, event_id: str, **attributes: dict) -> None:
    """An event row as no version of ingest writes it: these attributes (DynamoDB JSON) beside a key and a stamp."""
    dynamo.client().put_item(TableName=tables()[0], Item={
        "user_id": {"S": user_id}, "event_id": {"S": event_id}, "ts": {"S": ago(hours=3)}, **attributes})


def test_a_stored_event_no_version_of_ingest_writes_costs_neither_its_customer_nor_a_batchs_others_anything(api):
    """A customer with events from before the recent-activity item: ingest starts the item from
    them, and rows written by hand (no type, a word for a price, properties as text) once made
    every batch holding that customer answer 500, the other customers' events not stored."""
    store_events(tables()[0], [event("old-1", item_id="sku-1", timestamp=(END - timedelta(days=1)).isoformat())])
    by_hand("u-1", "hand-1", item_id={"S": "sku-9"})
    by_hand("u-1", "hand-2", item_id={"S": "sku-9"}, event_type={"S": "purchase"}, price={"S": "cheap"})
    by_hand("u-1", "hand-3", item_id={"S": "sku-9"}, event_type={"S": "view"}, properties={"S": "discount"})

    status, body = api.json("POST", "/events", {"events": [event("e-1", item_id="sku-3", timestamp=ago(seconds=1)),
                                                           event("e-2", user_id="u-2", item_id="sku-4",
                                                                 timestamp=ago(seconds=1))]})

    assert status == 200, body
    assert [e.item_id for e in kept("u-1")] == ["sku-3", "sku-1"] and [e.item_id for e in kept("u-2")] == ["sku-4"]


def test_events_of_a_type_or_quantity_no_version_of_ingest_writes_cost_a_request_nothing(api, shop):
    """Serving weighs a customer's events as training does: only the types it counts, each
    quantity within what ingest accepts; before, such a row answered 500 (KeyError, infinity)."""
    item = shop.events[0]["item_id"]
    assert api.json("POST", "/events", {"events": [purchase("p-1", "u-odd", item, timestamp=ago(hours=1))]})[0] == 200
    damaged("u-odd", events=payload([[ago(minutes=5), item, "wishlist"], [ago(minutes=4), item, "purchase", 10**400],
                                      [ago(minutes=3), item, "view", 1e308], [ago(hours=1), item, "purchase"]]))
    store_events(tables()[0], [event("old-1", "u-query", item, timestamp=(END - timedelta(days=1)).isoformat())])
    by_hand("u-query", "hand-1", item_id={"S": item}, event_type={"S": "wishlist"})
    by_hand("u-query", "hand-2", item_id={"S": item}, event_type={"S": "purchase"}, quantity={"N": "1e39"})
    assert recent_item("u-query") is None  # read by its Query

    for customer in ("u-odd", "u-query"):
        status, body = api.json("GET", f"/users/{customer}/recommendations?limit=5")
        assert status == 200 and body["personalized"] is True, body
        status, body = api.json("POST", f"/users/{customer}/rank", {"item_ids": [shop.events[1]["item_id"], item]})
        assert status == 200, body


def test_a_request_during_an_unfinished_erasure_uses_none_of_the_erased_events(api, shop):
    """An erasure deletes the recent-activity item first, then the events, over as many
    invocations as a long history takes; a request meanwhile reads the Query, which must leave
    out what the erasure covers, as ingest does."""
    from shared.config import get_settings
    from shared.storage.privacy import PrivacyStore

    buyer = Counter(e["user_id"] for e in shop.events if e["event_type"] == "purchase").most_common(1)[0][0]
    assert api.json("GET", f"/users/{buyer}/recommendations?limit=5")[1]["personalized"] is True
    settings = get_settings()
    erasure = PrivacyStore(settings.events_table, settings.users_table, settings.segments_table).erase(buyer, lambda: 0)
    assert erasure.status == "in_progress" and recent_history(tables()[0], buyer)  # nothing deleted yet

    after = api.json("GET", f"/users/{buyer}/recommendations?limit=5")[1]

    assert after["personalized"] is False


def test_a_bought_set_whose_owner_is_not_a_text_is_no_bought_set_and_costs_a_request_nothing(api, shop):
    from shared.storage.users import PURCHASES_SUFFIX

    item = shop.events[0]["item_id"]
    assert api.json("POST", "/events", {"events": [purchase("p-1", "u-odd", item, timestamp=ago(hours=1))]})[0] == 200
    dynamo.client().update_item(TableName=tables()[1], Key=dynamo.serialize({"user_id": "u-odd" + PURCHASES_SUFFIX}),
                                UpdateExpression="SET purchases_of = :seven", ExpressionAttributeValues={":seven": {"N": "7"}})

    status, body = api.json("GET", "/users/u-odd/recommendations?limit=5")

    assert status == 200 and body["personalized"] is True, body
    assert item not in {i["item_id"] for i in body["items"]}  # bought: from the history, as before the set existed


def test_a_bought_set_stored_as_texts_is_replaced_at_the_next_purchase_not_a_500_for_the_batch(api):
    """Key sets are binary sets; one stored as a string set (by hand) failed the ADD of every
    transaction of its customer, and of the batch's other customers with it."""
    from shared.storage.users import PURCHASES_SUFFIX, purchased_items

    assert api.json("POST", "/events", {"events": [purchase("p-1", "u-1", "sku-1", timestamp=ago(hours=1))]})[0] == 200
    dynamo.client().update_item(TableName=tables()[1], Key=dynamo.serialize({"user_id": "u-1" + PURCHASES_SUFFIX}),
                                UpdateExpression="SET item_keys = :texts, order_keys = :texts",
                                ExpressionAttributeValues={":texts": {"SS": ["sku-1"]}})
    assert len(purchased_items(tables()[1], "u-1")) == 0

    status, body = api.json("POST", "/events", {"events": [purchase("p-2", "u-1", "sku-2", timestamp=ago(seconds=2)),
                                                           purchase("p-3", "u-2", "sku-3", timestamp=ago(seconds=1))]})

    assert status == 200 and body["accepted"] == 2, body
    bought = purchased_items(tables()[1], "u-1")
    assert "sku-2" in bought and bought.truncated  # what the damaged set held is not known
    assert "sku-3" in purchased_items(tables()[1], "u-2")
    assert api.json("POST", "/events", {"events": [purchase("p-4", "u-1", "sku-4", timestamp=ago(seconds=1))]})[0] == 200
    assert all(item in purchased_items(tables()[1], "u-1") for item in ("sku-2", "sku-4"))  # added to again


def test_a_recent_item_that_inflates_to_millions_of_rows_is_read_by_query_not_decoded(api, monkeypatch):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1", timestamp=ago(hours=1))]})[0] == 200
    rows = [[ago(minutes=5), "sku-9", "view"]] * 200_000  # far under the item's 32 KB once compressed
    payload = zlib.compress(json.dumps(rows).encode(), 9)
    assert len(payload) < recent.RECENT_MAX_BYTES
    item = recent_item("u-1")
    dynamo.client().put_item(TableName=tables()[1], Item={**item, "events": {"B": payload}})
    decoded = Counter()
    from_row = RecentEvent.from_row.__func__
    monkeypatch.setattr(RecentEvent, "from_row", classmethod(lambda cls, row: decoded.update([1]) or from_row(cls, row)))

    status, body = api.json("GET", "/users/u-1/segments")

    assert status == 200, body
    assert decoded[1] == 0  # not one row of it: the customer's events are read by Query, as serving reads them
    assert [e.item_id for e in recent_activity_of(*tables()[:2], ["u-1"])] == ["sku-1"]
