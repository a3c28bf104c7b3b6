"""A customer's recent events, newest first, in one strongly consistent Query (the by_time LSI).

History is about items: events stored without an item_id (searches) are left out, though they
count within the limit read."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.history import HistoryEvent
from shared.storage import dynamo

# Enough history to know a customer's taste; bounded so one request reads at most ~1 MB.
HISTORY_LIMIT = 500
# What history_event reads of a stored event.
HISTORY_FIELDS = ("item_id", "event_type", "quantity", "ts", "channel", "price", "currency", "campaign_id", "properties")


def recent_history(events_table: str, user_id: str, limit: int = HISTORY_LIMIT) -> list[HistoryEvent]:
    with dynamo.aws_faults("read history"):
        response = dynamo.client().query(
            TableName=events_table, IndexName="by_time", ScanIndexForward=False, Limit=limit,
            ConsistentRead=True,  # an event stored a moment ago must count
            KeyConditionExpression="user_id = :user",
            ProjectionExpression=", ".join(HISTORY_FIELDS),
            ExpressionAttributeValues=dynamo.serialize({":user": user_id}),
        )
    return [history_event(dynamo.deserialize(row)) for row in response.get("Items", []) if "item_id" in row]


def history_event(row: dict) -> HistoryEvent:
    """A stored event with an item_id as a history row; an event without one (a search) is no
    history row, and its readers leave it out before calling this."""
    return HistoryEvent(
        item_id=row["item_id"], event_type=row["event_type"], quantity=int(row.get("quantity", 1)),
        timestamp=datetime.fromisoformat(row["ts"]).timestamp(), channel=row.get("channel"),
        price=float(row["price"]) if "price" in row else None, currency=row.get("currency"),
        campaign_id=row.get("campaign_id"), discount=bool((row.get("properties") or {}).get("discount")),
    )


def history_event_of_item(item: dict[str, Any]) -> HistoryEvent:
    """history_event of a stored item as DynamoDB JSON (a Scan's page, an export's line), read
    field by field: the nightly run reads every event, and the general deserializer is its
    slowest part. Equal to history_event(dynamo.deserialize(item)) (tests/unit/test_export_training.py)."""
    quantity, price, properties = item.get("quantity"), item.get("price"), item.get("properties")
    return HistoryEvent(
        item_id=item["item_id"]["S"], event_type=item["event_type"]["S"],
        quantity=int(Decimal(quantity["N"])) if quantity else 1,
        timestamp=datetime.fromisoformat(item["ts"]["S"]).timestamp(),
        channel=_text(item.get("channel")), price=float(Decimal(price["N"])) if price else None,
        currency=_text(item.get("currency")), campaign_id=_text(item.get("campaign_id")),
        discount=bool(dynamo.deserialize(properties["M"]).get("discount")) if properties and "M" in properties else False,
    )


def _text(value: dict[str, Any] | None) -> str | None:
    return value["S"] if value and "S" in value else dynamo.deserialize({"v": value})["v"] if value else None


# The newest linked visitor ids (devices used before signing in) whose history counts, and how
# many events of each: a bounded read however many devices a customer has linked.
LINKED_IDS_READ = 5
LINKED_HISTORY_LIMIT = 100


def recent_history_of(events_table: str, user_ids: list[str], limit: int = HISTORY_LIMIT) -> list[HistoryEvent]:
    """The first id's recent history with that of the newest ids linked to it, newest first, at
    most `limit`."""
    history = recent_history(events_table, user_ids[0], limit)
    if len(user_ids) == 1:
        return history
    for linked in user_ids[1:1 + LINKED_IDS_READ]:
        history += recent_history(events_table, linked, LINKED_HISTORY_LIMIT)
    return sorted(history, key=lambda event: -event.timestamp)[:limit]
