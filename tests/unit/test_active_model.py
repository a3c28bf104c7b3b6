"""Serving's model in memory: new versions picked up without a redeploy, bad ones never."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from shared.errors import StorageUnavailable
from shared.serving.active_model import ActiveModel
from shared.serving.model import ServingModel
from shared.storage.blobs import LocalBlobs
from shared.storage.models import ActivePointer, Manifest, ModelStore
from shared.training.artifact import ModelArtifact, sha256
from shared.training.config import TrainingConfig


def publish(store: ModelStore, version: str, activate: bool = True) -> None:
    rng = np.random.default_rng(len(version))
    artifact = ModelArtifact(["a", "b", "c"], rng.random((3, 4), dtype=np.float32), ["a"],
                             parameters=TrainingConfig().model_dump(mode="json"))
    manifest = Manifest(version=version, status="accepted", started_at=datetime.now(timezone.utc))
    store.publish(manifest, artifact)
    store.save(manifest)
    if activate:
        store.activate(version)


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(LocalBlobs(tmp_path))


def test_a_new_active_version_is_served_at_the_next_check(store):
    publish(store, "v1")
    serving = ActiveModel(store, 0, ServingModel)
    assert serving.get().version == "v1"

    publish(store, "v2")

    assert serving.get().version == "v2"


def test_the_pointer_is_read_at_most_every_refresh_interval(store):
    publish(store, "v1")
    serving = ActiveModel(store, 3600, ServingModel)
    serving.get()
    publish(store, "v2")
    assert serving.get().version == "v1"


def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(store, caplog):
    publish(store, "v1")
    serving = ActiveModel(store, 0, ServingModel)
    serving.get()
    publish(store, "v2", activate=False)
    store.blobs.put("models/v2/model.npz", b"truncated")
    pointer = ActivePointer(version="v2", sha256="0" * 64, activated_at=datetime.now(timezone.utc))
    store.blobs.put("active.json", pointer.model_dump_json().encode())

    assert serving.get().version == "v1"
    assert serving.get().version == "v1"  # and it does not fetch the broken one on every request
    assert "model load failed" in caplog.text


def test_an_unreachable_bucket_keeps_the_loaded_model(store, monkeypatch):
    publish(store, "v1")
    serving = ActiveModel(store, 0, ServingModel)
    serving.get()

    def down(*_):
        raise StorageUnavailable("read from the model bucket: S3 is unreachable")

    monkeypatch.setattr(store.blobs, "get", down)
    assert serving.get().version == "v1"


def test_no_active_version_means_no_model_not_an_error(store):
    assert ActiveModel(store, 0, ServingModel).get() is None


def test_with_no_loadable_model_cold_starts_get_the_cached_popular_list_clearly_marked(store, monkeypatch):
    from shared.catalog import Item
    from shared.serving.active_model import CachedPopular
    from shared.serving.recommender import Recommender, Sources

    publish(store, "v1")
    store.blobs.put("models/v1/model.npz", b"damaged after activation")

    class Catalog:
        def details(self, ids):
            return {i: Item(item_id=i, title=i.upper(), category="c") for i in ids}

        def newest(self, category, limit):
            return []

    recommender = Recommender(Sources(model=ActiveModel(store, 0, ServingModel).get, catalog=Catalog(),
                                      history=lambda _: [], profile=lambda _: None,
                                      cached_popular=CachedPopular(store, 0).get))
    answer = recommender.recommend("someone", 5)

    assert (answer.personalized, answer.strategy, answer.model_version) == (False, "cold_start:popular:cached", "v1")
    assert [i.item_id for i in answer.items] == ["a"]

    def down(*_):
        raise StorageUnavailable("read from the model bucket: S3 is unreachable")

    monkeypatch.setattr(store.blobs, "get", down)  # and then the bucket stops answering: the list held serves
    assert recommender.recommend("someone", 5).strategy == "cold_start:popular:cached"
    assert [i.item_id for i in recommender.popular(5, None, None).items] == ["a"]


def test_a_version_published_with_customer_rows_is_served_without_keeping_them(store):
    buffer = io.BytesIO()  # the artifact as versions before customer rows were dropped wrote it
    meta = {"popular_by_country": {}, "customer_statistics": {}, "parameters": TrainingConfig().model_dump(mode="json")}
    np.savez(buffer, item_ids=np.array(["a", "b", "c"]), user_ids=np.array(["customer-1"]),
             item_factors=np.eye(3, 4, dtype=np.float32), user_factors=np.ones((1, 4), np.float32),
             popular_items=np.array(["a"]), meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    store.blobs.put("models/v0/model.npz", buffer.getvalue())
    manifest = Manifest(version="v0", status="accepted", started_at=datetime.now(timezone.utc),
                        artifact={"key": "models/v0/model.npz", "sha256": sha256(buffer.getvalue()),
                                  "bytes": len(buffer.getvalue())})
    store.save(manifest)
    store.activate("v0")

    served = ActiveModel(store, 0, ServingModel).get()

    assert served.version == "v0"
    assert served.recommend(csr_matrix(np.array([[1.0, 0, 0]], np.float32)), 2, set())
    assert not hasattr(served.artifact, "user_ids") and not hasattr(served.artifact, "user_factors")


def test_a_function_that_starts_while_the_bucket_does_not_answer_says_so_then_serves_once_it_does(store, monkeypatch):
    from shared import refresh

    clock = [1000.0]
    monkeypatch.setattr(refresh, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    publish(store, "v1")
    serving = ActiveModel(store, 3600, ServingModel)  # once a model is held, the pointer is read hourly
    real_get, reads = store.blobs.get, []

    def down(*_):
        reads.append(1)
        raise StorageUnavailable("read from the model bucket: S3 is throttling or unavailable")

    monkeypatch.setattr(store.blobs, "get", down)
    with pytest.raises(StorageUnavailable) as fault:
        serving.get()
    assert fault.value.retry_after_seconds == 2 == refresh.FAULT_RETRY_SECONDS
    clock[0] += refresh.FAULT_RETRY_SECONDS / 2
    with pytest.raises(StorageUnavailable):  # told at once within the retry interval, not read again
        serving.get()
    assert len(reads) == 1

    monkeypatch.setattr(store.blobs, "get", real_get)
    clock[0] += refresh.FAULT_RETRY_SECONDS  # not the hour
    assert serving.get().version == "v1"
