"""Generated shops turned into what training reads, in memory or in the tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from devstack.demo_data import ShopData, generate_shop
from devstack.dynamodb_local import write_items
from shared.events import Event, EventType
from shared.storage import dynamo
from shared.storage.events import event_item
from shared.training.interactions import InteractionLog, Interactions

# Shortly before now: the API trains as of the real clock, so the data must lead up to it.
END = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
# A run on the small test shops that serves a model: the gate off and the blend fixed (ALS). Their
# validation months hold a handful of customers, and which ones depends on the minute a test runs
# (the months count back from the run's start): on some, popularity alone ties with every blend,
# wins the tie, and popular items serve. Tests of the blend choice itself fit it directly.
A_MODEL_SERVES = {"min_gain_over_popularity": 0, "blend": {"als": 1, "knn": 0, "popularity": 0}}


@lru_cache(maxsize=4)
def shop(n_users: int = 800, n_items: int = 250, seed: int = 1) -> ShopData:
    return generate_shop(seed=seed, n_users=n_users, n_items=n_items, end=END)


def interactions_of(events: list[dict]) -> Interactions:
    log = InteractionLog(limit=10_000_000)
    for e in events:
        log.add(e["user_id"], e["item_id"], EventType(e["event_type"]), e.get("quantity", 1),
                datetime.fromisoformat(e["timestamp"]).timestamp(), e.get("order_id"))
    return log.finish()


def store_events(events_table: str, events: list[dict], client: Any = None) -> None:
    """Seed the events table directly (ingestion has its own tests)."""
    client = client or dynamo.client()
    context = {"now": END, "max_future_seconds": 0}
    items = [dynamo.serialize(event_item(Event.model_validate(e, context=context), "seed")) for e in events]
    write_items(client, events_table, items)


def seed_demo_shop(api: Any, events_table: str, seed: int = 6) -> ShopData:
    """A small demo shop through the API (items, profiles, one objector), its events stored directly."""
    demo = shop(60, 40, seed=seed)
    assert api.json("POST", "/items", {"items": demo.items})[0] == 200
    for user in demo.users:
        assert api.json("PUT", f"/users/{user['user_id']}", {k: v for k, v in user.items() if k != "user_id"})[0] == 200
    objector = demo.events[-1]["user_id"]
    assert api.json("PUT", f"/users/{objector}/consent", {"personalization": False})[0] == 200
    store_events(events_table, demo.events)
    return demo
