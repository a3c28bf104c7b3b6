"""The model and campaign buckets' files that the admin and campaign routes list: one that does not read (a
copy cut short, a file put there by hand) is left out of its listing and logged, and asked for
by itself it is a 409 naming it; before, each of these answered 500, the listings too."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from shared.storage import dynamo
from tests.conftest import CAMPAIGN_BUCKET, MODEL_BUCKET, wait_for_background_work

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


def manifest(version: str, started_at: str, status: str = "accepted") -> bytes:
    return json.dumps({"version": version, "status": status, "started_at": started_at}).encode()


@pytest.mark.parametrize("status", ["accepted", "training"])
def test_a_manifest_whose_start_has_no_zone_breaks_no_listing_or_start(api, status):
    stored("models/v20260101-000000-aaa1/manifest.json", manifest("v20260101-000000-aaa1", "2026-01-01T00:00:00Z"))
    stored("models/v20260102-000000-aaa2/manifest.json",
           manifest("v20260102-000000-aaa2", "2026-01-02T00:00:00", status))

    status_code, body = api.json("GET", "/models")

    assert status_code == 200, body
    assert [listed["version"] for listed in body["versions"]] == ["v20260101-000000-aaa1"]
    assert api.json("POST", "/models/train", {})[0] == 202
    wait_for_background_work(api)


def test_a_metric_that_is_not_a_number_is_answered_as_null_in_json(api):
    stored("models/v20260101-000000-aaa1/manifest.json",
           b'{"version": "v20260101-000000-aaa1", "status": "rejected", "started_at": "2026-01-01T00:00:00Z",'
           b' "metrics": {"model": {"ndcg": NaN, "recall": 0.5}}}')

    response = api.call("GET", "/models")

    assert response.status == 200
    listed = json.loads(response.body, parse_constant=lambda text: pytest.fail(f"not JSON: {text}"))
    assert listed["versions"][0]["metrics"]["model"] == {"ndcg": None, "recall": 0.5}


class StepFunctionsWithOutput:
    def __init__(self, output: str) -> None:
        self.output = output

    def list_executions(self, **_):
        return {"executions": [{"executionArn": "arn:aws:states:us-east-1:0:execution:m:train-x"}]}

    def describe_execution(self, **_):
        return {"executionArn": "arn:aws:states:us-east-1:0:execution:m:train-x", "name": "train-x",
                "status": "SUCCEEDED", "startDate": datetime(2026, 1, 1, tzinfo=timezone.utc),
                "stopDate": datetime(2026, 1, 1, 1, tzinfo=timezone.utc), "output": self.output}

    def get_execution_history(self, **_):
        return {"events": []}


@pytest.mark.parametrize("output", ['{"fit": {"version": 5}}', '{"fit": {"version": ["v1"]}}'])
def test_a_pipeline_run_whose_output_names_no_version_as_text_breaks_no_listing(api, monkeypatch, output):
    from shared.storage import pipeline as pipeline_store

    monkeypatch.setattr(pipeline_store, "client", lambda: StepFunctionsWithOutput(output))
    latest = pipeline_store.TrainingPipeline("arn:aws:states:us-east-1:0:stateMachine:m").latest()

    assert latest is not None and latest.version is None and latest.status == "SUCCEEDED"
