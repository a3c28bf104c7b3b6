"""Triggers: the rules that decide what is published (shared/triggers.py), the buses that publish
it (shared/storage/bus.py), the catalog upsert and the nightly run that call them, and the doc."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber

from devstack.template import PROJECT_ROOT
from shared.catalog import ItemUpsert
from shared.consent import Consent, PurposeConsent
from shared.errors import StorageUnavailable
from shared.events import format_timestamp
from shared.history import HistoryEvent
from shared.segments.tags import RFM_GRID, Tag
from shared.storage.bus import (MAX_BYTES_PER_CALL, EventBridgeBus, LocalBus, NoBus, batches, bus_from_settings,
                                entry, entry_size)
from shared.triggers import (MAX_MATCHED_ITEMS, MAX_VIEWED_ITEMS_PER_CUSTOMER, SOURCE, TRACKED_SEGMENTS,
                             CatalogItem, DetailType, ItemBackInStock, SegmentRun, Trigger, interest_events,
                             item_change, item_events, item_marks, schemas_markdown, segment_events,
                             viewed_item_events)
from shared.users import User
from tests.factories import members_by_segment

NOW = datetime(2025, 6, 1, 3, 0, tzinfo=timezone.utc)
SINCE = NOW - timedelta(days=1)


def user(user_id: str, **fields) -> User:
    return User(user_id=user_id, **fields)


def seen(item_id: str, days_ago: float, event_type: str = "view") -> HistoryEvent:
    return HistoryEvent(item_id=item_id, event_type=event_type, quantity=1,
                        timestamp=(NOW - timedelta(days=days_ago)).timestamp())


def details(triggers: list[Trigger]) -> list[dict]:
    return [{"type": t.detail_type, **json.loads(t.detail_json())} for t in triggers]


# --- segments ---

def test_the_tracked_segments_are_the_tags_segmentation_gives():
    assert {"At Risk", "Can't Lose Them"} <= RFM_GRID.keys()
    assert TRACKED_SEGMENTS == (Tag("lifecycle", "Declining", "").segment_id, Tag("rfm", "At Risk", "").segment_id,
                                Tag("rfm", "Can't Lose Them", "").segment_id)


def test_segment_changes_between_two_runs_name_who_entered_and_who_left_with_the_reason():
    names = {"rfm:at-risk": "At Risk", "lifecycle:declining": "Declining"}
    previous = SegmentRun("r1", {"rfm:at-risk": {"u-1": "R2 F3", "u-2": "R1 F3"}}, names)
    current = SegmentRun("r2", {"rfm:at-risk": {"u-2": "R1 F4", "u-3": "R2 F4 M5"},
                                "lifecycle:declining": {"u-2": "top 20% by spend, but less"},
                                "rfm:champions": {"u-9": "not tracked"}}, names)
    users = {"u-3": user("u-3", consent=Consent(email=PurposeConsent(granted=True)))}

    found = details(segment_events(previous, current, users, {"u-1", "u-2", "u-3"}, NOW))

    assert [(d["type"], d["segment_id"], d["user_id"]) for d in found] == [
        ("Segment Entered", "lifecycle:declining", "u-2"),
        ("Segment Entered", "rfm:at-risk", "u-3"),
        ("Segment Left", "rfm:at-risk", "u-1")]
    entered = found[1]
    assert entered["reason"] == "entered At Risk: R2 F4 M5"
    assert (entered["run"], entered["previous_run"], entered["channels"]) == ("r2", "r1", ["email"])
    assert entered["schema_version"] == 1 and entered["occurred_at"] == format_timestamp(NOW)
    assert "R2 F3" in found[2]["reason"]


def test_the_first_run_is_the_baseline_and_the_erased_or_objecting_leave_without_an_event():
    current = SegmentRun("r2", {}, {})
    assert segment_events(None, SegmentRun("r1", {"rfm:at-risk": {"u-1": "x"}}, {}), {}, {"u-1"}, NOW) == []
    previous = SegmentRun("r1", {"rfm:at-risk": {"gone": "x", "objects": "x", "erased": "x"}}, {})
    users = {"objects": user("objects", consent=Consent(profiling=PurposeConsent(granted=False))),
             "erased": user("erased", erased_at=NOW)}
    assert segment_events(previous, current, users, {"objects", "erased"}, NOW) == []


def test_only_a_reachable_customer_is_named_entering_a_segment():
    """A linked visitor id is its customer's device, listed as a member of its own: an event naming
    it would name the customer twice, one of them by device. One who objects is named by none."""
    previous = SegmentRun("r1", {}, {})
    current = SegmentRun("r2", {"rfm:at-risk": {"u-1": "x", "v_phone": "x", "objects": "x"}}, {})
    users = {"v_phone": user("v_phone", linked_to="u-1"),
             "objects": user("objects", consent=Consent(profiling=PurposeConsent(granted=False)))}

    found = details(segment_events(previous, current, users, {"u-1", "v_phone", "objects"}, NOW))

    assert [d["user_id"] for d in found] == ["u-1"]


# --- items at upsert ---

def row(**fields) -> dict:
    return {"item_id": "sku-1", "category": "kitchen", "price": "10.00", "currency": "EUR", "in_stock": True,
            "retired": False, **fields}


def test_an_item_back_in_stock_or_cheaper_is_a_change_and_nothing_else_is():
    back = item_change(row(in_stock=False), row())
    cheaper = item_change(row(), row(price="7.50"))
    both = item_change(row(in_stock=False, price="12"), row(price="9"))
    assert (back.restocked, back.previous_price) == (True, None)
    assert (cheaper.restocked, cheaper.previous_price, cheaper.price) == (False, Decimal("10.00"), Decimal("7.50"))
    assert both.restocked and both.previous_price == Decimal("12")
    assert item_change(None, row()) is None  # new to the catalog: the nightly interest match covers it
    assert item_change(row(), row(price="12")) is None
    assert item_change(row(), row(price="7", currency="USD")) is None  # another currency is not cheaper
    assert item_change(row(in_stock=False), row(retired=True)) is None
    assert item_change(row(in_stock=True), row(in_stock=True)) is None


def test_item_events_say_what_changed_with_the_prices_as_text():
    found = details(item_events(item_change(row(in_stock=False, price="20"), row(price="15")), NOW))
    assert [d["type"] for d in found] == ["Item Back In Stock", "Item Price Dropped"]
    dropped = found[1]
    assert (dropped["previous_price"], dropped["price"], dropped["currency"], dropped["drop_percent"]) == (
        "20.00", "15.00", "EUR", 25.0)
    assert dropped["reason"] == "price down from 20.00 to 15.00 EUR"


def test_marks_are_set_by_a_change_and_carried_while_young():
    change = item_change(row(in_stock=False), row())
    assert item_marks(None, change, NOW) == {"restocked_at": format_timestamp(NOW)}
    young = format_timestamp(NOW - timedelta(days=2))
    old = format_timestamp(NOW - timedelta(days=30))
    assert item_marks(row(restocked_at=young, price_dropped_at=young, price_before_drop="11"), None, NOW) == {
        "restocked_at": young, "price_dropped_at": young, "price_before_drop": "11"}
    assert item_marks(row(restocked_at=old), None, NOW) == {}


# --- per customer, nightly ---

def catalog_item(item_id: str = "sku-1", **fields) -> CatalogItem:
    return CatalogItem(**{"item_id": item_id, "category": "kitchen", "created_at": format_timestamp(NOW - timedelta(
        days=100)), "price": Decimal("8"), "currency": "EUR", **fields})


RESTOCKED = format_timestamp(NOW - timedelta(hours=5))


def test_who_viewed_or_carted_an_item_now_back_or_cheaper_and_did_not_buy_it_hears_of_it():
    items = [catalog_item("back", restocked_at=RESTOCKED),
             catalog_item("cheaper", price_dropped_at=RESTOCKED, price_before_drop=Decimal("10")),
             catalog_item("still-out", restocked_at=RESTOCKED, in_stock=False),
             catalog_item("before", restocked_at=format_timestamp(SINCE - timedelta(hours=1))),
             catalog_item("untouched")]
    histories = {
        "viewer": [seen("back", 2), seen("cheaper", 1, "add_to_cart"), seen("still-out", 1), seen("before", 1),
                   seen("untouched", 1)],
        "bought-after": [seen("back", 3), seen("back", 1, "purchase")],
        "bought-before": [seen("back", 5, "purchase"), seen("back", 2)],
        "long-ago": [seen("back", 31)],
        "objects": [seen("back", 1)],
    }
    users = {"objects": user("objects", consent=Consent(profiling=PurposeConsent(granted=False))),
             "viewer": user("viewer", consent=Consent(push=PurposeConsent(granted=True)))}

    found = details(viewed_item_events(histories, users, items, SINCE, NOW))

    assert [(d["type"], d["user_id"], d["item_id"]) for d in found] == [
        ("Viewed Item Back In Stock", "bought-before", "back"),
        ("Viewed Item Price Dropped", "viewer", "cheaper"),
        ("Viewed Item Back In Stock", "viewer", "back")]
    cheaper = found[1]
    assert (cheaper["previous_price"], cheaper["price"], cheaper["seen_as"], cheaper["channels"]) == (
        "10.00", "8.00", "add_to_cart", ["push"])
    assert cheaper["reason"].startswith("carted on ")
    assert viewed_item_events(histories, users, items, None, NOW) == []  # the first run


def test_a_view_stored_minutes_ahead_of_the_run_counts_and_one_past_the_calendar_is_passed_over():
    items = [catalog_item("back", restocked_at=RESTOCKED)]
    ahead = HistoryEvent("back", "view", 1, (NOW + timedelta(minutes=2)).timestamp())  # ingest takes 5 minutes ahead
    past_the_end = HistoryEvent("back", "view", 1, datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp())

    found = details(viewed_item_events({"ahead": [ahead], "by-hand": [past_the_end]}, {}, items, SINCE, NOW))

    assert [d["user_id"] for d in found] == ["ahead"]


def test_viewed_item_events_are_capped_per_customer_the_most_recent_first():
    items = [catalog_item(f"i-{n}", restocked_at=RESTOCKED) for n in range(8)]
    history = [seen(f"i-{n}", n + 1) for n in range(8)]
    found = details(viewed_item_events({"u-1": history}, {}, items, SINCE, NOW))
    assert [d["item_id"] for d in found] == [f"i-{n}" for n in range(MAX_VIEWED_ITEMS_PER_CUSTOMER)]


def test_a_change_after_the_run_started_waits_for_the_next_run():
    later = format_timestamp(NOW + timedelta(minutes=5))
    items = [catalog_item("back", restocked_at=later)]
    assert viewed_item_events({"u-1": [seen("back", 1)]}, {}, items, SINCE, NOW) == []


def test_new_items_matching_declared_interests_make_one_event_per_customer():
    new = [catalog_item(f"k-{n}", category="Kitchen", created_at=format_timestamp(NOW - timedelta(hours=n + 1)))
           for n in range(7)]
    tagged = catalog_item("tent", category="outdoor", attributes={"tags": ["Camping ", "tents"]},
                          created_at=format_timestamp(NOW - timedelta(minutes=30)))
    old = catalog_item("old-tent", category="outdoor", attributes={"tags": ["camping"]})
    retired = catalog_item("gone", category="kitchen", retired=True, created_at=RESTOCKED)
    users = {
        "cook": user("cook", attributes={"interests": ["  kitchen"]}, consent=Consent(email=PurposeConsent(granted=True))),
        "camper": user("camper", attributes={"interests": ["camping", "Kitchen"]}),
        "objects": user("objects", attributes={"interests": ["kitchen"]},
                        consent=Consent(profiling=PurposeConsent(granted=False))),
        "nobody": user("nobody"),
    }

    found = details(interest_events(users, {"camper": ["k-0"]}, [*new, tagged, old, retired], SINCE, NOW))

    assert [d["user_id"] for d in found] == ["camper", "cook"]
    camper, cook = found
    assert [i["item_id"] for i in camper["items"]] == ["tent", "k-1", "k-2", "k-3", "k-4"]  # k-0 bought
    assert camper["items"][0]["interest"] == "camping" and camper["items"][1]["interest"] == "kitchen"
    assert [i["item_id"] for i in cook["items"]] == [f"k-{n}" for n in range(MAX_MATCHED_ITEMS)]
    assert cook["channels"] == ["email"] and cook["type"] == "Item Matches Interests"
    assert cook["reason"] == "5 new items matching the declared interest in kitchen"
    assert interest_events(users, {}, new, None, NOW) == []


# --- the buses ---

def triggers(count: int, detail_bytes: int = 0) -> list[Trigger]:
    return [Trigger(ItemBackInStock(occurred_at=format_timestamp(NOW), item_id=f"sku-{n}",
                                    category="k" * max(detail_bytes, 1), reason="back in stock"))
            for n in range(count)]


def test_entries_go_ten_at_a_time_and_never_over_256_kb_a_call():
    small = [entry(t) for t in triggers(25)]
    assert [len(b) for b in batches(small)] == [10, 10, 5]
    large = [entry(t) for t in triggers(5, detail_bytes=100_000)]
    sizes = [[entry_size(e) for e in b] for b in batches(large)]
    assert [len(b) for b in sizes] == [2, 2, 1]
    assert all(sum(b) <= MAX_BYTES_PER_CALL for b in sizes)


def test_the_eventbridge_bus_publishes_in_calls_of_ten(moto_tables):
    client = boto3.client("events")
    client.create_event_bus(Name="shop")
    calls = []

    class Counting:
        def put_events(self, **request):
            calls.append(request["Entries"])
            return client.put_events(**request)

    assert EventBridgeBus("shop", client=Counting).publish(triggers(23)) == 23
    assert [len(c) for c in calls] == [10, 10, 3]
    first = calls[0][0]
    assert (first["Source"], first["DetailType"], first["EventBusName"]) == (SOURCE, "Item Back In Stock", "shop")
    assert json.loads(first["Detail"])["item_id"] == "sku-0"


def stubbed() -> tuple[object, Stubber]:
    client = boto3.client("events", region_name="us-east-1")
    return client, Stubber(client)


def test_entries_eventbridge_refuses_are_sent_again_and_only_they():
    client, stub = stubbed()
    sent = triggers(3)
    bus = EventBridgeBus("shop", client=lambda: client, sleep=lambda _: None)
    entries = [{**entry(t), "Time": datetime.fromisoformat(t.time), "EventBusName": "shop"} for t in sent]
    stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [
        {"EventId": "a"}, {"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}, {"EventId": "c"}]},
        {"Entries": entries})
    stub.add_response("put_events", {"FailedEntryCount": 0, "Entries": [{"EventId": "b"}]}, {"Entries": [entries[1]]})
    with stub:
        assert bus.publish(sent) == 3
    stub.assert_no_pending_responses()


def test_entries_refused_again_and_again_raise_instead_of_being_dropped():
    client, stub = stubbed()
    bus = EventBridgeBus("shop", client=lambda: client, sleep=lambda _: None, attempts=3)
    for _ in range(3):
        stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [
            {"ErrorCode": "InternalFailure", "ErrorMessage": "no"}]}, {"Entries": ANY})
    with stub, pytest.raises(StorageUnavailable, match="kept refusing 1 of 1 entries \\(InternalFailure\\)"):
        bus.publish(triggers(1))


def test_a_refused_call_is_storage_unavailable():
    client, stub = stubbed()
    stub.add_client_error("put_events", "AccessDeniedException", http_status_code=400)
    with stub, pytest.raises(StorageUnavailable, match="AccessDeniedException"):
        EventBridgeBus("shop", client=lambda: client).publish(triggers(1))


def test_the_local_bus_appends_json_lines_and_reads_the_newest_last(tmp_path: Path):
    bus = LocalBus(tmp_path / "bus.jsonl")
    assert bus.read() == []
    bus.publish(triggers(3))
    bus.publish([Trigger(ItemBackInStock(occurred_at=format_timestamp(NOW + timedelta(hours=1)), item_id="late",
                                         category="k", reason="back"))])
    lines = [json.loads(line) for line in (tmp_path / "bus.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"id", "Source", "DetailType", "Detail", "Time"}
    assert [json.loads(e["Detail"])["item_id"] for e in bus.read(limit=2)] == ["sku-2", "late"]
    assert [json.loads(e["Detail"])["item_id"] for e in bus.read(since=format_timestamp(NOW))] == ["late"]
    assert bus.read(detail_type="Segment Entered") == []


def test_the_bus_is_chosen_from_the_settings(tmp_path: Path):
    assert isinstance(bus_from_settings(None, None), NoBus)
    assert isinstance(bus_from_settings("shop", None), EventBridgeBus)
    assert isinstance(bus_from_settings("shop", str(tmp_path / "bus.jsonl")), LocalBus)


# --- the catalog upsert ---

def upsert(**fields) -> ItemUpsert:
    return ItemUpsert(**{"item_id": "sku-1", "title": "Pan", "category": "kitchen", "price": Decimal("10"),
                         "currency": "EUR", **fields})


def test_an_upsert_publishes_a_restock_or_a_price_drop_at_once_and_marks_the_row(moto_tables, tmp_path):
    from shared.storage import dynamo
    from shared.storage.catalog import CatalogStore, triggers_catalog

    table = moto_tables["ItemsTable"]
    bus = LocalBus(tmp_path / "bus.jsonl")
    store = CatalogStore(table, bus)
    store.put_many([upsert(in_stock=False)])
    assert bus.read() == []  # a new item is not a change
    store.put_many([upsert()])
    store.put_many([upsert(price=Decimal("8"))])
    store.put_many([upsert(title="Pan, new title", price=Decimal("8"))])  # no change: the marks are carried over

    assert [e["DetailType"] for e in bus.read()] == ["Item Back In Stock", "Item Price Dropped"]
    assert json.loads(bus.read()[1]["Detail"])["reason"] == "price down from 10.00 to 8.00 EUR"
    stored = dynamo.get_item(table, {"item_id": "sku-1"}, "read")
    assert stored["restocked_at"] and stored["price_dropped_at"] and Decimal(stored["price_before_drop"]) == 10
    assert store.get("sku-1").title == "Pan, new title"  # the marks are not fields of an item
    [changed] = triggers_catalog(table, format_timestamp(datetime.now(timezone.utc) - timedelta(minutes=5)))
    assert (changed.item_id, changed.price, changed.price_before_drop) == ("sku-1", Decimal("8"), Decimal("10"))


def test_a_bus_that_fails_does_not_fail_the_upsert(moto_tables):
    from shared.storage.catalog import CatalogStore

    class Down:
        def publish(self, triggers):
            raise StorageUnavailable("bus down")

    store = CatalogStore(moto_tables["ItemsTable"], Down())
    store.put_many([upsert(in_stock=False)])
    assert len(store.put_many([upsert()]).stored) == 1


# --- the nightly run ---

def test_the_nightly_run_writes_its_segments_when_the_bus_fails(moto_tables):
    from shared.config import get_settings
    from shared.segments.service import materialize_segments
    from shared.storage.customers import Customers
    from shared.storage.segments import SegmentStore

    class Down:
        def publish(self, triggers):
            raise StorageUnavailable("bus down")

    store = SegmentStore(moto_tables["SegmentsTable"])
    now = datetime.now(timezone.utc)
    store.write_run("r1", (now - timedelta(days=1)).isoformat(),
                    members_by_segment([("rfm:at-risk", "rfm", "At Risk", "u-1", "was")]))
    customers = Customers(users={}, histories={"u-1": [seen("sku-1", 1)]}, categories={"sku-1": "kitchen"})

    index = materialize_segments(get_settings(), store, {}, now, "r2", customers, bus=Down())

    assert index["run"] == "r2" and store.index()["run"] == "r2"


def test_the_nightly_run_publishes_who_left_a_tracked_segment(moto_tables, tmp_path):
    from shared.config import get_settings
    from shared.segments.service import materialize_segments
    from shared.storage.customers import Customers
    from shared.storage.segments import SegmentStore

    bus = LocalBus(tmp_path / "bus.jsonl")
    store = SegmentStore(moto_tables["SegmentsTable"])
    now = datetime.now(timezone.utc)
    store.write_run("r1", (now - timedelta(days=1)).isoformat(),
                    members_by_segment([("rfm:at-risk", "rfm", "At Risk", "u-1", "was")]))
    customers = Customers(users={}, histories={"u-1": [seen("sku-1", 1)]}, categories={"sku-1": "kitchen"})

    materialize_segments(get_settings(), store, {}, now, "r2", customers, bus=bus)

    [left] = bus.read()
    assert left["DetailType"] == DetailType.SEGMENT_LEFT
    assert json.loads(left["Detail"])["user_id"] == "u-1"


# --- the doc ---

def test_docs_triggers_md_shows_the_schemas_of_the_models():
    doc = (PROJECT_ROOT / "docs" / "triggers.md").read_text()
    assert schemas_markdown() in doc, (
        "docs/triggers.md's schemas are out of date: paste `.venv/bin/python -c 'from shared.triggers import "
        "schemas_markdown; print(schemas_markdown())'` between its schema markers")
    for detail_type in DetailType:
        assert f"### {detail_type.value}" in doc


# --- the local stack's GET /dev/bus ---

def test_the_gateway_reads_the_local_bus_only_with_the_stacks_secret(tmp_path, monkeypatch):
    from tests.conftest import LOCAL_AUTH, local_gateway

    monkeypatch.setenv("LOCAL_BUS_FILE", str(tmp_path / "bus.jsonl"))
    LocalBus(tmp_path / "bus.jsonl").publish(triggers(3))
    gateway = local_gateway()
    secret = {"host": "local", "x-devstack-secret": LOCAL_AUTH.dev_secret}

    answer = gateway.handle("GET", "/dev/bus?detail_type=Item%20Back%20In%20Stock&limit=2", secret, b"")
    assert answer.status == 200
    assert [json.loads(e["Detail"])["item_id"] for e in json.loads(answer.body)["entries"]] == ["sku-1", "sku-2"]
    assert gateway.handle("GET", "/dev/bus", {"host": "local"}, b"").status == 401
    assert gateway.handle("GET", "/dev/bus?limit=0", secret, b"").status == 400
    assert gateway.handle("GET", "/dev/bus?since=yesterday", secret, b"").status == 400
