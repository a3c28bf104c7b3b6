"""One nightly run reads each table once: training and the segments it materializes share the read."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from devstack.gateway import LambdaContext, load_handler
from devstack.template import PROJECT_ROOT, Route, resources
from shared.config import get_settings
from shared.segments.service import materialize_segments
from shared.storage.blobs import S3Blobs
from shared.storage.models import ModelStore
from shared.storage.segments import SegmentStore
from tests.conftest import MODEL_BUCKET, TEMPLATE
from tests.training_data import A_MODEL_SERVES, seed_demo_shop


def train_handler() -> Any:
    train = resources(TEMPLATE, "AWS::Serverless::Function")["TrainFunction"]
    return load_handler(Route("", "", "TrainFunction", PROJECT_ROOT / train["CodeUri"], train["Handler"], None))


def record_scans(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from botocore.client import BaseClient

    scans: list[dict[str, Any]] = []
    original = BaseClient._make_api_call

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "Scan":
            scans.append(params)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    return scans


def record_runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[tuple[str, str, str]]]:
    runs: dict[str, set[tuple[str, str, str]]] = {}
    original = SegmentStore.write_run

    def write_run(store: SegmentStore, run: str, at: str, members: Any) -> dict[str, Any]:
        runs[run] = {(group.segment_id, user_id, reason) for group in members
                     for user_id, reason in zip(group.user_ids, group.reasons)}
        return original(store, run, at, iter([]))

    monkeypatch.setattr(SegmentStore, "write_run", write_run)
    return runs


def passes(scans: list[dict[str, Any]]) -> dict[str, float]:
    """Full passes per table: a pass starts each of its segments once, however many pages follow."""
    found: Counter[str] = Counter()
    for scan in scans:
        if "ExclusiveStartKey" not in scan:
            found[scan["TableName"]] += 1 / scan.get("TotalSegments", 1)
    return dict(found)


@pytest.fixture
def seeded(api, moto_tables) -> dict[str, str]:
    seed_demo_shop(api, moto_tables["EventsTable"])
    return moto_tables


def test_a_run_scans_users_events_and_items_once_and_writes_the_members_separate_reads_would(seeded, monkeypatch):
    handler = train_handler()
    runs = record_runs(monkeypatch)
    scans = record_scans(monkeypatch)

    manifest = handler({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "accepted", manifest["reason"]
    assert manifest["counts"]["excluded_users"] >= 1  # the objector, and the shop's own
    assert passes(scans) == {seeded["UsersTable"]: 1, seeded["EventsTable"]: 1, seeded["ItemsTable"]: 1}
    [(_, nightly)] = runs.items()
    assert nightly
    # What materializing on its own, reading the tables itself, writes for the same moment.
    models = ModelStore(S3Blobs(MODEL_BUCKET))
    statistics = models.ensure_statistics(models.active().version)
    materialize_segments(get_settings(), SegmentStore(seeded["SegmentsTable"]), statistics,
                         datetime.fromisoformat(manifest["started_at"]), run="separate")
    assert runs["separate"] == nightly


def test_a_window_too_large_to_train_on_still_materializes_from_the_same_read(seeded, monkeypatch):
    handler = train_handler()
    runs = record_runs(monkeypatch)
    scans = record_scans(monkeypatch)

    manifest = handler({"config": {"max_interactions": 100}}, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "failed" and "more than 100 interactions" in manifest["reason"]
    assert passes(scans) == {seeded["UsersTable"]: 1, seeded["EventsTable"]: 1, seeded["ItemsTable"]: 1}
    [(_, nightly)] = runs.items()
    materialize_segments(get_settings(), SegmentStore(seeded["SegmentsTable"]), {},
                         datetime.fromisoformat(manifest["started_at"]), run="separate")
    assert runs["separate"] == nightly and nightly
