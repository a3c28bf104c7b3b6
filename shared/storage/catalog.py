"""Catalog storage (the items table)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from botocore.exceptions import ClientError

from shared.catalog import Item, ItemUpsert
from shared.errors import NotFound, StorageUnavailable
from shared.events import format_timestamp
from shared.storage import dynamo

# Puts run in parallel: the work is waiting on DynamoDB, one call per item.
PUT_CONCURRENCY = 16


@dataclass
class CatalogWrite:
    stored: list[Item] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # place in the request -> DynamoDB's reason


class CatalogStore:
    def __init__(self, items_table: str) -> None:
        self.items_table = items_table

    def put_many(self, items: Sequence[ItemUpsert]) -> CatalogWrite:
        """One PutItem per item, so an item DynamoDB refuses fails alone and its neighbours are
        stored (a BatchWriteItem fails all 25 of its items together). PutItem also keeps this
        function free of BatchWriteItem, which can delete, and which ingest has no right to."""
        now = datetime.now(timezone.utc)
        records = [  # validated already, as ItemUpsert
            Item.model_construct(**{**item.model_dump(), "created_at": item.created_at or now}, updated_at=now)
            for item in items
        ]
        result = CatalogWrite()
        unavailable = 0
        with ThreadPoolExecutor(max_workers=max(1, min(PUT_CONCURRENCY, len(records)))) as pool:
            outcomes = list(pool.map(self._put, records))
        for place, (record, refusal) in enumerate(zip(records, outcomes)):
            if refusal is None:
                result.stored.append(record)
            elif isinstance(refusal, StorageUnavailable):
                unavailable += 1
            else:
                result.refused[place] = refusal
        if unavailable:
            raise StorageUnavailable(
                f"{unavailable} of {len(records)} items could not be stored ({len(result.stored)} were); "
                "send the same request again: a put replaces the item, so nothing is doubled")
        return result

    def _put(self, item: Item) -> str | StorageUnavailable | None:
        try:
            with dynamo.aws_faults("store an item"):
                dynamo.client().put_item(TableName=self.items_table, Item=dynamo.serialize(_record(item)))
        except StorageUnavailable as error:
            return error
        except ClientError as error:  # refused for this item alone (too large, bad value)
            return f"refused by the store: {error.response.get('Error', {}).get('Message', dynamo.error_code(error))}"
        return None

    def get(self, item_id: str) -> Item:
        row = dynamo.get_item(self.items_table, {"item_id": item_id}, "read item")
        if row is None:
            raise NotFound(f"item {item_id!r} is not in the catalog", field="item_id")
        return Item.model_validate(row)


# Optional display fields, stored only when given: items stored before them simply lack them.
DISPLAY_FIELDS = ("image_url", "url")


def _record(item: Item) -> dict:
    # Fixed-width UTC, so the by_category index sorts items by age whatever zone the shop sent.
    record = {**item.model_dump(mode="json"), "created_at": format_timestamp(item.created_at)}
    for name in DISPLAY_FIELDS:
        if record.get(name) is None:
            record.pop(name, None)
    return record


def catalog_details(items_table: str, item_ids: Sequence[str]) -> dict[str, Item]:
    """Up to any number of items by id (BatchGetItem, 100 a call); unknown ids are left out."""
    unique = list(dict.fromkeys(item_ids))
    rows = dynamo.batch_get(items_table, [{"item_id": item_id} for item_id in unique])
    return {row["item_id"]: Item.model_validate(row) for row in rows}


def newest_in_category(items_table: str, category: str, limit: int) -> list[Item]:
    """A category's newest items, newest first, from the by_category index: its projection has
    everything an answer filters on, but not the attributes, which come back empty, nor the
    display fields (image_url, url), which are read from the table for the items found (an
    index's projection cannot change once deployed)."""
    with dynamo.aws_faults("query new items"):
        response = dynamo.client().query(
            TableName=items_table, IndexName="by_category", ScanIndexForward=False, Limit=limit,
            KeyConditionExpression="category = :category",
            ExpressionAttributeValues=dynamo.serialize({":category": category}),
        )
    rows = [dynamo.deserialize(item) for item in response.get("Items", [])]
    if rows:  # one BatchGetItem of the items found, projected to their display fields
        names = {f"#d{n}": name for n, name in enumerate(DISPLAY_FIELDS)}
        display = {row["item_id"]: row for row in dynamo.batch_get(
            items_table, [{"item_id": row["item_id"]} for row in rows],
            projection=", ".join(["item_id", *names]), names=names)}
        rows = [{**display.get(row["item_id"], {}), **row} for row in rows]
    return [Item.model_validate(row) for row in rows]
