"""The users table, and the only code that reads or writes it: profile, consent, the purchase
summary kept at ingest (as actions of ingest's own transactions), and the suppression record
that erasure leaves."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import ClientError

from shared.errors import NotFound, StorageUnavailable
from shared.events import Event, format_timestamp
from shared.storage import dynamo
from shared.storage.scan import scan_by_key
from shared.users import PurchaseSummary, User, UserProfileIn, may_personalize


class UserStore:
    def __init__(self, users_table: str) -> None:
        self.users_table = users_table

    def put_profile(self, user_id: str, profile: UserProfileIn) -> User:
        """Replace the profile fields; the summary (written at ingest) is never touched here."""
        fields = {
            "country": profile.country,
            "region": profile.region,
            "city": profile.city,
            "attributes": profile.attributes,
            "updated_at": format_timestamp(datetime.now(timezone.utc)),
        }
        if profile.consent is not None:
            fields["consent"] = profile.consent.model_dump()
        present = {name: value for name, value in fields.items() if value is not None}
        absent = [name for name, value in fields.items() if value is None and name != "consent"]
        expression = "SET " + ", ".join(f"#{name} = :{name}" for name in present)
        if absent:
            expression += " REMOVE " + ", ".join(f"#{name}" for name in absent)
        with dynamo.aws_faults("write user"):
            response = dynamo.client().update_item(
                TableName=self.users_table,
                Key=dynamo.serialize({"user_id": user_id}),
                UpdateExpression=expression,
                ExpressionAttributeNames={f"#{name}": name for name in (*present, *absent)},
                ExpressionAttributeValues=dynamo.serialize({f":{k}": v for k, v in present.items()}),
                ReturnValues="ALL_NEW",
            )
        return user_from_row(dynamo.deserialize(response["Attributes"]))

    def get(self, user_id: str) -> User:
        user = self.find(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} is unknown", field="user_id")
        return user

    def find(self, user_id: str) -> User | None:
        row = self.row(user_id)
        return user_from_row(row) if row is not None else None

    def row(self, user_id: str) -> dict[str, Any] | None:
        """The stored row as it is (an export shows everything held). Strongly consistent: the
        consent in it decides what the caller may be shown."""
        return dynamo.get_item(self.users_table, {"user_id": user_id}, "read user", consistent=True)

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

    def suppress(self, user_id: str, erased_at: str, status: str) -> bool:
        """Replace the row by the suppression record of an erasure; True when it keeps an objection.

        The put is conditional on the consent read just before, so an objection recorded in
        between is never lost: the read and the put are tried again."""
        for delay in dynamo.backoff_delays(5):
            row = self.row(user_id) or {}
            consent = row.get("consent")
            objected = bool(row) and not may_personalize(user_from_row(row))
            record = {"user_id": user_id, "erased_at": erased_at, "erasure_status": status}
            if objected:
                record.update(consent=consent, consent_updated_at=row.get("consent_updated_at"))
            condition, values = ("attribute_not_exists(consent)", {}) if consent is None else \
                ("consent = :consent", {":consent": consent})
            request: dict[str, Any] = {"TableName": self.users_table, "Item": dynamo.serialize(record),
                                       "ConditionExpression": condition}
            if values:
                request["ExpressionAttributeValues"] = dynamo.serialize(values)
            try:
                with dynamo.aws_faults("record the erasure"):
                    dynamo.client().put_item(**request)
                return objected
            except ClientError as error:
                if dynamo.error_code(error) != "ConditionalCheckFailedException":
                    raise
            time.sleep(delay)
        raise StorageUnavailable("erase: the customer's consent kept changing; try again")

    def set_erasure_status(self, user_id: str, status: str) -> None:
        with dynamo.aws_faults("record the erasure"):
            dynamo.client().update_item(
                TableName=self.users_table, Key=dynamo.serialize({"user_id": user_id}),
                UpdateExpression="SET erasure_status = :status",
                ExpressionAttributeValues=dynamo.serialize({":status": status}))

    def with_erasure_status(self, status: str) -> list[str]:
        """Users whose erasure has this status (a filtered Scan: for the sweep, never a request)."""
        return sorted(scan_by_key(self.users_table, "user_id", lambda row: row["user_id"],
                                  FilterExpression="erasure_status = :status", ProjectionExpression="user_id",
                                  ExpressionAttributeValues={":status": {"S": status}}))


def user_from_row(row: dict) -> User:
    return User.model_validate({**row, "summary": row})


def all_user_rows(users_table: str, segments: int = 4) -> dict[str, dict[str, Any]]:
    """Every stored row, by user id (a parallel Scan: for the nightly run, never a request)."""
    return scan_by_key(users_table, "user_id", lambda row: row, segments)


def withheld(users_table: str, user_ids: list[str], since: str, behavioural: bool) -> set[str]:
    """Of `user_ids`, those a list computed at `since` must no longer show: erased after it, or,
    for a list built from behaviour, objecting now. Read strongly consistent, as consent decides."""
    rows = dynamo.batch_get(users_table, [{"user_id": user} for user in dict.fromkeys(user_ids)],
                            consistent=True, projection="user_id, consent, erased_at")
    return {row["user_id"] for row in rows
            if row.get("erased_at", "") > since or (behavioural and not may_personalize(user_from_row(row)))}


# --- what ingest writes: the purchase summary, in the same transaction as the events ---

# The user's row allows an event unless the user was erased after it (events stamped before an
# erasure are refused); ``erased_at`` uses the events' fixed-width stamps, so strings compare as times.
NOT_ERASED_SINCE = "attribute_not_exists(erased_at) OR erased_at <= :oldest"
SUMMARY_FIELDS = ("purchase_count", "units", "spend", "first_purchase_at", "last_purchase_at")


@dataclass
class SummaryState:
    """A user's purchase summary as ingest last read it, with its version and last erasure."""

    summary: PurchaseSummary
    version: int | None  # None: the user has no summary yet
    erased_at: str | None = None  # the user's last erasure; older events are refused

    def split_erased(self, pending: list[tuple[Event, Any]]) -> tuple[list[tuple[Event, Any]], list[Event]]:
        if not self.erased_at:
            return pending, []
        kept = [(event, item) for event, item in pending if event.ts >= self.erased_at]
        return kept, [event for event, _ in pending if event.ts < self.erased_at]


