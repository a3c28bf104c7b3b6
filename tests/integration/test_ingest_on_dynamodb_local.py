"""Ingest on DynamoDB Local: real transactions, conditions and concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from botocore.exceptions import ClientError

from shared.storage import dynamo
from shared.recent import RecentActivity, RecentEvent
from shared.storage.users import purchases_key, read_recent, read_summaries, recent_key, recent_put
from tests.factories import ago, event, purchase

pytestmark = pytest.mark.integration


def stored_events(table: str, user_id: str) -> list[dict]:
    pages = dynamo.client().get_paginator("query").paginate(
        TableName=table, KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": user_id}}, ConsistentRead=True)
    return [dynamo.deserialize(item) for page in pages for item in page["Items"]]


def test_a_full_batch_for_one_user_spans_transactions_and_is_idempotent(local_api, local_tables):
    batch = [purchase(f"p-{i}", price=2, quantity=1 + i % 3) if i % 4 == 0 else event(f"v-{i}")
             for i in range(1000)]

    first = local_api.json("POST", "/events", {"events": batch})[1]
    again = local_api.json("POST", "/events", {"events": batch})[1]

    assert (first["accepted"], first["duplicates"]) == (1000, 0)
    assert (again["accepted"], again["duplicates"]) == (0, 1000)
    assert len(stored_events(local_tables["EventsTable"], "u-1")) == 1000
    summary = local_api.json("GET", "/users/u-1")[1]["summary"]
    purchases = [e for e in batch if e["event_type"] == "purchase"]
    assert summary["purchase_count"] == len(purchases)
    assert summary["units"] == sum(e["quantity"] for e in purchases)
    assert Decimal(str(summary["spend"]["EUR"])) == sum(2 * e["quantity"] for e in purchases)


def test_concurrent_overlapping_requests_count_each_purchase_once(local_api):
    """Clients retrying in parallel: every batch shares users and half its events with another."""
    users = [f"u-{n}" for n in range(5)]
    purchases = [purchase(f"p-{n}", user_id=users[n % 5], price=1 + n % 7) for n in range(200)]
    batches = [purchases[start:start + 60] for start in range(0, 200, 30)]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda b: local_api.json("POST", "/events", {"events": b}), batches * 2))

    assert all(status == 200 for status, _ in results)
    assert sum(body["accepted"] for _, body in results) == 200
    for user in users:
        own = [p for p in purchases if p["user_id"] == user]
        summary = local_api.json("GET", f"/users/{user}")[1]["summary"]
        assert summary["purchase_count"] == len(own)
        assert Decimal(str(summary["spend"]["EUR"])) == sum(Decimal(str(p["price"])) for p in own)


def test_stored_events_keep_what_the_client_sent(local_api, local_tables):
    sent = purchase("p-1", price=19.99, quantity=2, session_id="s-1", order_id="o-1",
                    properties={"discount": True}, timestamp="2026-05-01T12:00:00+02:00")
    local_api.json("POST", "/events", {"events": [sent]})

    [row] = stored_events(local_tables["EventsTable"], "u-1")

    assert row["ts"] == "2026-05-01T10:00:00.000000Z"
    assert (row["price"], row["quantity"], row["order_id"]) == (Decimal("19.99"), 2, "o-1")
    assert row["properties"] == {"discount": True}


def test_concurrent_overlapping_requests_count_each_order_and_return_once(local_api):
    """Lines of the same orders spread over racing, overlapping batches: each order counted once."""
    from shared.config import get_settings
    from shared.storage.users import purchased_items

    lines = [purchase(f"p-{n}", user_id=f"u-{n % 3}", item_id=f"sku-{n}", order_id=f"o-{n % 3}-{n // 30}")
             for n in range(180)]
    lines += [event(f"r-{n}", user_id=f"u-{n % 3}", item_id=f"sku-{n}", event_type="return", price=10.0,
                    currency="EUR", order_id=f"o-{n % 3}-0") for n in range(0, 30, 5)]
    batches = [lines[start:start + 60] for start in range(0, len(lines), 30)]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda b: local_api.json("POST", "/events", {"events": b}), batches * 2))

    assert all(status == 200 for status, _ in results)
    for user in range(3):
        summary = local_api.json("GET", f"/users/u-{user}")[1]["summary"]
        returns = len([n for n in range(0, 30, 5) if n % 3 == user])
        assert (summary["orders"], summary["lines"], summary["returns"]) == (6, 60, returns)
        assert Decimal(str(summary["spend"]["EUR"])) == 10 * (60 - returns)
        bought = purchased_items(get_settings().users_table, f"u-{user}")
        assert len(bought) == 60 and all(f"sku-{n}" in bought for n in range(user, 180, 3))


def test_every_item_of_5000_purchase_lines_is_in_the_set(local_api):
    from shared.config import get_settings
    from shared.storage.users import purchased_items

    lines = [purchase(f"p{n}", item_id=f"sku-{n}", order_id=f"o-{n // 10}") for n in range(5000)]
    for start in range(0, 5000, 1000):
        assert local_api.json("POST", "/events", {"events": lines[start:start + 1000]})[1]["accepted"] == 1000
    bought = purchased_items(get_settings().users_table, "u-1")
    assert len(bought) == 5000 and all(f"sku-{n}" in bought for n in range(5000))
    assert local_api.json("GET", "/users/u-1")[1]["summary"]["orders"] == 500


def test_racing_overlapping_batches_record_each_send_and_response_once(local_api):
    """The contact ledger is written under the summary's version: racing batches lose no send and
    count no send or response twice."""
    sends = [{"event_id": f"m-{n}", "user_id": "u-1", "event_type": "message_sent", "channel": "email",
              "campaign_id": f"cmp-{n}", "timestamp": f"2026-05-01T{n:02d}:00:00Z"} for n in range(12)]
    clicks = [event(f"k-{n}", item_id="sku-1", event_type="click", campaign_id=f"cmp-{n}",
                    timestamp=f"2026-05-01T{n:02d}:30:00Z") for n in range(0, 12, 3)]
    assert local_api.json("POST", "/events", {"events": sends[:1]})[0] == 200
    everything = sends + clicks
    batches = [everything[start:start + 6] for start in range(0, len(everything), 3)]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda b: local_api.json("POST", "/events", {"events": b}), batches * 2))

    assert all(status == 200 for status, _ in results)
    email = local_api.json("GET", "/users/u-1")[1]["contacts"]["email"]
    assert email["sends"] == 12 and sorted(email["recent_campaigns"]) == sorted(f"cmp-{n}" for n in range(12))
    # A click stored before its send was recorded counts nothing; none counts twice.
    assert email["responses"] <= 4 and len(set(email["responded"])) == email["responses"]


@pytest.mark.parametrize("damage", [{"events": {"B": b"not zlib"}}, {"recent_version": {"S": "two"}},
                                    {"recent_version": {"N": "1.5"}}, {"recent_version": {"L": []}}],
                         ids=["events that do not read", "a version that is a text", "a version that is not whole",
                              "a version that is a list"])
def test_an_unreadable_recent_item_is_replaced_once_and_a_stale_replacement_is_refused(local_api, local_tables,
                                                                                      damage):
    users = local_tables["UsersTable"]
    assert local_api.json("POST", "/events", {"events": [event("old-1", item_id="sku-old", timestamp=ago(hours=2))]})[0] == 200
    key = dynamo.serialize(recent_key("u-1"))
    stored = dynamo.client().get_item(TableName=users, Key=key, ConsistentRead=True)["Item"]
    dynamo.client().put_item(TableName=users, Item={**stored, **damage})
    stale = read_recent(users, ["u-1"])["u-1"]  # what a slower request read
    assert stale.unreadable

    assert local_api.json("POST", "/events", {"events": [event("new-1", item_id="sku-new", timestamp=ago(seconds=1))]})[0] == 200

    # The slower request's replacement, started before that event was stored, would hide it.
    started = RecentActivity((RecentEvent("2026-01-01T00:00:00.000000Z", "sku-old", "view"),), stale.version,
                             unreadable=True)
    after, payload = started.adding((), "")
    with pytest.raises(ClientError) as refused:
        dynamo.client().transact_write_items(TransactItems=[recent_put(users, "u-1", started, after, payload)])
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    activity = read_recent(users, ["u-1"])["u-1"]
    assert not activity.unreadable and [e.item_id for e in activity.events] == ["sku-new", "sku-old"]


VERSIONS = {"a text": {"S": "two"}, "not whole": {"N": "1.5"}, "a list": {"L": []}}


@pytest.mark.parametrize("version", VERSIONS.values(), ids=VERSIONS)
def test_a_summary_or_purchases_version_written_by_hand_is_replaced_by_the_next_purchase(local_api, local_tables,
                                                                                        version):
    users = local_tables["UsersTable"]
    assert local_api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1", order_id="o-1")]})[0] == 200
    for key, name in (({"user_id": {"S": "u-1"}}, "summary_version"),
                      (dynamo.serialize(purchases_key("u-1")), "purchases_version")):
        dynamo.client().update_item(TableName=users, Key=key, UpdateExpression="SET #v = :v",
                                    ExpressionAttributeNames={"#v": name}, ExpressionAttributeValues={":v": version})

    # Both requests count their order once: one replaces the versions, the other reads them again.
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda n: local_api.json("POST", "/events", {"events": [
            purchase(f"p-{n}", item_id=f"sku-{n}", order_id=f"o-{n}")]}), (2, 3)))
    assert [status for status, _ in answers] == [200, 200]
    assert local_api.json("POST", "/events", {"events": [purchase("p-2", item_id="sku-2", order_id="o-2")]}
                          )[1]["duplicates"] == 1
    state = read_summaries(users, ["u-1"])["u-1"]
    assert type(state.version) is int and type(state.purchases.version) is int
    assert state.summary.orders == 3 and len(state.purchases.orders) == 3
