"""Materialized segments: members per run, and one index item listing every segment and its size.

Keys (SegmentsTable):
    segment_id = "#index", sk = "current"           the latest run: {run, at, segments: {id: {family, name, members}}}
    segment_id = <segment>, sk = "m#<run>#<user>"   a member, with the reason, for that run
Readers always go through the index's run id, so a run being written is invisible until its index
is written, and members of old runs are never mixed in; they expire through the table's TTL.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from typing import Any

from shared.errors import DomainError, NotFound
from shared.storage import dynamo

INDEX_KEY = {"segment_id": "#index", "sk": "current"}
OLD_RUNS_KEPT_SECONDS = 3 * 86_400


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

    def index(self) -> dict[str, Any] | None:
        rows = dynamo.batch_get(self.table, [INDEX_KEY], consistent=True)
        return rows[0] if rows else None

    def members(self, segment_id: str, limit: int, cursor: str | None) -> tuple[str, list[dict[str, str]], str | None]:
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
        next_cursor = _encode(dynamo.deserialize(last)["sk"]) if last else None
        return index["run"], [{"user_id": r["member_user_id"], "reason": r["reason"]} for r in found], next_cursor


def _encode(sk: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(sk).encode()).decode()


def _decode(cursor: str, prefix: str) -> str:
    try:
        sk = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise DomainError("cursor is not one this API returned", field="cursor") from None
    if not isinstance(sk, str) or not sk.startswith(prefix):
        raise DomainError("cursor belongs to an older run; start again without it", field="cursor")
    return sk
