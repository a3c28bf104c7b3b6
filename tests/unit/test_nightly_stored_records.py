"""The nightly jobs against one stored row written by hand: it costs no other customer their
segments, triggers, model or experiment results (moto)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from shared.config import get_settings
from shared.events import format_timestamp
from shared.history import HistoryEvent
from shared.storage import dynamo
from shared.storage.bus import LocalBus
from shared.users import User
from tests.factories import members_by_segment

NOW = datetime.now(timezone.utc)


def seen(item_id: str, days_ago: float, event_type: str = "view") -> HistoryEvent:
    return HistoryEvent(item_id=item_id, event_type=event_type, quantity=1,
                        timestamp=(NOW - timedelta(days=days_ago)).timestamp())


def put_item(table: str, row: dict) -> None:
    dynamo.client().put_item(TableName=table, Item=row)


def previous(store, when):
    store.write_run("r1", when.isoformat(),
                    members_by_segment([("rfm:at-risk", "rfm", "At Risk", "u-9", "was")]))


@pytest.mark.parametrize("price", ["NaN", "1E+40"])
def test_one_hand_written_price_costs_no_other_customer_their_triggers(moto_tables, tmp_path, price):
    from shared.segments.service import materialize_segments
    from shared.storage.customers import Customers
    from shared.storage.segments import SegmentStore

    items = moto_tables["ItemsTable"]
    marked = format_timestamp(NOW - timedelta(hours=2))
    old = format_timestamp(NOW - timedelta(days=60))
    # a good item, restocked since the last run: u-1 viewed it
    put_item(items, {"item_id": {"S": "sku-good"}, "category": {"S": "kitchen"}, "created_at": {"S": old},
                     "in_stock": {"BOOL": True}, "price": {"S": "10"}, "currency": {"S": "EUR"},
                     "restocked_at": {"S": marked}})
    # a hand-written row: a price as no version writes it, marked cheaper
    put_item(items, {"item_id": {"S": "sku-bad"}, "category": {"S": "kitchen"}, "created_at": {"S": old},
                     "in_stock": {"BOOL": True}, "price": {"S": price}, "currency": {"S": "EUR"},
                     "price_before_drop": {"S": "2E+40"}, "price_dropped_at": {"S": marked}})
    bus = LocalBus(tmp_path / "bus.jsonl")
    store = SegmentStore(moto_tables["SegmentsTable"])
    previous(store, NOW - timedelta(days=1))
    customers = Customers(users={"u-1": User(user_id="u-1"), "u-2": User(user_id="u-2")},
                          histories={"u-1": [seen("sku-good", 1)], "u-2": [seen("sku-bad", 1)]},
                          categories={})

    materialize_segments(get_settings(), store, {}, NOW, "r2", customers, bus=bus)

    published = [(e["DetailType"], json.loads(e["Detail"]).get("user_id")) for e in bus.read()]
    assert ("Viewed Item Back In Stock", "u-1") in published


def test_one_item_title_written_by_hand_as_a_number_costs_no_one_their_model(api, moto_tables):
    from devstack.demo_data import generate_shop
    from tests.training_data import A_MODEL_SERVES, END, store_events

    data = generate_shop(seed=2, n_users=80, n_items=40, end=END)
    assert api.json("POST", "/items", {"items": data.items})[0] == 200
    store_events(moto_tables["EventsTable"], data.events)
    bought = next(e["item_id"] for e in data.events if e["event_type"] == "purchase")
    dynamo.client().update_item(TableName=moto_tables["ItemsTable"], Key={"item_id": {"S": bought}},
                                UpdateExpression="SET title = :t", ExpressionAttributeValues={":t": {"N": "42"}})

    manifest = api.train_and_wait(A_MODEL_SERVES)

    assert manifest["status"] == "accepted", manifest.get("reason")


INDEX_DAMAGE = {
    "a tracked segment's index entry without its name": (
        "SET #s.#t = :v", {"#s": "segments", "#t": "rfm:at-risk"}, {":v": {"M": {"family": {"S": "rfm"},
                                                                                   "members": {"N": "1"}}}}),
    "a tracked segment's index entry that is a text": (
        "SET #s.#t = :v", {"#s": "segments", "#t": "rfm:at-risk"}, {":v": {"S": "At Risk"}}),
}


@pytest.mark.parametrize("damage", INDEX_DAMAGE.values(), ids=INDEX_DAMAGE)
def test_a_hand_written_index_entry_of_a_tracked_segment_does_not_stop_every_later_run(moto_tables, tmp_path,
                                                                                       damage):
    from shared.segments.service import materialize_segments
    from shared.storage.customers import Customers
    from shared.storage.segments import INDEX_KEY, SegmentStore

    store = SegmentStore(moto_tables["SegmentsTable"])
    previous(store, NOW - timedelta(days=1))
    expression, names, values = damage
    dynamo.client().update_item(TableName=moto_tables["SegmentsTable"], Key=dynamo.serialize(INDEX_KEY),
                                UpdateExpression=expression, ExpressionAttributeNames=names,
                                ExpressionAttributeValues=values)
    assert store.listing(None, 100, None).run == "r1"  # the listing takes it (the entry is left out)
    customers = Customers(users={"u-1": User(user_id="u-1")}, histories={"u-1": [seen("sku-1", 1)]},
                          categories={"sku-1": "kitchen"})

    materialize_segments(get_settings(), store, {}, NOW, "r2", customers, bus=LocalBus(tmp_path / "bus.jsonl"))

    assert store.index()["run"] == "r2"


@pytest.mark.parametrize("members", [{"L": [{"S": "u-9"}]}, {"S": "u-9"}], ids=["a list", "a text"])
def test_a_hand_written_members_page_of_a_tracked_segment_does_not_stop_every_later_run(moto_tables, tmp_path,
                                                                                        members):
    from shared.segments.service import materialize_segments
    from shared.storage.customers import Customers
    from shared.storage.segments import SegmentStore, _page_key

    store = SegmentStore(moto_tables["SegmentsTable"])
    previous(store, NOW - timedelta(days=1))
    dynamo.client().update_item(TableName=moto_tables["SegmentsTable"],
                                Key=dynamo.serialize({"segment_id": "rfm:at-risk", "sk": _page_key("r1", 1)}),
                                UpdateExpression="SET members = :m", ExpressionAttributeValues={":m": members})
    customers = Customers(users={"u-1": User(user_id="u-1")}, histories={"u-1": [seen("sku-1", 1)]},
                          categories={"sku-1": "kitchen"})

    materialize_segments(get_settings(), store, {}, NOW, "r2", customers, bus=LocalBus(tmp_path / "bus.jsonl"))

    assert store.index()["run"] == "r2"


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59.999999Z", "9999-12-31T20:00:00-05:00"])
def test_a_hand_written_view_time_at_the_end_of_the_calendar_costs_no_other_customer_their_triggers(
        moto_tables, tmp_path, stamp):
    from shared.segments.service import materialize_segments
    from shared.storage.customers import load_customers
    from shared.storage.segments import SegmentStore

    items, events = moto_tables["ItemsTable"], moto_tables["EventsTable"]
    old = format_timestamp(NOW - timedelta(days=60))
    put_item(items, {"item_id": {"S": "sku-good"}, "category": {"S": "kitchen"}, "created_at": {"S": old},
                     "in_stock": {"BOOL": True}, "price": {"S": "10"}, "currency": {"S": "EUR"},
                     "restocked_at": {"S": format_timestamp(NOW - timedelta(hours=2))}})
    for user_id, ts in (("u-1", format_timestamp(NOW - timedelta(days=1))), ("u-2", stamp)):
        put_item(events, {"user_id": {"S": user_id}, "event_id": {"S": f"e-{user_id}"}, "ts": {"S": ts},
                          "event_type": {"S": "view"}, "item_id": {"S": "sku-good"}, "quantity": {"N": "1"}})
    settings = get_settings()
    customers = load_customers(settings.events_table, settings.users_table, settings.items_table)
    bus = LocalBus(tmp_path / "bus.jsonl")
    store = SegmentStore(moto_tables["SegmentsTable"])
    previous(store, NOW - timedelta(days=1))

    materialize_segments(settings, store, {}, NOW, "r2", customers, bus=bus)

    published = [(e["DetailType"], json.loads(e["Detail"]).get("user_id")) for e in bus.read()]
    assert ("Viewed Item Back In Stock", "u-1") in published


def test_a_hand_written_impression_at_the_end_of_the_calendar_does_not_crash_every_nightly_run(api, moto_tables,
                                                                                                caplog):
    from devstack.gateway import LambdaContext
    from shared.experiments.attribution import Served, recommendation_id
    from shared.storage.blobs import S3Blobs
    from shared.storage.experiments import ExperimentStore
    from shared.storage.models import ModelStore
    from shared.storage.secrets import configured_recommendation_key
    from tests.conftest import MODEL_BUCKET
    from tests.training_data import A_MODEL_SERVES, seed_demo_shop
    from tests.unit.test_training_reads_once import train_handler

    seed_demo_shop(api, moto_tables["EventsTable"])
    rid = recommendation_id(Served("popular", "popular", None, None, None, 0), configured_recommendation_key(), "r")
    # An impression written by hand (a copy of a real one, its time mistyped): ingest would refuse it.
    put_item(moto_tables["EventsTable"], {
        "user_id": {"S": "u-x"}, "event_id": {"S": "imp-x"}, "event_type": {"S": "impression"},
        "ts": {"S": "9999-12-31T23:59:59.999999Z"}, "recommendation_id": {"S": rid}, "items": {"L": [{"S": "sku-a"}]}})

    manifest = train_handler()({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "accepted"
    assert ExperimentStore(ModelStore(S3Blobs(MODEL_BUCKET)).blobs).report().get("as_of")
    assert "old model versions pruned" in caplog.text