def not_erased_since(users_table: str, user_id: str, oldest: str) -> dict[str, Any]:
    """A transaction action: the user was not erased after `oldest` (the chunk's oldest event)."""
    return {
        "ConditionCheck": {
            "TableName": users_table,
            "Key": dynamo.serialize({"user_id": user_id}),
            "ConditionExpression": NOT_ERASED_SINCE,
            "ExpressionAttributeValues": dynamo.serialize({":oldest": oldest}),
        }
    }


def summary_update(
    users_table: str, user_id: str, expected_version: int | None, state: SummaryState, oldest: str
) -> dict[str, Any]:
    """A transaction action: the new summary, if the version is the one read and no erasure came after `oldest`."""
    values = {
        ":version": state.version,
        ":oldest": oldest,
        **{f":{name}": getattr(state.summary, name) for name in SUMMARY_FIELDS},
    }
    if expected_version is None:
        condition = f"attribute_not_exists(summary_version) AND ({NOT_ERASED_SINCE})"
    else:
        condition = f"summary_version = :expected AND ({NOT_ERASED_SINCE})"
        values[":expected"] = expected_version
    assignments = ", ".join(f"{name} = :{name}" for name in SUMMARY_FIELDS)
    return {
        "Update": {
            "TableName": users_table,
            "Key": dynamo.serialize({"user_id": user_id}),
            "UpdateExpression": f"SET {assignments}, summary_version = :version",
            "ConditionExpression": condition,
            "ExpressionAttributeValues": dynamo.serialize(values),
        }
    }


def read_summaries(users_table: str, user_ids: list[str]) -> dict[str, SummaryState]:
    """The summary states of these users, strongly consistent (those with a summary or an erasure)."""
    if not user_ids:
        return {}
    rows = dynamo.batch_get(
        users_table,
        [{"user_id": user} for user in user_ids],
        consistent=True,
        projection=", ".join(("user_id", "summary_version", "erased_at", *SUMMARY_FIELDS)),
    )
    return {
        row["user_id"]: SummaryState(
            PurchaseSummary.model_validate(row), row.get("summary_version"), row.get("erased_at")
        )
        for row in rows
        if "summary_version" in row or "erased_at" in row
    }
