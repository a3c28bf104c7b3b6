"""Each night's events export on AWS: incremental on top of the last nights' chain, or full."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from shared.storage.exports import FULL, INCREMENTAL, DamagedExport, plan_events_export

BUCKET = "plan-exports"
NOW = datetime(2026, 12, 8, 3, 0, tzinfo=timezone.utc)


@pytest.fixture
def bucket(moto_tables):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


def took(night: str, kind: str, hours_ago: float, period_hours: float = 24, table: str = "events") -> str:
    """An export the pipeline took, as its manifest-summary.json lies in the bucket."""
    end = NOW - timedelta(hours=hours_ago)
    times = ({"exportTime": end.isoformat()} if kind == FULL else
             {"exportFromTime": (end - timedelta(hours=period_hours)).isoformat(), "exportToTime": end.isoformat()})
    key = f"exports/{night}/{table}/AWSDynamoDB/{night}-id/manifest-summary.json"
    summary = {"exportType": kind, **times, "manifestFilesS3Key": key.replace("summary", "files")}
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps(summary).encode())
    return key


def test_the_first_night_takes_a_full_export(bucket):
    assert plan_events_export(bucket, NOW, retention_days=7) == {"events": {"type": FULL}, "chain": []}


def test_later_nights_add_incremental_exports_to_the_chain_of_the_last_full_one(bucket):
    took("old", FULL, hours_ago=24 * 5)  # an older chain's start: not tonight's
    full = took("n1", FULL, hours_ago=72)
    second, third = took("n2", INCREMENTAL, hours_ago=48), took("n3", INCREMENTAL, hours_ago=24)
    took("n3", FULL, hours_ago=24, table="users")  # other tables' exports are not the events chain

    plan = plan_events_export(bucket, NOW, retention_days=7)

    assert plan["chain"] == [full, second, third]
    assert plan["events"] == {"type": INCREMENTAL, "from": (NOW - timedelta(hours=24)).isoformat(),
                              "to": NOW.isoformat()}


@pytest.mark.parametrize("why, exports", [
    ("the full export would expire within a day", [("n1", FULL, 24 * 6 + 1)]),
    ("a night was missed: over 24 hours since the last export", [("n1", FULL, 49), ("n2", INCREMENTAL, 25)]),
    ("too soon: an incremental period is at least 15 minutes", [("n1", FULL, 0.1)]),
])
def test_a_full_export_starts_a_new_chain_when_an_incremental_one_cannot_follow(bucket, why, exports):
    for night, kind, hours_ago in exports:
        took(night, kind, hours_ago)
    assert plan_events_export(bucket, NOW, retention_days=7)["events"] == {"type": FULL}, why


@pytest.mark.parametrize("written", [b'{"exportType": "FULL_EXPORT", "exportTi', b"[]",
                                     b'{"exportType": "FULL_EXPORT", "exportTime": "2026-12-07T03:00:00", '
                                     b'"manifestFilesS3Key": "m"}'])
def test_a_summary_in_the_bucket_that_does_not_read_fails_the_plan_naming_it(bucket, written):
    """Cut short, or put there by hand: the night says which file and what to do, not a KeyError."""
    took("n1", FULL, hours_ago=24)
    key = "exports/n2/events/AWSDynamoDB/n2-id/manifest-summary.json"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=written)

    with pytest.raises(DamagedExport, match=re.escape(f"s3://{BUCKET}/{key} is not a whole manifest summary") + ".*"
                       + re.escape("take a new full export")):
        plan_events_export(bucket, NOW, retention_days=7)
