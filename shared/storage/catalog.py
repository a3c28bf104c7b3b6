"""Catalog storage (the items table)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from shared.catalog import Item, ItemUpsert
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
        dynamo.batch_put(self.items_table, [item.model_dump(mode="json") for item in stored])
        return stored

    def get(self, item_id: str) -> Item:
        with dynamo.aws_faults("read item"):
            response = dynamo.client().get_item(
                TableName=self.items_table, Key=dynamo.serialize({"item_id": item_id})
            )
        if "Item" not in response:
            raise NotFound(f"item {item_id!r} is not in the catalog", field="item_id")
        return Item.model_validate(dynamo.deserialize(response["Item"]))
