"""The nightly run writes each running experiment's results and the attribution report, from
impressions, clicks and purchases the shop's clients sent: on the Scan path read in the same pass
as training, on the export path from the events export after training, in a child process while
the segments read their inputs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from devstack.gateway import LambdaContext
from shared.experiments import service
from shared.experiments.assignment import assign
from shared.experiments.attribution import Served, recommendation_id
from shared.experiments.spec import ExperimentSpec
from shared.config import get_settings
from shared.storage import training_data
from shared.storage.blobs import S3Blobs
from shared.storage.experiments import ExperimentStore
from shared.storage.models import ModelStore
from shared.storage.secrets import configured_recommendation_key
from tests.conftest import MODEL_BUCKET
from tests.training_data import A_MODEL_SERVES, END, store_events
from tests.unit.test_export_training import export_all
from tests.unit.test_training_reads_once import seeded, train_handler  # noqa: F401 - the fixture


@pytest.mark.parametrize("path", ["scan", "export"])
def test_a_nightly_run_writes_results_per_variant_and_credits_purchases(seeded, api, path, tmp_path,  # noqa: F811
                                                                         monkeypatch):
    handler = train_handler()
    first = handler({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))
    models = ModelStore(S3Blobs(MODEL_BUCKET))
    assert models.active() is not None, first["reason"]
    experiments = ExperimentStore(models.blobs)
    spec = ExperimentSpec(name="model vs bestsellers", variants=[
        {"name": "model", "serves": "active", "traffic": 0.5}, {"name": "popular", "serves": "popular", "traffic": 0.5}])
    experiment = service.start(spec, experiments, models, END - timedelta(days=2))
    key = configured_recommendation_key()
    events, by_variant = [], {"model": 0, "popular": 0}
    for n in range(40):
        user = f"shopper-{n}"
        variant = assign(experiment.experiment_id, user, spec.shares(), True)
        by_variant[variant] += 1
        at = END - timedelta(hours=30 - n % 20)
        rid = recommendation_id(Served("recommendations", "als" if variant == "model" else "popular", first["version"],
                                       experiment.experiment_id, variant, int(at.timestamp())), key, f"req-{n}")
        events.append({"event_id": f"imp-{n}", "user_id": user, "event_type": "impression", "recommendation_id": rid,
                       "items": ["sku-a", "sku-b"], "channel": "web", "timestamp": at.isoformat()})
        if n % 2 == 0:
            events.append({"event_id": f"clk-{n}", "user_id": user, "item_id": "sku-a", "event_type": "click",
                           "recommendation_id": rid, "channel": "web", "timestamp": (at + timedelta(minutes=1)).isoformat()})
        if n % 4 == 0:
            events.append({"event_id": f"buy-{n}", "user_id": user, "item_id": "sku-a", "event_type": "purchase",
                           "price": 20, "currency": "EUR", "quantity": 2, "channel": "web",
                           "timestamp": (at + timedelta(hours=1)).isoformat()})
    # A visitor who saw and clicked before signing in, then bought as the customer they linked to:
    # one person, credited and counted in the visitor's variant.
    visitor, customer = "v_linked-shopper", "linked-shopper"
    assert api.json("POST", f"/users/{customer}/visitors", {"visitor_id": visitor})[0] == 200
    variant = assign(experiment.experiment_id, visitor, spec.shares(), True)
    by_variant[variant] += 1
    at = END - timedelta(hours=5)
    rid = recommendation_id(Served("recommendations", "als", first["version"], experiment.experiment_id, variant,
                                   int(at.timestamp())), key, "req-visitor")
    events += [{"event_id": "imp-v", "user_id": visitor, "event_type": "impression", "recommendation_id": rid,
                "items": ["sku-c"], "channel": "web", "timestamp": at.isoformat()},
               {"event_id": "clk-v", "user_id": visitor, "item_id": "sku-c", "event_type": "click",
                "recommendation_id": rid, "channel": "web", "timestamp": at.isoformat()},
               {"event_id": "buy-c", "user_id": customer, "item_id": "sku-c", "event_type": "purchase", "price": 15,
                "currency": "EUR", "channel": "web", "timestamp": (at + timedelta(hours=2)).isoformat()}]
    # A click whose id was made up by a page credits nothing.
    events.append({"event_id": "forged", "user_id": "shopper-1", "item_id": "sku-b", "event_type": "click",
                   "recommendation_id": "r1.eyJmYWtlIjp0cnVlfQ.AAAAAAAAAAA", "channel": "web", "timestamp": END.isoformat()})
    store_events(seeded["EventsTable"], events)
    if path == "export":
        export_all(seeded, tmp_path / "exports")
        monkeypatch.setenv("TRAINING_PATH", "export")
        monkeypatch.setenv("LOCAL_EXPORT_DIR", str(tmp_path / "exports"))
        monkeypatch.setattr(training_data, "OUTCOMES_IN_A_CHILD_FROM_BYTES", 1)
        get_settings.cache_clear()
        handler = train_handler()

    second = handler({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))

    [results] = experiments.results(experiment.experiment_id)[-1:]
    variants = results["variants"]
    assert {name: line["exposed"] for name, line in variants.items()} == by_variant
    assert round(sum(line["conversion"]["value"] * line["exposed"] for line in variants.values())) == 11
    assert "against_control" in variants["popular"] and "against_control" not in variants["model"]
    report = experiments.report()["days"]
    assert sum(line["purchases"] for line in report) == 11  # each purchase followed a click on that item
    assert sum(line["revenue"] for line in report) == 10 * 40.0 + 15.0
    assert sum(line["clicks"] for line in report) == 21  # the forged click is not counted
    assert {line["strategy"] for line in report} == {"als", "popular"}
    assert second["counts"]["interactions"] > first["counts"]["interactions"], "the second run read tonight's events"
