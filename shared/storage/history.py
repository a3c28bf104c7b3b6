"""A customer's recent events, newest first, in one strongly consistent Query (the by_time LSI)."""

from __future__ import annotations

from datetime import datetime

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
    return [history_event(dynamo.deserialize(row)) for row in response.get("Items", [])]


def history_event(row: dict) -> HistoryEvent:
    return HistoryEvent(
        item_id=row["item_id"], event_type=row["event_type"], quantity=int(row.get("quantity", 1)),
        timestamp=datetime.fromisoformat(row["ts"]).timestamp(), channel=row.get("channel"),
        price=float(row["price"]) if "price" in row else None, currency=row.get("currency"),
        campaign_id=row.get("campaign_id"), discount=bool((row.get("properties") or {}).get("discount")),
    )
