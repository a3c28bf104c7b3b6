"""Erasure, export and objection against records written by hand or damaged: what one customer's
or one run's stored data holds never stops another's rights, nor the hourly sweep (moto)."""

from __future__ import annotations

import pytest

from shared.config import get_settings
from shared.storage import dynamo
from tests.factories import ago, event, purchase
from tests.unit.test_erasure_faults import sweep
from tests.unit.test_unreadable_rows import damage


def events_left(user_id: str) -> int:
    return dynamo.client().query(TableName=get_settings().events_table, KeyConditionExpression="user_id = :u",
                                 ExpressionAttributeValues={":u": {"S": user_id}})["Count"]


RUN = {"segment_id": {"S": "#runs"}, "sk": {"S": "20260101T000000"}, "segments": {"L": [{"S": "rfm:champions"}]},
       "parts": {"N": "0"}, "buckets": {"N": "1"}, "shares": {"N": "1"}}
DAMAGED_RUNS = {
    "no layout": {k: v for k, v in RUN.items() if k not in ("buckets", "shares")},
    "no buckets": {**RUN, "buckets": {"N": "0"}},
    "no shares": {**RUN, "shares": {"N": "0"}},
    "parts that are a word": {**RUN, "parts": {"S": "two"}},
}


@pytest.mark.parametrize("record", DAMAGED_RUNS.values(), ids=DAMAGED_RUNS)
def test_a_run_record_that_does_not_read_stops_no_erasure_export_objection_or_sweep(api, record):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1")]})[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-2", user_id="u-3", item_id="sku-1")]})[0] == 200
    dynamo.client().put_item(TableName=get_settings().segments_table, Item=record)

    status, body = api.json("DELETE", "/users/u-1")
    assert status == 200, body
    assert events_left("u-1") == 0
    assert api.json("GET", "/users/u-3/export")[0] == 200
    assert api.json("PUT", "/users/u-2/consent", {"profiling": {"granted": False}})[0] == 200
    sweep(api)


@pytest.mark.parametrize("pages", [{"S": "p#1"}, {"M": {"rfm:champions": {"S": "one"}}}], ids=["a text", "a page that is a word"])
def test_a_customers_entry_of_an_old_run_that_does_not_read_stops_no_erasure_or_export(api, pages):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1")]})[0] == 200
    dynamo.client().put_item(TableName=get_settings().segments_table, Item={
        "segment_id": {"S": "#customer#u-1"}, "sk": {"S": "20260101T000000"}, "pages": pages})

    assert api.json("GET", "/users/u-1/export")[0] == 200
    status, body = api.json("DELETE", "/users/u-1")
    assert status == 200, body
    assert events_left("u-1") == 0


NULL_IN_CONSENT = {"consent": {"M": {"email": {"M": {"granted": {"BOOL": False}, "source": {"S": "web"},
                                                     "text_version": {"NULL": True}}}}}}


@pytest.mark.parametrize("suffix, mark", [("\x00purchases", "purchases_of"), ("\x00recent", "recent_of"),
                                          ("\x00consent", "consent_of")])
def test_an_erasure_deletes_the_customers_companion_items_even_without_their_owner_mark(api, suffix, mark):
    """Written by hand without the mark, the item is still the customer's (no id holds a NUL): an
    erasure that left it would keep their bought set, events or consent, and bring them back."""
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-old", order_id="o-1")]})[0] == 200
    assert api.json("PUT", "/users/u-1/consent", {"email": {"granted": True}, "source": "signup-form"})[0] == 200
    table, key = get_settings().users_table, {"user_id": {"S": "u-1" + suffix}}
    dynamo.client().update_item(TableName=table, Key=key, UpdateExpression=f"REMOVE {mark}")
    assert "Item" in dynamo.client().get_item(TableName=table, Key=key, ConsistentRead=True)

    status, body = api.json("DELETE", "/users/u-1")

    assert status == 200 and body["status"] == "complete", body
    assert "Item" not in dynamo.client().get_item(TableName=table, Key=key, ConsistentRead=True)
    after = purchase("p-2", item_id="sku-new", order_id="o-1", timestamp=ago(seconds=-5))  # stamped after the erasure
    status, body = api.json("POST", "/events", {"events": [after]})
    assert status == 200, body
    summary = api.json("GET", "/users/u-1")[1]["summary"]
    assert (summary["orders"], summary["lines"]) == (1, 1), summary  # o-1 counted afresh, not as bought before


def test_a_null_in_a_stored_consent_blocks_no_erasure(api):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1")]})[0] == 200
    damage("u-1", NULL_IN_CONSENT)

    status, body = api.json("DELETE", "/users/u-1")

    assert status == 200, body
    assert events_left("u-1") == 0


def test_a_null_in_a_stored_consent_blocks_no_objection(api):
    damage("u-1", NULL_IN_CONSENT)

    status, body = api.json("PUT", "/users/u-1/consent", {"personalization": {"granted": False}})

    assert status == 200, body
    assert api.json("GET", "/users/u-1/consent")[1]["consent"]["personalization"]["granted"] is False


