"""A customer's rights over their data: consent, access (export) and erasure.

Erasure removes every item keyed by the customer: their events, their profile with consent and
summary, and their segment memberships (found through the by_user index). The next training run
cannot see them, because training reads only these tables.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from shared.events import format_timestamp
from shared.storage import dynamo


class PrivacyStore:
    def __init__(self, events_table: str, users_table: str, segments_table: str) -> None:
        self.events_table = events_table
        self.users_table = users_table
        self.segments_table = segments_table

    def set_consent(self, user_id: str, personalization: bool) -> dict[str, Any]:
        with dynamo.aws_faults("record consent"):
            response = dynamo.client().update_item(
                TableName=self.users_table, Key=dynamo.serialize({"user_id": user_id}),
                UpdateExpression="SET consent = :consent, consent_updated_at = :at",
                ExpressionAttributeValues=dynamo.serialize({
                    ":consent": {"personalization": personalization},
                    ":at": format_timestamp(datetime.now(timezone.utc))}),
                ReturnValues="ALL_NEW")
        return dynamo.deserialize(response["Attributes"])

    def export(self, user_id: str) -> dict[str, Any]:
        profile = dynamo.get_item(self.users_table, {"user_id": user_id}, "read profile", consistent=True)
        return {"user_id": user_id, "profile": profile,
                "events": [dynamo.deserialize(row) for row in self._events(user_id)],
                "segment_memberships": [dynamo.deserialize(row) for row in self._memberships(user_id)]}

    def erase(self, user_id: str) -> dict[str, int]:
        events = [dynamo.deserialize(row) for row in self._events(user_id, keys_only=True)]
        memberships = [dynamo.deserialize({k: row[k] for k in ("segment_id", "sk")}) for row in self._memberships(user_id)]
        dynamo.batch_delete(self.events_table, events)
        dynamo.batch_delete(self.segments_table, memberships)
        with dynamo.aws_faults("erase profile"):
            dynamo.client().delete_item(TableName=self.users_table, Key=dynamo.serialize({"user_id": user_id}))
        return {"events": len(events), "segment_memberships": len(memberships)}

    def _events(self, user_id: str, keys_only: bool = False) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"TableName": self.events_table, "ConsistentRead": True,
                                   "KeyConditionExpression": "user_id = :user",
                                   "ExpressionAttributeValues": dynamo.serialize({":user": user_id})}
        if keys_only:
            request["ProjectionExpression"] = "user_id, event_id"
        return self._query_all(request, "read events")

    def _memberships(self, user_id: str) -> list[dict[str, Any]]:
        return self._query_all({"TableName": self.segments_table, "IndexName": "by_user",
                                "KeyConditionExpression": "member_user_id = :user",
                                "ExpressionAttributeValues": dynamo.serialize({":user": user_id})},
                               "read segment memberships")

    @staticmethod
    def _query_all(request: dict[str, Any], action: str) -> list[dict[str, Any]]:
        with dynamo.aws_faults(action):
            pages = dynamo.client().get_paginator("query").paginate(**request)
            return [row for page in pages for row in page["Items"]]
