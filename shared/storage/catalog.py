"""Catalog storage (the items table).

An upsert reads the row it replaces at no extra cost (PutItem's ReturnValues=ALL_OLD): an item back
in stock or cheaper is published at once on the bus (shared/triggers.py, docs/triggers.md), and
the row keeps `restocked_at` / `price_dropped_at` marks for the nightly run's per-customer events.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from aws_lambda_powertools.metrics import MetricUnit

from shared.catalog import Item, ItemUpsert
from shared.errors import NotFound, StorageUnavailable
from shared.events import MAX_MONEY, format_timestamp
from shared.observability import logger, metrics
from shared.storage import dynamo
from shared.storage.bus import EventBus, NoBus
from shared.storage.scan import scan_by_key
from shared.triggers import CatalogItem, Trigger, item_change, item_events, item_marks
from shared.users import attributes_as_sent

# Puts run in parallel: the work is waiting on DynamoDB, one call per item.
PUT_CONCURRENCY = 16


@dataclass
class CatalogWrite:
    stored: list[Item] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # place in the request -> DynamoDB's reason


class CatalogStore:
    def __init__(self, items_table: str, bus: EventBus | None = None) -> None:
        self.items_table = items_table
        self.bus = bus or NoBus()

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
        # An id sent twice in one batch: the last entry is the item, as if sent in order (the puts
        # run in parallel, so which one stayed depended on timing, and a restock could be told from
        # an entry already replaced). The entries before it share its outcome.
        last = {record.item_id: place for place, record in enumerate(records)}
        written = sorted(set(last.values()))
        with ThreadPoolExecutor(max_workers=max(1, min(PUT_CONCURRENCY, len(written)))) as pool:
            done = dict(zip(written, pool.map(lambda place: self._put(records[place], now), written)))
        outcomes = [done[last[record.item_id]] for record in records]
        self._publish([trigger for place in written for trigger in done[place][1]])
        for place, (record, (refusal, _)) in enumerate(zip(records, outcomes)):
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

    def _put(self, item: Item, now: datetime) -> tuple[str | StorageUnavailable | None, list[Trigger]]:
        record = _record(item)
        try:
            with dynamo.aws_faults("store an item"):
                response = dynamo.client().put_item(TableName=self.items_table, Item=dynamo.serialize(record),
                                                    ReturnValues="ALL_OLD")
        except StorageUnavailable as error:
            return error, []
        except ClientError as error:
            if dynamo.error_code(error) != "ValidationException":  # the table's or the role's fault, not the item's:
                # a 4xx would tell the client not to send it again
                return StorageUnavailable(f"the store refused an item ({dynamo.error_code(error)})"), []
            # refused for this item alone (too large, bad value)
            return f"refused by the store: {error.response.get('Error', {}).get('Message', dynamo.error_code(error))}", []
        before = dynamo.deserialize(response["Attributes"]) if response.get("Attributes") else None
        if before is not None and _item(before) is None:
            return None, []  # what it replaced does not read: no restock or price drop can be told
        change = item_change(before, record)
        self._mark(record, item_marks(before, change, now))
        return None, item_events(change, now) if change else []

    def _mark(self, record: dict, marks: dict[str, str]) -> None:
        """Keep the restock and price-drop marks on the row just put (a put replaces the whole row).
        Only on the put that made the row, so a newer upsert that raced it is never overwritten;
        a mark lost then, or to a fault, costs the nightly per-customer events of that item only."""
        if not marks:
            return
        names = {f"#m{n}": name for n, name in enumerate(marks)}
        values = {f":m{n}": value for n, value in enumerate(marks.values())}
        try:
            with dynamo.aws_faults("mark a restocked or cheaper item"):
                dynamo.client().update_item(
                    TableName=self.items_table, Key=dynamo.serialize({"item_id": record["item_id"]}),
                    UpdateExpression="SET " + ", ".join(f"{n} = {v}" for n, v in zip(names, values)),
                    ConditionExpression="updated_at = :ours",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=dynamo.serialize({**values, ":ours": record["updated_at"]}))
        except (StorageUnavailable, ClientError) as error:
            logger.warning("item marks not written", extra={"item_id": record["item_id"], "error": str(error)[:300]})
            metrics.add_metric("ItemMarksUnwritten", MetricUnit.Count, 1)

    def _publish(self, triggers: list[Trigger]) -> None:
        """The item-level events, at once. A bus fault does not fail the upsert: the items are stored
        and marked (the nightly per-customer events still follow); the fault is logged and counted."""
        if not triggers:
            return
        try:
            self.bus.publish(triggers)
        except StorageUnavailable as error:
            logger.warning("item triggers not published", extra={"triggers": len(triggers), "error": str(error)})
            metrics.add_metric("TriggersUnpublished", MetricUnit.Count, len(triggers))

    def get(self, item_id: str) -> Item:
        row = dynamo.get_item(self.items_table, {"item_id": item_id}, "read item")
        if row is None:
            raise NotFound(f"item {item_id!r} is not in the catalog", field="item_id")
        item = _item(row)
        if item is None:
            raise NotFound(f"item {item_id!r} is stored but does not read (it is left out of every answer): "
                           f"store it again with PUT /items/{item_id}", field="item_id")
        return item


# Optional display fields, stored only when given: items stored before them simply lack them.
DISPLAY_FIELDS = ("image_url", "url")
# What the row keeps for the nightly triggers, never shown: an Item has no such fields.
MARK_FIELDS = ("restocked_at", "price_dropped_at", "price_before_drop")


def _item(row: dict) -> Item | None:
    """A stored row as an Item; None, logged by id, for one that does not validate (written by hand,
    or by a version that checked less): it is left out of every answer, as an item not in the
    catalog would be, instead of failing every answer it would be in."""
    try:
        return Item.model_validate({k: attributes_as_sent(v) if k == "attributes" else v
                                    for k, v in row.items() if k not in MARK_FIELDS})
    except ValidationError:
        logger.warning("a stored catalog item does not read: it is left out of answers until stored again",
                       extra={"item_id": str(row.get("item_id"))[:256]})
        return None


def _items(rows: Iterable[dict]) -> dict[str, Item]:
    """The rows that read, as Items by id."""
    return {item.item_id: item for item in map(_item, rows) if item is not None}


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
    return _items(dynamo.batch_get(items_table, [{"item_id": item_id} for item_id in unique]))


def category_of(row: Mapping[str, Any]) -> str | None:
    """A stored item's category as every reader of categories takes it (the nightly run's, the
    segments function's): its text, interned (a catalog's thousands of items share a few), or
    none when it is missing or not text, which no read fails on."""
    category = row.get("category")
    return sys.intern(category) if isinstance(category, str) else None


def catalog_categories(items_table: str) -> dict[str, str]:
    """Every item's category, by id (a parallel Scan: the nightly scan path, or the segments
    function's snapshot loaded in the background)."""
    return known_categories(scan_by_key(items_table, "item_id", category_of, ProjectionExpression="item_id, category"))


