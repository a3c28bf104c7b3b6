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
from shared.storage.training_start import START_KEY
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


def test_a_run_is_listed_at_once_and_a_second_start_before_the_run_has_begun_is_refused(api, held):
    release = held("run_manifest")  # before the run itself has written anything

    status, started = api.json("POST", "/models/train")
    assert status == 202
    assert [(v["version"], v["status"]) for v in listed(api)["versions"]] == [(started["version"], "training")]
    status, refused = api.json("POST", "/models/train")

    assert status == 409
    assert started["version"] in refused["error"]["message"]
    release.set()
    assert api.gateway.trainer.wait(60)
    assert [v["version"] for v in listed(api)["versions"]] == [started["version"]]  # the run took it over
    assert listed(api)["versions"][0]["status"] != "training"


def test_a_start_delivered_again_after_its_run_finished_runs_nothing(api, moto_tables):
    """Lambda retries an async event whose run failed after its outcome (a timeout in the segments),
    and may deliver one twice: the version must not be trained, and listed as training, again."""
    store_events(moto_tables["EventsTable"], generate_shop(seed=2, n_users=80, n_items=40, end=END).events)
    manifest = api.train_and_wait(A_MODEL_SERVES)
    assert (manifest["status"], listed(api)["active"]) == ("accepted", manifest["version"])

    trainer = api.gateway.trainer
    answer = trainer._load()({"config": A_MODEL_SERVES, "version": manifest["version"]}, trainer._context())

    assert "skipped" in answer
    after = listed(api)
    assert [(v["version"], v["status"], v["finished_at"]) for v in after["versions"]] == [
        (manifest["version"], "accepted", manifest["finished_at"])]
    assert after["active"] == manifest["version"]


@pytest.fixture
def deployed(moto_tables, monkeypatch):
    """The admin function loaded as Lambda loads it, without the local stack's trainer: its
    train function invocations are recorded, and none runs (a cold start that takes its time)."""
    handler = load_handler(TRAIN_ROUTE)
    admin = sys.modules[handler.__module__]
    calls = []

    class Lambda:
        def invoke(self, **call):
            calls.append(call)
            return {"StatusCode": 202}

    monkeypatch.setattr(admin, "lambda_client", Lambda)
    event = json.loads((PROJECT_ROOT / "events" / "admin" / "post_models_train.json").read_text())

    def post(body: dict) -> tuple[int, dict]:
        answer = handler({**event, "body": json.dumps(body)}, LambdaContext(function_name="AdminFunction"))
        return answer["statusCode"], json.loads(answer["body"])

    return post, calls, admin


def test_the_same_function_deployed_invokes_the_train_function_asynchronously_with_the_version_it_listed(deployed):
    post, calls, admin = deployed

    status, started = post({"config": {"factors": 32}})

    assert status == 202, started
    assert calls == [{"FunctionName": "shop-recs-test-train", "InvocationType": "Event",
                      "Payload": json.dumps({"config": {"factors": 32}, "version": started["version"]}).encode()}]
    assert [(m.version, m.status) for m in admin.models.manifests()] == [(started["version"], "training")]


def test_on_aws_a_second_start_while_the_train_function_is_still_cold_is_refused(deployed):
    """The train function has not written a thing yet: before, the second start went through and
    Lambda queued a second run behind the first."""
    post, calls, _ = deployed

    assert post({})[0] == 202
    status, refused = post({"config": {"factors": 16}})

    assert status == 409, refused
    assert len(calls) == 1


def test_of_many_starts_at_the_same_moment_one_goes_through(deployed, monkeypatch):
    post, calls, admin = deployed
    listing = admin.models.manifests

    def as_slow_as_s3():  # each start checks the listing at about the same moment as the others
        found = listing()
        time.sleep(0.2)
        return found

    monkeypatch.setattr(admin.models, "manifests", as_slow_as_s3)
    # S3 applies a conditional write atomically; moto checks the condition and stores apart, so
    # two threads can both pass it: its puts are taken one at a time here, as S3 takes them.
    blobs, atomic = admin.starts.blobs, threading.Lock()
    put_if = blobs.put_if

    def one_at_a_time(*args):
        with atomic:
            return put_if(*args)

    monkeypatch.setattr(blobs, "put_if", one_at_a_time)
    barrier = threading.Barrier(6)
    answers = []

    def start():
        barrier.wait()
        answers.append(post({})[0])

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(answers) == [202] + [409] * 5
    assert len(calls) == 1
    assert len(listing()) == 1


def test_a_train_function_that_cannot_be_started_is_a_503_and_lists_no_run(deployed, monkeypatch):
    from botocore.exceptions import ClientError

    post, _, admin = deployed
    Lambda = admin.lambda_client

    class Throttled:
        def invoke(self, **call):
            raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"}}, "Invoke")

    monkeypatch.setattr(admin, "lambda_client", Throttled)
    status, error = post({})

    assert status == 503, error
    assert "train function" in error["error"]["message"]
    assert admin.models.manifests() == []
    monkeypatch.undo()  # Lambda takes events again: the start tried again goes through at once
    monkeypatch.setattr(admin, "lambda_client", Lambda)
    assert post({})[0] == 202


def test_a_start_refused_while_a_run_trains_does_not_hold_up_the_next_one(deployed):
    post, calls, admin = deployed
    status, first = post({})
    # Its claim has aged: the listing is the check now.
    admin.starts.blobs.put(START_KEY, json.dumps({"claimed_at": "2026-01-01T00:00:00+00:00",
                                                  "run": first["version"]}).encode())
    status, refused = post({})
    assert status == 409 and first["version"] in refused["error"]["message"]
    manifest = admin.models.manifest(first["version"])
    manifest.status = "accepted"
    admin.models.save(manifest)

    assert post({})[0] == 202  # the refused start's claim does not hold


def test_once_the_started_run_has_finished_the_next_start_goes_through_at_once(deployed):
    post, calls, admin = deployed
    status, started = post({})
    manifest = admin.models.manifest(started["version"])
    manifest.status, manifest.reason = "rejected", "below popularity"  # as the train function finishes it
    admin.models.save(manifest)

    status, again = post({})

    assert status == 202, again
    assert again["version"] != started["version"] and len(calls) == 2


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