def test_an_erasure_the_sweep_cannot_continue_stops_none_of_the_others(api, monkeypatch):
    settings = get_settings()
    for user in ("u-a", "u-b"):
        assert api.json("POST", "/events", {"events": [purchase(f"p-{user}", user_id=user, item_id="sku-1")]})[0] == 200
        dynamo.client().put_item(TableName=settings.users_table, Item=dynamo.serialize({
            "user_id": user, "erased_at": "2099-01-01T00:00:00.000000Z", "erasure_status": "in_progress"}))
    route = next(r for r in api.gateway.routes if r.function == "PrivacyFunction")
    module = __import__("sys").modules[api.gateway.handler(route).__module__]
    finish = module.privacy.finish

    def fails_for_the_first(user_id, *args):
        if user_id == "u-a":  # whatever its data holds that this version cannot handle
            raise RuntimeError("u-a's data")
        return finish(user_id, *args)

    monkeypatch.setattr(module.privacy, "finish", fails_for_the_first)

    assert sweep(api) == {"complete": 1, "in_progress": 0, "failed": 1}
    assert (events_left("u-a"), events_left("u-b")) == (1, 0)


@pytest.mark.parametrize("attributes", [{"photo": {"B": b"\x00\xff"}}, {"codes": {"BS": [b"\x01", b"\x02"]}}],
                         ids=["binary", "binary set"])
def test_an_export_shows_a_binary_value_of_the_profile_as_base64(api, attributes):
    assert api.json("PUT", "/users/u-1", {"country": "DE"})[0] == 200
    damage("u-1", attributes)

    status, body = api.json("GET", "/users/u-1/export")

    assert status == 200, body
    assert body["profile"].get("photo", body["profile"].get("codes")) in ("AP8=", ["AQ==", "Ag=="])


def test_an_export_shows_a_binary_value_of_an_event_as_base64(api):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1")]})[0] == 200
    dynamo.client().update_item(TableName=get_settings().events_table,
                                Key={"user_id": {"S": "u-1"}, "event_id": {"S": "p-1"}},
                                UpdateExpression="SET legacy = :b", ExpressionAttributeValues={":b": {"B": b"\x01"}})

    status, body = api.json("GET", "/users/u-1/export")

    assert status == 200, body
    assert [event["legacy"] for event in body["events"]] == ["AQ=="]


def test_an_export_whose_links_list_one_visitor_twice_gives_its_events_once_and_ends(api):
    assert api.json("PUT", "/users/u-1", {"country": "DE"})[0] == 200
    assert api.json("POST", "/events", {"events": [event("e-1", user_id="v_phone", item_id="sku-1")]})[0] == 200
    damage("u-1", {"linked_visitors": {"L": [{"S": "v_phone"}, {"S": "u-1"}, {"S": "v_phone"}]}})

    page, exported = api.json("GET", "/users/u-1/export")[1], []
    for _ in range(10):
        exported += [e["event_id"] for e in page["events"]]
        if page["next_cursor"] is None:
            break
        page = api.json("GET", f"/users/u-1/export?cursor={page['next_cursor']}")[1]

    assert page["next_cursor"] is None and exported == ["e-1"]


def test_an_export_holds_the_linked_visitors_memberships_which_the_erasure_ends(api):
    from shared.segments.members import SegmentMembers
    from shared.storage.segments import SegmentStore

    assert api.json("PUT", "/users/u-1", {"country": "DE"})[0] == 200
    assert api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_phone"})[0] == 200
    SegmentStore(get_settings().segments_table).write_run("20260101T000000", "2026-01-01T00:00:00Z", [
        SegmentMembers("behaviour:browser", "behaviour", "Browser", ["v_phone", "u-1"], ["views a lot", "also"])])

    exported = api.json("GET", "/users/u-1/export")[1]["segment_memberships"]
    erased = api.json("DELETE", "/users/u-1")[1]

    assert sorted((m["user_id"], m["reason"]) for m in exported) == [("u-1", "also"), ("v_phone", "views a lot")]
    assert erased["erased"]["segment_memberships"] == len(exported)


def test_a_set_inside_a_stored_consent_blocks_no_erasure_or_objection(api):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1")]})[0] == 200
    damage("u-1", {"consent": {"M": {"email": {"M": {"granted": {"BOOL": False}, "tags": {"SS": ["a", "b"]}}}}}})

    assert api.json("PUT", "/users/u-1/consent", {"personalization": {"granted": False}})[0] == 200
    status, body = api.json("DELETE", "/users/u-1")

    assert status == 200, body
    assert events_left("u-1") == 0


def test_an_export_reads_the_runs_once_however_many_visitors_are_linked(api, monkeypatch):
    from shared.storage.segments import SegmentStore

    assert api.json("PUT", "/users/u-1", {"country": "DE"})[0] == 200
    damage("u-1", {"linked_visitors": {"L": [{"S": f"v_{n}"} for n in range(5)]}})
    reads = []
    run_records = SegmentStore.run_records
    monkeypatch.setattr(SegmentStore, "run_records", lambda self: reads.append(1) or run_records(self))

    assert api.json("GET", "/users/u-1/export")[0] == 200

    assert len(reads) == 1
