"""A new shop is served from its first hour: the hourly check trains while no version is active."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from devstack.gateway import LambdaContext, load_handler
from devstack.template import PROJECT_ROOT, Route, load_template
from shared.config import get_settings
from shared.events import Event
from shared.storage.events import EventStore
from shared.storage.blobs import S3Blobs
from shared.storage.models import ModelStore
from tests.conftest import MODEL_BUCKET

FIRST_MODEL = json.loads((PROJECT_ROOT / "events" / "train" / "first_model.json").read_text())


def train_handler():
    train = load_template()["Resources"]["TrainFunction"]["Properties"]
    return load_handler(Route("", "", "TrainFunction", PROJECT_ROOT / train["CodeUri"], train["Handler"], None))


def store_purchases(count: int) -> None:
    settings = get_settings()
    now = datetime.now(timezone.utc)
    # INGEST_CONCURRENCY, which the moto fixture sets to 1: moto is not safe for concurrent transactions.
    EventStore(settings.events_table, settings.users_table, settings.ingest_concurrency).write([Event.model_validate({
        "event_id": f"p-{n}", "user_id": f"u-{n % 7}", "item_id": f"sku-{n % 5}", "event_type": "purchase",
        "timestamp": (now - timedelta(hours=n + 1)).isoformat(), "price": 3.5, "currency": "EUR",
        "quantity": 1, "order_id": f"o-{n}", "channel": "web"}, context={"now": now, "max_future_seconds": 300})
        for n in range(count)])


def test_without_purchases_the_check_leaves_no_version_behind(moto_tables):
    manifest = train_handler()(FIRST_MODEL, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "insufficient_data"
    assert ModelStore(S3Blobs(MODEL_BUCKET)).manifests() == []  # an hourly check does not pile up runs


def test_a_shop_with_a_few_purchases_gets_a_popular_version_active_then_the_check_stops(moto_tables):
    store_purchases(12)  # far too few to evaluate a model
    handler = train_handler()

    manifest = handler(FIRST_MODEL, LambdaContext(function_name="TrainFunction"))

    models = ModelStore(S3Blobs(MODEL_BUCKET))
    assert manifest["status"] == "insufficient_data" and manifest["strategy"] == "popular"
    assert models.active().version == manifest["version"]
    popular = models.load(models.manifest(manifest["version"])).popular_items
    assert popular[:2] == ["sku-0", "sku-1"]  # 3 buyers each, then the others with 2
    again = handler(FIRST_MODEL, LambdaContext(function_name="TrainFunction"))
    assert "skipped" in again and [m.version for m in models.manifests()] == [manifest["version"]]
