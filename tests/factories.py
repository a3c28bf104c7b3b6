"""Small, explicit test data: one event or item with the fields a test cares about."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(**delta: float) -> str:
    return iso(datetime.now(timezone.utc) - timedelta(**delta))


def event(event_id: str = "e-1", user_id: str = "u-1", item_id: str = "sku-1",
          event_type: str = "view", **fields: Any) -> dict[str, Any]:
    base = {"event_id": event_id, "user_id": user_id, "item_id": item_id, "event_type": event_type,
            "timestamp": ago(hours=1), "channel": "web"}
    if event_type == "purchase":
        base.update(price=10.0, currency="EUR", quantity=1)
    return {**base, **fields}


def purchase(event_id: str, user_id: str = "u-1", item_id: str = "sku-1", **fields: Any) -> dict[str, Any]:
    return event(event_id, user_id, item_id, "purchase", **fields)


def item(item_id: str = "sku-1", **fields: Any) -> dict[str, Any]:
    return {"item_id": item_id, "title": f"Item {item_id}", "category": "kitchen", "price": 12.5,
            "currency": "EUR", **fields}
