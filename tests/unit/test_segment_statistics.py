"""The customer statistics segmentation reads: statistics.json beside each model version, so the
Segments function never loads the model (docs/segments.md)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from shared.segments.statistics import ActiveStatistics
from shared.storage.blobs import LocalBlobs
from shared.storage.models import ActivePointer, Manifest, ModelStore
from shared.training.artifact import ModelArtifact
from shared.training.config import TrainingConfig


def publish(store: ModelStore, version: str, statistics: dict, activate: bool = True) -> None:
    artifact = ModelArtifact(["a", "b"], np.ones((2, 3), np.float32), ["a"], customer_statistics=statistics,
                             parameters=TrainingConfig().model_dump(mode="json"))
    manifest = Manifest(version=version, status="accepted", started_at=datetime.now(timezone.utc))
    store.publish(manifest, artifact)
    store.save(manifest)
    if activate:
        store.activate(version)


def published_before_statistics_json(store: ModelStore, version: str, statistics: dict) -> None:
    """Active, as a version published and activated by the code before this file existed."""
    publish(store, version, statistics, activate=False)
    store.blobs.delete(f"models/{version}/statistics.json")
    manifest = store.manifest(version)
    pointer = ActivePointer(version=version, sha256=manifest.artifact.sha256, activated_at=datetime.now(timezone.utc))
    store.blobs.put("active.json", pointer.model_dump_json().encode())


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(LocalBlobs(tmp_path))


def test_training_publishes_the_statistics_beside_the_model(store):
    publish(store, "v1", {"customers": 3, "recency_days": [1, 2, 3, 4]}, activate=False)

    assert json.loads(store.blobs.get("models/v1/statistics.json")) == {
        "version": "v1", "customer_statistics": {"customers": 3, "recency_days": [1, 2, 3, 4]}}
    assert store.statistics("v1") == {"customers": 3, "recency_days": [1, 2, 3, 4]}


def test_the_active_versions_statistics_are_read_and_follow_the_pointer(store):
    publish(store, "v1", {"customers": 1})
    statistics = ActiveStatistics(store, 0)
    assert (statistics.get().version, statistics.get().values) == ("v1", {"customers": 1})

    publish(store, "v2", {"customers": 2})

    assert (statistics.get().version, statistics.get().values) == ("v2", {"customers": 2})


def test_the_pointer_is_read_at_most_every_refresh_interval(store):
    publish(store, "v1", {"customers": 1})
    statistics = ActiveStatistics(store, 3600)
    statistics.get()
    publish(store, "v2", {"customers": 2})
    assert statistics.get().version == "v1"


def test_without_statistics_json_there_are_none_until_the_version_is_activated_again(store, caplog):
    published_before_statistics_json(store, "v0", {"customers": 5})
    statistics = ActiveStatistics(store, 0)

    assert statistics.get() is None  # segment_customer then leaves RFM and value tags out
    assert "no statistics.json" in caplog.text

    store.activate("v0")

    assert (statistics.get().version, statistics.get().values) == ("v0", {"customers": 5})


def test_the_nightly_run_writes_missing_statistics_from_the_model(store):
    published_before_statistics_json(store, "v0", {"customers": 5})

    assert store.ensure_statistics("v0") == {"customers": 5}
    assert ActiveStatistics(store, 0).get().values == {"customers": 5}


def test_damaged_statistics_keep_those_in_memory_and_the_nightly_run_mends_them(store, caplog):
    publish(store, "v1", {"customers": 1})
    statistics = ActiveStatistics(store, 0)
    statistics.get()
    publish(store, "v2", {"customers": 2})
    store.blobs.put("models/v2/statistics.json", b"{not json")

    assert statistics.get().version == "v1"
    assert "cannot read the active model's customer statistics" in caplog.text
    assert store.ensure_statistics("v2") == {"customers": 2}
    assert statistics.get().version == "v2"


def test_no_active_version_means_no_statistics_not_an_error(store):
    assert ActiveStatistics(store, 0).get() is None
