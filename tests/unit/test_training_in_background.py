"""POST /models/train starts a run in the background, on AWS and on the local stack alike."""

from __future__ import annotations

import ast
import json
import sys
import threading
import time

import pytest

from devstack.demo_data import generate_shop
from devstack.gateway import LambdaContext, load_handler
from devstack.template import PROJECT_ROOT, http_routes
from shared.training import job
from tests.conftest import TEMPLATE
from tests.training_data import A_MODEL_SERVES, END, store_events

TRAIN_ROUTE = next(r for r in http_routes(TEMPLATE) if r.route_key == "POST /models/train")


@pytest.fixture
def held(monkeypatch):
    """Runs stop at `stage` until the test releases them: training is never faster than a check."""
    release = threading.Event()

    def hold(stage: str) -> threading.Event:
        real = getattr(job, stage)

        def waiting(*args, **kwargs):
            release.wait(60)
            return real(*args, **kwargs)

        monkeypatch.setattr(job, stage, waiting)
        return release

    yield hold
    release.set()


def listed(api) -> dict:
    return api.json("GET", "/models")[1]


def wait_for(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_run_answers_202_at_once_shows_as_training_and_then_with_its_outcome(api, moto_tables, held):
    store_events(moto_tables["EventsTable"], generate_shop(seed=2, n_users=80, n_items=40, end=END).events)
    release = held("train_model")  # after the run's manifest says "training"

    started = time.monotonic()
    status, body = api.json("POST", "/models/train", {"config": A_MODEL_SERVES})

    assert time.monotonic() - started < 1
    assert (status, body["status"]) == (202, "started")
    assert wait_for(lambda: listed(api)["versions"])
    run = listed(api)["versions"][0]
    assert (run["status"], listed(api)["active"]) == ("training", None)

    status, refused = api.json("POST", "/models/train")  # one run at a time, as on AWS
    assert status == 409
    assert run["version"] in refused["error"]["message"]

    release.set()
    assert api.gateway.trainer.wait(60)
    after = listed(api)
    assert [v["version"] for v in after["versions"]] == [run["version"]]  # the refused start ran nothing
    assert (after["versions"][0]["status"], after["active"]) == ("accepted", run["version"])


def test_a_second_start_before_the_first_run_has_a_manifest_is_refused_too(api, held):
    release = held("new_version")  # before the run has written anything

    assert api.json("POST", "/models/train")[0] == 202
    status, refused = api.json("POST", "/models/train")

    assert status == 409
    assert "training run is starting" in refused["error"]["message"]
    release.set()
    assert api.gateway.trainer.wait(60)
    assert len(listed(api)["versions"]) == 1


def test_the_same_function_deployed_invokes_the_train_function_asynchronously(moto_tables, monkeypatch):
    """Loaded as Lambda loads it, without the local stack's trainer."""
    handler = load_handler(TRAIN_ROUTE)
    admin = sys.modules[handler.__module__]
    calls = []

    class Lambda:
        def invoke(self, **call):
            calls.append(call)
            return {"StatusCode": 202}

    monkeypatch.setattr(admin, "lambda_client", Lambda)
    event = json.loads((PROJECT_ROOT / "events" / "admin" / "post_models_train.json").read_text())
    event["body"] = json.dumps({"config": {"factors": 32}})

    result = handler(event, LambdaContext(function_name="AdminFunction"))

    assert result["statusCode"] == 202, result
    assert calls == [{"FunctionName": "shop-recs-test-train", "InvocationType": "Event",
                      "Payload": json.dumps({"config": {"factors": 32}}).encode()}]


def test_the_admin_function_ships_no_training_code():
    """On AWS it only starts the train function: numpy, scipy and implicit stay out of it."""
    source = (PROJECT_ROOT / "functions" / "admin" / "app.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}

    training = {m for m in imported if m.startswith(("shared.training.job", "shared.training.pipeline",
                                                     "shared.storage.training_data", "shared.segments.service",
                                                     "numpy", "scipy", "implicit", "devstack"))}
    assert training == set()
