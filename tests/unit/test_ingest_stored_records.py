"""Ingest against a customer's items written by hand or by an older version: a stored value never
turns that customer's events (and the batch they came in with) into a 503 on every retry (moto)."""

from __future__ import annotations

import pytest

from shared.config import get_settings
from shared.storage import dynamo
from tests.factories import ago, event, purchase
from tests.unit.test_unreadable_rows import damage


def test_an_empty_erasure_stamp_is_read_as_none_and_the_customers_events_are_stored(api):
    assert api.json("PUT", "/users/u-1", {"country": "DE"})[0] == 200
    damage("u-1", {"erased_at": {"S": ""}})
    batch = {"events": [purchase("p-1", item_id="sku-1", order_id="o-1"), event("v-2", user_id="u-2")]}

    status, body = api.json("POST", "/events", batch)

    assert (status, body["accepted"]) == (200, 2), body
    assert api.json("GET", "/users/u-1")[1]["summary"]["orders"] == 1


@pytest.mark.parametrize("owner", [None, {"N": "7"}, {"S": "u-2"}], ids=["no owner mark", "a number", "another id"])
def test_purchase_keys_without_their_owner_mark_are_written_again_and_the_purchase_counted(api, owner):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1", order_id="o-1")]})[0] == 200
    key = {"user_id": {"S": "u-1\x00purchases"}}
    if owner is None:
        dynamo.client().update_item(TableName=get_settings().users_table, Key=key, UpdateExpression="REMOVE purchases_of")
    else:
        damage("u-1\x00purchases", {"purchases_of": owner})
    batch = {"events": [purchase("p-2", item_id="sku-2", order_id="o-2"), purchase("p-3", user_id="u-2")]}

    status, body = api.json("POST", "/events", batch)

    assert (status, body["accepted"]) == (200, 2), body
    assert api.json("GET", "/users/u-1")[1]["summary"]["orders"] == 2
    again = api.json("POST", "/events", {"events": [purchase("p-2", item_id="sku-2", order_id="o-2")]})[1]
    assert again["duplicates"] == 1 and api.json("GET", "/users/u-1")[1]["summary"]["orders"] == 2
    stored = dynamo.client().get_item(TableName=get_settings().users_table, Key=key, ConsistentRead=True)["Item"]
    assert stored["purchases_of"] == {"S": "u-1"}


def test_an_event_sent_twice_in_a_batch_and_refused_for_an_erasure_is_refused_twice_not_a_duplicate(api):
    assert api.json("POST", "/events", {"events": [event("v-0", timestamp=ago(hours=3))]})[0] == 200
    assert api.json("DELETE", "/users/u-1")[0] == 200
    before = event("v-1", timestamp=ago(hours=2))

    status, body = api.json("POST", "/events", {"events": [before, before, event("v-2", user_id="u-2")]})

    assert (status, body["accepted"], body["duplicates"], body["refused_after_erasure"]) == (207, 1, 0, 2), body
    assert [rejection["index"] for rejection in body["rejected"]] == [0, 1]


@pytest.mark.parametrize("version", ["99999999999999999999999999999999999999", str(2**53),
                                     "-99999999999999999999999999999999999999"])
def test_a_recent_activity_version_the_next_rewrite_could_not_store_is_replaced_and_the_batch_stored(api, version):
    """By hand: 10^38 - 1 plus one has 39 digits, past what DynamoDB stores; the item is read as
    unreadable, started again from the stored events, and the batch (a neighbour's too) is stored."""
    assert api.json("POST", "/events", {"events": [event("v-1", timestamp=ago(hours=2))]})[0] == 200
    damage("u-1\x00recent", {"recent_version": {"N": version}})

    status, body = api.json("POST", "/events", {"events": [event("v-2"), event("v-3", user_id="u-2")]})

    assert (status, body["accepted"]) == (200, 2), body
    stored = dynamo.client().get_item(TableName=get_settings().users_table, Key={"user_id": {"S": "u-1\x00recent"}},
                                      ConsistentRead=True)["Item"]
    assert stored["recent_version"] == {"N": "1"}
    assert [e["event_id"] for e in api.json("GET", "/users/u-1/export")[1]["events"]] == ["v-1", "v-2"]
