"""Catalog storage (the items table)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from shared.catalog import Item, ItemUpsert
from shared.events import format_timestamp
from shared.errors import NotFound
from shared.storage import dynamo


class CatalogStore:
    def __init__(self, items_table: str) -> None:
        self.items_table = items_table

    def put_many(self, items: Sequence[ItemUpsert]) -> list[Item]:
        now = datetime.now(timezone.utc)
        stored = [
            Item(**item.model_dump(), updated_at=now).model_copy(
                update={"created_at": item.created_at or now}
            )
            for item in items
        ]
        dynamo.batch_put(self.items_table, [_record(item) for item in stored])
        return stored

    def get(self, item_id: str) -> Item:
        row = dynamo.get_item(self.items_table, {"item_id": item_id}, "read item")
        if row is None:
            raise NotFound(f"item {item_id!r} is not in the catalog", field="item_id")
        return Item.model_validate(row)


def _record(item: Item) -> dict:
    # Fixed-width UTC, so the by_category index sorts items by age whatever zone the shop sent.
    return {**item.model_dump(mode="json"), "created_at": format_timestamp(item.created_at)}


def catalog_details(items_table: str, item_ids: Sequence[str]) -> dict[str, Item]:
    """Up to any number of items by id (BatchGetItem, 100 a call); unknown ids are left out."""
    unique = list(dict.fromkeys(item_ids))
    rows = dynamo.batch_get(items_table, [{"item_id": item_id} for item_id in unique])
    return {row["item_id"]: Item.model_validate(row) for row in rows}


def newest_in_category(items_table: str, category: str, limit: int) -> list[dict]:
    """A category's newest items (by_category index): id, title, price, stock, age."""
    with dynamo.aws_faults("query new items"):
        response = dynamo.client().query(
            TableName=items_table, IndexName="by_category", ScanIndexForward=False, Limit=limit,
            KeyConditionExpression="category = :category",
            ExpressionAttributeValues=dynamo.serialize({":category": category}),
        )
    return [dynamo.deserialize(item) for item in response.get("Items", [])]
