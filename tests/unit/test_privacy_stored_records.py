"""Erasure, export and objection against records written by hand or damaged: what one customer's
or one run's stored data holds never stops another's rights, nor the hourly sweep (moto)."""

from __future__ import annotations

import pytest

from shared.config import get_settings
from shared.storage import dynamo
from tests.factories import purchase
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
