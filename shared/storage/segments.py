"""Materialized segments: members per run, and one index item listing every segment and its size.

Keys (SegmentsTable):
    segment_id = "#index", sk = "current"           the latest run: {run, at, segments: {id: {family, name, members}}}
    segment_id = <segment>, sk = "m#<run>#<user>"   a member, with the reason, for that run
    segment_id = "#custom", sk = <segment>          a custom definition, as JSON text in "definition"
Readers always go through the index's run id, so a run being written is invisible until its index
is written, and members of old runs are never mixed in; they expire through the table's TTL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from shared.errors import Conflict, DomainError, NotFound
from shared.observability import logger, metrics
from shared.segments.rules import MAX_CUSTOM_SEGMENTS, CustomSegment, from_stored_text, stored_text
from shared.storage import dynamo

INDEX_KEY = {"segment_id": "#index", "sk": "current"}
CUSTOM_PARTITION = "#custom"  # one item per custom definition, sk = its segment id
OLD_RUNS_KEPT_SECONDS = 3 * 86_400


@dataclass(frozen=True)
class StoredDefinitions:
    readable: list[CustomSegment]
    unreadable: list[str]  # segment ids of definitions that do not parse: skipped, kept for deletion


class SegmentStore:
    def __init__(self, table: str) -> None:
        self.table = table

    def write_run(self, run: str, at: str, members: Iterable[tuple[str, str, str, str, str]]) -> dict[str, Any]:
        """`members`: (segment_id, family, name, user_id, reason). Writes members, then the index."""
        expires = int(time.time()) + OLD_RUNS_KEPT_SECONDS
        segments: dict[str, dict[str, Any]] = {}
        rows = []
        for segment_id, family, name, user_id, reason in members:
            entry = segments.setdefault(segment_id, {"family": family, "name": name, "members": 0})
            entry["members"] += 1
            rows.append({"segment_id": segment_id, "sk": f"m#{run}#{user_id}", "member_user_id": user_id,
                         "reason": reason, "run": run, "expires_at": expires})
        dynamo.batch_put(self.table, rows)
        index = {**INDEX_KEY, "run": run, "at": at, "segments": segments}
        dynamo.batch_put(self.table, [index])
        return index

    def create_definition(self, definition: CustomSegment) -> None:
        # Counted, then written: two definitions created at the same instant may both pass, so the
        # limit can be passed by the few created concurrently; it bounds reads, it is not a quota.
        if self.count_definitions() >= MAX_CUSTOM_SEGMENTS:
            raise Conflict(f"at most {MAX_CUSTOM_SEGMENTS} custom segments; delete one before defining another")
        item = {"segment_id": CUSTOM_PARTITION, "sk": definition.segment_id, "definition": stored_text(definition)}
        try:
            with dynamo.aws_faults("store a segment definition"):
                dynamo.client().put_item(TableName=self.table, Item=dynamo.serialize(item),
                                         ConditionExpression="attribute_not_exists(sk)")
        except ClientError as error:
            if dynamo.error_code(error) == "ConditionalCheckFailedException":
                raise Conflict(f"a segment named {definition.name!r} exists already", field="name") from None
            raise

    def count_definitions(self) -> int:
        with dynamo.aws_faults("count segment definitions"):
            pages = dynamo.client().get_paginator("query").paginate(
                TableName=self.table, KeyConditionExpression="segment_id = :custom", Select="COUNT",
                ExpressionAttributeValues=dynamo.serialize({":custom": CUSTOM_PARTITION}))
            return sum(page["Count"] for page in pages)

    def definitions(self) -> list[CustomSegment]:
        return self.read_definitions().readable

    def read_definitions(self) -> StoredDefinitions:
        """Every definition that parses. One that does not (written by an older version, or put in
        the table by hand) is logged, counted and skipped: it must not fail a customer's read, the
        listing or the nightly run. Its id is returned, so that it can be deleted."""
        with dynamo.aws_faults("read segment definitions"):
            pages = dynamo.client().get_paginator("query").paginate(
                TableName=self.table, KeyConditionExpression="segment_id = :custom",
                ExpressionAttributeValues=dynamo.serialize({":custom": CUSTOM_PARTITION}))
            rows = [row for page in pages for row in page["Items"]]
        readable, unreadable = [], []
        for row in rows:
            segment_id = row["sk"]["S"]
            try:
                definition = from_stored_text(row["definition"]["S"])
                if definition.segment_id != segment_id:  # it could not be deleted by the id it shows
                    raise ValueError(f"it names itself {definition.segment_id!r}")
                readable.append(definition)
            except Exception as error:  # noqa: BLE001 - whatever a stored item holds, the others are read
                logger.warning("unreadable custom segment definition skipped", extra={
                    "segment_id": segment_id, "error": f"{type(error).__name__}: {str(error)[:500]}"})
                metrics.add_metric("SegmentDefinitionsSkipped", MetricUnit.Count, 1)
                unreadable.append(segment_id)
        return StoredDefinitions(readable, unreadable)

    def delete_definition(self, segment_id: str) -> None:
        try:
            with dynamo.aws_faults("delete a segment definition"):
                dynamo.client().delete_item(TableName=self.table, ConditionExpression="attribute_exists(sk)",
                                            Key=dynamo.serialize({"segment_id": CUSTOM_PARTITION, "sk": segment_id}))
        except ClientError as error:
            if dynamo.error_code(error) == "ConditionalCheckFailedException":
                raise NotFound(f"no custom segment {segment_id!r}", field="segment_id") from None
            raise

    def index(self) -> dict[str, Any] | None:
        rows = dynamo.batch_get(self.table, [INDEX_KEY], consistent=True)
        return rows[0] if rows else None

    def members(self, segment_id: str, limit: int, cursor: str | None) -> tuple[dict[str, Any], list[dict[str, str]], str | None]:
        """The latest run's index, a page of its members, and the cursor of the next page."""
        index = self.index()
        if index is None or segment_id not in index["segments"]:
            raise NotFound(f"segment {segment_id!r} has no members in the latest run", field="segment_id")
        prefix = f"m#{index['run']}#"
        request: dict[str, Any] = {
            "TableName": self.table, "Limit": limit,
            "KeyConditionExpression": "segment_id = :segment AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": dynamo.serialize({":segment": segment_id, ":prefix": prefix}),
        }
        if cursor:
            request["ExclusiveStartKey"] = dynamo.serialize({"segment_id": segment_id, "sk": _decode(cursor, prefix)})
        with dynamo.aws_faults("read segment members"):
            response = dynamo.client().query(**request)
        found = [dynamo.deserialize(row) for row in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        next_cursor = dynamo.encode_cursor(dynamo.deserialize(last)["sk"]) if last else None
        return index, [{"user_id": r["member_user_id"], "reason": r["reason"]} for r in found], next_cursor


def _decode(cursor: str, prefix: str) -> str:
    sk = dynamo.decode_cursor(cursor)
    if not sk.startswith(prefix):
        raise DomainError("cursor belongs to an older run; start again without it", field="cursor")
    return sk
