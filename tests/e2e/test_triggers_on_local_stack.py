"""Triggers on the local stack: the local bus gets an item back in stock at once, and after the
next nightly run the customer who viewed it, and a customer who entered a tracked segment."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from devstack.api_client import ApiClient
from devstack.demo_data import generate_shop
from devstack.local_auth import LocalAuth
from tests.training_data import A_MODEL_SERVES
from tests.e2e.test_local_stack import running_stack  # noqa: F401 - the module's stack
from tests.factories import event, item, iso, purchase

pytestmark = pytest.mark.e2e


def bus(state_dir, detail_type: str) -> list[dict]:
    """GET /dev/bus, the details parsed."""
    secret = LocalAuth.load(state_dir / "local-auth.json").dev_secret
    response = ApiClient.for_stack(state_dir).request(
        "GET", "/dev/bus", query={"detail_type": detail_type, "limit": 1000}, headers={"x-devstack-secret": secret})
    assert response.status == 200, response.body
    return [json.loads(entry["Detail"]) for entry in response.body["entries"]]


def test_restocks_viewed_items_and_segment_entries_reach_the_local_bus(running_stack):
    state, state_dir = running_stack
    api = ApiClient.for_stack(state_dir)
    shop = generate_shop(seed=5, n_users=60, n_items=30)
    api.put_items(shop.items)
    api.send_events(shop.events)
    api.put_items([item("trig-1", in_stock=False)])
    api.send_events([event("trig-v", user_id="trig-viewer", item_id="trig-1")])
    assert api.train_and_wait(A_MODEL_SERVES, timeout=300)["status"] == "accepted"  # the baseline

    api.put_items([item("trig-1")])  # back in stock
    [restocked] = [d for d in bus(state_dir, "Item Back In Stock") if d["item_id"] == "trig-1"]
    assert restocked["reason"] == "back in stock" and restocked["schema_version"] == 1

    # A high spender whose spending stopped: 90 to 180 days ago, nothing since.
    long_ago = datetime.now(timezone.utc) - timedelta(days=120)
    api.send_events([purchase(f"trig-p{n}", user_id="trig-spender", item_id=shop.items[0]["item_id"],
                              price=5000, quantity=1, order_id=f"trig-o{n}",
                              timestamp=iso(long_ago + timedelta(days=n))) for n in range(3)])
    api.train_and_wait(A_MODEL_SERVES, timeout=300)

    viewed = [d for d in bus(state_dir, "Viewed Item Back In Stock") if d["user_id"] == "trig-viewer"]
    assert [(d["item_id"], d["seen_as"]) for d in viewed] == [("trig-1", "view")]
    entered = [d for d in bus(state_dir, "Segment Entered") if d["user_id"] == "trig-spender"]
    assert "lifecycle:declining" in {d["segment_id"] for d in entered}, entered
