"""The model and campaign buckets' files that the admin and campaign routes list: one that does not read (a
copy cut short, a file put there by hand) is left out of its listing and logged, and asked for
by itself it is a 409 naming it; before, each of these answered 500, the listings too."""

from __future__ import annotations

import pytest

from shared.storage import dynamo
from tests.conftest import CAMPAIGN_BUCKET, MODEL_BUCKET

DAMAGED = b'{"version": "cut sh'


def stored(key: str, body: bytes = DAMAGED, bucket: str = MODEL_BUCKET) -> None:
    dynamo.boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def test_a_model_manifest_or_pointer_that_does_not_read_breaks_no_listing(api, caplog):
    stored("models/v20260101-000000-bad1/manifest.json")
    stored("active.json")

    status, body = api.json("GET", "/models")
    assert status == 200 and body["versions"] == [], body
    status, body = api.json("POST", "/models/v20260101-000000-bad1/activate")
    assert status == 409 and body["error"]["fields"][0]["field"] == "version", body
    assert "a model manifest does not read" in caplog.text and "the active model pointer does not read" in caplog.text


def test_a_campaign_status_that_does_not_read_breaks_no_listing(api):
    stored("campaigns/c-20260101T000000-0000abcd/status.json", bucket=CAMPAIGN_BUCKET)

    status, body = api.json("GET", "/campaigns")
    assert status == 200 and body["campaigns"] == [], body
    status, body = api.json("GET", "/campaigns/c-20260101T000000-0000abcd")
    assert status == 409 and body["error"]["fields"][0]["field"] == "campaign_id", body


@pytest.mark.parametrize("body", [DAMAGED, b"[]"])
def test_an_experiment_file_that_does_not_read_breaks_no_listing_or_report(api, body):
    stored("experiments/exp-20260101-abcdef/experiment.json", body)
    stored("attribution/report.json", body)

    status, listed = api.json("GET", "/experiments")
    assert status == 200 and listed["experiments"] == [], listed
    status, one = api.json("GET", "/experiments/exp-20260101-abcdef")
    assert status == 409 and one["error"]["fields"][0]["field"] == "experiment_id", one
    status, report = api.json("GET", "/attribution")
    assert status == 200 and report["days"] == [], report
