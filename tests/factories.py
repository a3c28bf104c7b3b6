"""Small, explicit test data: one event or item with the fields a test cares about."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.segments.members import SegmentMembers


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


def members_by_segment(rows: Iterable[tuple[str, str, str, str, str]]) -> list[SegmentMembers]:
    """Rows (segment_id, family, name, user_id, reason) as each segment's members; a segment's
    family and name are those of its first row."""
    groups: dict[str, SegmentMembers] = {}
    for segment_id, family, name, user_id, reason in rows:
        group = groups.get(segment_id)
        if group is None:
            group = groups[segment_id] = SegmentMembers(segment_id, family, name, [], [])
        group.user_ids.append(user_id)
        group.reasons.append(reason)
    return list(groups.values())
