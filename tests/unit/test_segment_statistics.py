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


@pytest.mark.parametrize("damaged", [b"{not json", b"[" * 5000 + b"]" * 5000], ids=["cut short", "nested deep"])
def test_damaged_statistics_keep_those_in_memory_and_the_nightly_run_mends_them(store, caplog, damaged):
    publish(store, "v1", {"customers": 1})
    statistics = ActiveStatistics(store, 0)
    statistics.get()
    publish(store, "v2", {"customers": 2})
    store.blobs.put("models/v2/statistics.json", damaged)

    assert statistics.get().version == "v1"
    assert "cannot read the active model's customer statistics" in caplog.text
    assert store.ensure_statistics("v2") == {"customers": 2}
    assert statistics.get().version == "v2"


def test_no_active_version_means_no_statistics_not_an_error(store):
    assert ActiveStatistics(store, 0).get() is None


WHOLE = {"customers": 10, "recency_days_quintiles": [10.0, 30.0, 60.0, 120.0], "frequency_quintiles": [1, 1, 2, 3],
         "spend_quintiles": {"EUR": [10.0, 20.0, 40.0, 80.0]},
         "spend_percentiles": {"EUR": {"50": 30.0, "80": 70.0, "95": 150.0}},
         "clv": {"horizon_days": 365, "value_percentiles": {"EUR": {"40": 5.0, "70": 20.0, "90": 60.0}}}}


@pytest.mark.parametrize("damage, named", [
    ({"spend_percentiles": {"EUR": {"50": 30.0, "95": 150.0}}}, "spend_percentiles.EUR.80"),
    ({"recency_days_quintiles": [10.0, 30.0, 60.0]}, "recency_days_quintiles"),
    ({"frequency_quintiles": None}, "frequency_quintiles"),
    ({"spend_quintiles": {"EUR": [10.0, None, 40.0, 80.0]}}, "spend_quintiles.EUR[1]"),
    ({"clv": {"value_percentiles": {"EUR": {"40": "5", "70": 20.0, "90": 60.0}}}}, "clv.value_percentiles.EUR.40"),
    ({"spend_percentiles": ["EUR"]}, "spend_percentiles"),
    # By hand: every repeat buyer's CLV would take a logarithm of a negative number.
    ({"clv": {**WHOLE["clv"], "horizon_days": -400}}, "clv.horizon_days"),
    ({"clv": {**WHOLE["clv"], "horizon_days": 10**9}}, "clv.horizon_days"),
])
def test_statistics_missing_a_threshold_are_refused_where_read_not_in_every_customers_tags(store, caplog, damage, named):
    """Tags index the thresholds without a check: before, one missing key failed GET
    /users/{id}/segments (500) for every customer with spend in that currency, and the whole
    nightly run's segments."""
    from shared.segments.tags import segment_customer
    from shared.users import PurchaseSummary, User

    publish(store, "v1", WHOLE)
    statistics = ActiveStatistics(store, 0)
    statistics.get()
    publish(store, "v2", WHOLE)
    damaged = {**WHOLE, **damage}
    if damage.get("frequency_quintiles", 0) is None:
        del damaged["frequency_quintiles"]
    store.blobs.put("models/v2/statistics.json", json.dumps({"version": "v2", "customer_statistics": damaged}).encode())

    assert statistics.get().version == "v1"  # kept: its tags go on being given
    assert any(named in str(getattr(record, "reason", "")) for record in caplog.records)  # the log names it
    assert store.ensure_statistics("v2") == WHOLE  # the nightly run mends it from the model
    assert statistics.get().values == WHOLE
    buyer = User(user_id="u-1", summary=PurchaseSummary(purchase_count=3, spend={"EUR": 90.0},
                                                        last_purchase_at=datetime.now(timezone.utc).isoformat(),
                                                        first_purchase_at="2026-01-01T00:00:00+00:00"))
    tags = segment_customer(buyer, [], {}, statistics.get().values, datetime.now(timezone.utc), [])[2]
    assert {tag.family for tag in tags} >= {"rfm", "value"}
