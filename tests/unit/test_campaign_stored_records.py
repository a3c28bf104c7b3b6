"""The campaign job against one customer's stored data written by hand: it costs no other customer
their line, and one customer's long history costs a block no more than serving reads (moto)."""

from __future__ import annotations

import json
import zlib

import pytest

from shared.storage import dynamo
from tests.factories import ago, event
from tests.unit.test_campaigns import exported, run, shop_api  # noqa: F401 - the fixture
from tests.unit.test_serving_reads import recent_item, tables


def recent_rows(api, user_id: str, rows: list) -> None:
    """The customer's recent-activity item holding `rows`, as a second writer or a hand left it."""
    if recent_item(user_id) is None:  # an event through ingest makes the item
        old = event(f"mk-{user_id}", user_id=user_id, item_id="sku-x", timestamp=ago(days=400))
        assert api.json("POST", "/events", {"events": [old]})[0] == 200
    item = recent_item(user_id)
    dynamo.client().put_item(TableName=tables()[1],
                             Item={**item, "events": {"B": zlib.compress(json.dumps(rows).encode())}})


@pytest.mark.parametrize("row", [["wishlist"], ["view", 10**400]], ids=["a type no ingest writes", "a quantity past float"])
def test_one_history_row_serving_passes_over_costs_no_customer_their_campaign_line(shop_api, row):  # noqa: F811
    api, shop, opted_in = shop_api
    known = shop.events[0]["item_id"]
    recent_rows(api, opted_in[0], [[ago(minutes=5), known, *row], [ago(hours=1), known, "purchase"]])
    assert api.json("GET", f"/users/{opted_in[0]}/recommendations?limit=5")[0] == 200

    campaign = run(api, {"name": "newsletter", "channel": "email", "num_results": 5})

    assert campaign["status"] == "ACTIVE", campaign["failure_reason"]
    lines = exported(campaign["output"]["jsonl"]).decode().splitlines()
    assert len(lines) == len(opted_in) == campaign["counts"]["written"]


def test_a_customer_with_many_devices_counts_the_events_serving_reads_no_more():
    from shared.campaigns.batch import Shop, SnapshotCatalog
    from shared.history import HistoryEvent
    from shared.recent import LINKED_HISTORY_LIMIT, RECENT_EVENTS
    from shared.users import User

    visitors = [f"v-{n}" for n in range(7)]
    # Each id's events newest first, as the nightly read hands them over; the visitors' are newer.
    histories = {owner: [HistoryEvent(f"{owner}-sku-{k}", "view", 1, 1_700_000_000.0 + 10_000 * place - k)
                         for k in range(RECENT_EVENTS)] for place, owner in enumerate(["u-1", *visitors])}
    shop = Shop({"u-1": User(user_id="u-1", linked_visitors=visitors)}, histories, SnapshotCatalog({}))

    history = shop.history("u-1")

    assert len(history) == RECENT_EVENTS
    assert [e.timestamp for e in history] == sorted((e.timestamp for e in history), reverse=True)
    by_owner = {owner: sum(e.item_id.startswith(f"{owner}-") for e in history) for owner in ["u-1", *visitors]}
    assert by_owner == {"u-1": 0, **{v: LINKED_HISTORY_LIMIT for v in visitors[:5]}, "v-5": 0, "v-6": 0}


@pytest.mark.parametrize("damage", [{"M": {"sends": {"S": "one"}}}, {"S": "x"}], ids=["a field", "the whole channel"])
def test_one_channel_of_the_contact_ledger_that_does_not_read_lifts_no_cap(shop_api, damage):  # noqa: F811
    from shared.config import get_settings

    api, _, opted_in = shop_api
    capped = opted_in[0]
    sends = [{"event_id": f"send-{n}", "user_id": capped, "event_type": "message_sent", "channel": "email",
              "campaign_id": f"weekly-{n}", "timestamp": ago(days=n + 1)} for n in range(2)]
    assert api.json("POST", "/events", {"events": sends})[1]["accepted"] == 2
    dynamo.client().update_item(  # another channel's ledger, as no version writes it
        TableName=get_settings().users_table, Key={"user_id": {"S": capped}},
        UpdateExpression="SET contacts.sms = :v", ExpressionAttributeValues={":v": damage})
    assert api.json("GET", f"/users/{capped}")[1]["contacts"]["email"]["sends"] == 2

    campaign = run(api, {"name": "capped", "channel": "email"})
    sms = run(api, {"name": "texts", "channel": "sms"})

    users = {json.loads(line)["input"]["userId"] for line in exported(campaign["output"]["jsonl"]).decode().splitlines()}
    assert capped not in users and campaign["counts"]["left_out"].get("cap reached") == 1
    assert sms["status"] == "ACTIVE"
