"""Old model versions are deleted after each run, by one rule, in the bucket and in the folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from devstack.template import PROJECT_ROOT, Route
from shared.config import get_settings
from shared.errors import Conflict, StorageUnavailable
from shared.storage.blobs import LocalBlobs, S3Blobs
from shared.storage.models import Manifest, ModelStore
from shared.training.artifact import ModelArtifact
from shared.training.config import TrainingConfig
from tests.conftest import MODEL_BUCKET

NOW = datetime.now(timezone.utc)


@pytest.fixture(params=["folder", "bucket"])
def store(request, tmp_path) -> Iterator[ModelStore]:
    if request.param == "folder":
        yield ModelStore(LocalBlobs(tmp_path))
        return
    from moto import mock_aws

    with mock_aws():
        blobs = S3Blobs("retention-test")
        blobs.client.create_bucket(Bucket="retention-test")
        yield ModelStore(blobs)


def add_version(store: ModelStore, version: str, age: timedelta, status: str = "accepted",
                now: datetime = NOW) -> None:
    manifest = Manifest(version=version, status=status, started_at=now - age)
    if status in ("accepted", "rejected"):
        artifact = ModelArtifact(["a", "b"], np.ones((2, 2), np.float32), ["a"],
                                 parameters=TrainingConfig().model_dump(mode="json"))
        store.publish(manifest, artifact)
    store.save(manifest)


def listed(store: ModelStore) -> list[str]:
    return [m.version for m in store.manifests()]


def test_a_version_goes_when_it_is_outside_the_newest_kept_and_old_never_the_active_one(store):
    for version, days in [("v1", 400), ("v2", 300), ("v3", 200), ("v4", 30), ("v5", 1), ("v6", 0)]:
        add_version(store, version, timedelta(days=days))
    store.activate("v1")  # rolled back to the oldest

    pruned = store.prune(keep=2, max_age_days=90, now=NOW)

    assert pruned == ["v2", "v3"]  # oldest first
    assert listed(store) == ["v6", "v5", "v4", "v1"]  # v4 is outside the newest two, but young
    assert store.blobs.keys("models/v2/") == store.blobs.keys("models/v3/") == []
    assert store.load(store.manifest("v1")).item_ids == ["a", "b"]


def test_the_newest_kept_stay_however_old_they_are(store):
    for n in range(5):
        add_version(store, f"v{n}", timedelta(days=500 - n))

    assert store.prune(keep=3, max_age_days=90, now=NOW) == ["v0", "v1"]
    assert listed(store) == ["v4", "v3", "v2"]


def test_runs_that_left_no_model_do_not_push_models_out_of_the_newest_kept(store):
    for version, days, status in [("model-1", 300, "accepted"), ("model-2", 200, "rejected"),
                                  ("failed-1", 150, "failed"), ("failed-2", 120, "insufficient_data"),
                                  ("failed-3", 100, "failed"), ("failed-4", 1, "failed")]:
        add_version(store, version, timedelta(days=days), status)

    assert store.prune(keep=2, max_age_days=90, now=NOW) == ["failed-1", "failed-2", "failed-3"]
    assert listed(store) == ["failed-4", "model-2", "model-1"]


def test_a_run_still_in_progress_is_never_pruned_but_an_abandoned_one_is(store):
    # The real clock: whether a run is abandoned is judged against it, however long the suite ran.
    now = datetime.now(timezone.utc)
    add_version(store, "abandoned", timedelta(days=2), status="training", now=now)
    add_version(store, "running", timedelta(minutes=5), status="training", now=now)
    add_version(store, "finished", timedelta(minutes=1), now=now)

    assert store.prune(keep=1, max_age_days=0, now=now) == ["abandoned"]
    assert listed(store) == ["finished", "running"]


def test_a_run_started_in_the_future_is_abandoned_not_in_progress_forever(store):
    """By hand: a run 'training' since 9999 would hold off every start, and never be pruned as old."""
    now = datetime.now(timezone.utc)
    add_version(store, "ahead", -timedelta(days=365), status="training", now=now)
    add_version(store, "a-clock-ahead", -timedelta(minutes=2), status="training", now=now)  # another instance's clock

    states = {m.version: (m.status, m.reason) for m in store.manifests()}
    assert states["ahead"] == ("abandoned", "its start time is in the future: not a run's")
    assert states["a-clock-ahead"][0] == "training" and store.in_progress().version == "a-clock-ahead"


def test_a_popular_json_that_does_not_read_is_as_none(store):
    for damaged in (b"", b"{", b"[1]", b'{"version": "x"}', b"[" * 5000 + b"]" * 5000,
                    b'{"version": "x", "items": 5, "by_country": []}'):
        store.blobs.put("popular.json", damaged)
        assert store.cached_popular() is None, damaged
    store.blobs.put("popular.json", b'{"version": "v1", "items": ["a"], "by_country": {"DE": ["a"]}}')
    assert store.cached_popular() == {"version": "v1", "items": ["a"], "by_country": {"DE": ["a"]},
                                      "by_category": {}, "by_interest": {}}


def test_a_prune_cut_short_leaves_a_listed_version_that_cannot_be_activated_and_goes_next_time(store, monkeypatch):
    add_version(store, "old", timedelta(days=100))
    add_version(store, "new", timedelta(days=0))
    delete = store.blobs.delete

    def manifest_unreachable(key: str) -> None:
        if key.endswith("manifest.json"):
            raise StorageUnavailable("delete from the model bucket: S3 is unreachable")
        delete(key)

    monkeypatch.setattr(store.blobs, "delete", manifest_unreachable)
    with pytest.raises(StorageUnavailable):
        store.prune(keep=1, max_age_days=90, now=NOW)
    assert listed(store) == ["new", "old"]
    with pytest.raises(Conflict):
        store.activate("old", force=True)

    monkeypatch.setattr(store.blobs, "delete", delete)
    assert store.prune(keep=1, max_age_days=90, now=NOW) == ["old"]
    assert listed(store) == ["new"]


@pytest.fixture
def old_versions(moto_tables, monkeypatch) -> ModelStore:
    """Three models from earlier runs, 100 to 300 days old; the newest two models are kept."""
    monkeypatch.setenv("MODEL_VERSIONS_KEPT", "2")
    monkeypatch.setenv("MODEL_MAX_AGE_DAYS", "90")
    get_settings.cache_clear()
    store = ModelStore(S3Blobs(MODEL_BUCKET))
    for version, days in [("v-old-1", 300), ("v-old-2", 200), ("v-old-3", 100)]:
        add_version(store, version, timedelta(days=days))
    return store


def test_the_train_function_prunes_after_each_run(old_versions):
    from devstack.gateway import LambdaContext, load_handler
    from devstack.template import load_template

    train = load_template()["Resources"]["TrainFunction"]["Properties"]
    handler = load_handler(Route("", "", "TrainFunction", PROJECT_ROOT / train["CodeUri"], train["Handler"], None))
    schedule = json.loads((PROJECT_ROOT / "events" / "train" / "scheduled.json").read_text())

    manifest = handler(schedule, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "insufficient_data"  # the tables are empty: no model to count
    assert listed(old_versions) == [manifest["version"], "v-old-3", "v-old-2"]


def test_training_on_the_local_stack_prunes_after_each_run(old_versions, api):
    manifest = api.train_and_wait()

    assert manifest["status"] == "insufficient_data"  # the tables are empty: no model to count
    assert listed(old_versions) == [manifest["version"], "v-old-3", "v-old-2"]