def categories_by_key(items_table: str, item_ids: Sequence[str]) -> dict[str, str]:
    """These items' categories (BatchGetItem, projected), read as catalog_categories reads them."""
    rows = dynamo.batch_get(items_table, [{"item_id": item_id} for item_id in dict.fromkeys(item_ids)],
                            projection="item_id, category")
    return known_categories({row["item_id"]: category_of(row) for row in rows})


def known_categories(found: Mapping[str, str | None]) -> dict[str, str]:
    """The items that have a category (category_of), with it."""
    return {item_id: category for item_id, category in found.items() if category is not None}


def catalog_snapshot(items_table: str) -> dict[str, Item]:
    """Every item, by id (a parallel Scan: for a campaign job, or the recommend function's
    snapshot loaded in the background; never a request)."""
    return _items(scan_by_key(items_table, "item_id", lambda row: row).values())


def newest_ids_in_category(items_table: str, category: str, limit: int) -> list[str]:
    """The ids of a category's newest items, newest first (the by_category index): what the
    catalog snapshot completes with its rows."""
    with dynamo.aws_faults("query new items"):
        response = dynamo.client().query(
            TableName=items_table, IndexName="by_category", ScanIndexForward=False, Limit=limit,
            KeyConditionExpression="category = :category", ProjectionExpression="item_id",
            ExpressionAttributeValues=dynamo.serialize({":category": category}),
        )
    return [item["item_id"]["S"] for item in response.get("Items", [])]


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
    return list(_items(rows).values())


def triggers_catalog(items_table: str, since: str) -> list[CatalogItem]:
    """The items created, restocked or made cheaper after `since` (a fixed-width UTC stamp): what the
    nightly run's per-customer triggers read. One parallel Scan of the catalog, filtered by DynamoDB."""
    fields = ("item_id", "category", "created_at", "in_stock", "retired", "attributes", "price", "currency",
              *MARK_FIELDS)
    names = {f"#f{n}": name for n, name in enumerate(fields)}
    by_name = {name: placeholder for placeholder, name in names.items()}
    rows = scan_by_key(
        items_table, "item_id", lambda row: row, ProjectionExpression=", ".join(names),
        FilterExpression=" OR ".join(f"{by_name[name]} > :since" for name in
                                     ("created_at", "restocked_at", "price_dropped_at")),
        ExpressionAttributeNames=names, ExpressionAttributeValues=dynamo.serialize({":since": since}))
    return [item for item in map(_catalog_item, rows.values()) if item is not None]


def _catalog_item(row: dict) -> CatalogItem | None:
    """A row as the triggers read it; None, logged, for one that does not read (as `_item`)."""
    texts = ("item_id", "category", "created_at")
    optional_texts = ("currency", "restocked_at", "price_dropped_at")
    flags = {"in_stock": row.get("in_stock", True), "retired": row.get("retired", False)}
    try:
        if not (all(isinstance(row.get(name), str) for name in texts)
                and all(isinstance(row.get(name), (str, type(None))) for name in optional_texts)
                and all(isinstance(flag, bool) for flag in flags.values())
                and isinstance(row.get("attributes"), (dict, type(None)))):
            raise ValueError("a field of the wrong type")
        return CatalogItem(
            item_id=row["item_id"], category=row["category"], created_at=row["created_at"], **flags,
            attributes=row.get("attributes"), price=_decimal(row.get("price")), currency=row.get("currency"),
            restocked_at=row.get("restocked_at"), price_dropped_at=row.get("price_dropped_at"),
            price_before_drop=_decimal(row.get("price_before_drop")))
    except (ValueError, ArithmeticError):
        logger.warning("a stored catalog item does not read: no triggers for it until stored again",
                       extra={"item_id": str(row.get("item_id"))[:256]})
        return None


def _decimal(value: object) -> Decimal | None:
    """A stored amount (a text, as Item stores it); ValueError for one that is no amount ingest
    stores (NaN, infinite, negative, past MAX_MONEY: by hand), which no comparison or rounding of
    the triggers could take."""
    if value is None:
        return None
    amount = Decimal(str(value))
    if not (amount.is_finite() and 0 <= amount < MAX_MONEY):
        raise ValueError("an amount ingest does not store")
    return amount
