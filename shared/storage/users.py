"""User storage: profile, consent and summary live in one item per user."""

from __future__ import annotations

from datetime import datetime, timezone

from shared.errors import NotFound
from shared.events import format_timestamp
from shared.storage import dynamo
from shared.users import User, UserProfileIn, may_personalize


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
        # Strongly consistent: the consent in this row decides what the caller may be shown.
        row = dynamo.get_item(self.users_table, {"user_id": user_id}, "read user", consistent=True)
        return user_from_row(row) if row is not None else None


def user_from_row(row: dict) -> User:
    return User.model_validate({**row, "summary": row})


def withheld(users_table: str, user_ids: list[str], since: str, behavioural: bool) -> set[str]:
    """Of `user_ids`, those a list computed at `since` must no longer show: erased after it, or,
    for a list built from behaviour, objecting now. Read strongly consistent, as consent decides."""
    rows = dynamo.batch_get(users_table, [{"user_id": user} for user in dict.fromkeys(user_ids)],
                            consistent=True, projection="user_id, consent, erased_at")
    return {row["user_id"] for row in rows
            if row.get("erased_at", "") > since or (behavioural and not may_personalize(user_from_row(row)))}
