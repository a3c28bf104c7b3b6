"""Serving under an experiment: sticky variants, the baseline served as such, objectors counted
nowhere, and a signed recommendation id on every answer that lists items."""

from __future__ import annotations

from devstack.gateway import LambdaContext
from shared.experiments.attribution import decode
from shared.storage.secrets import configured_recommendation_key
from tests.training_data import A_MODEL_SERVES
from tests.unit.test_training_reads_once import seeded, train_handler  # noqa: F401 - the fixture

import pytest


@pytest.fixture
def refresh_at_once(monkeypatch):
    """Serving reads the running experiments (and the active pointer) on every request, not each minute."""
    monkeypatch.setenv("MODEL_REFRESH_SECONDS", "0")


def trained(seeded_tables, api) -> str:  # noqa: ARG001
    manifest = train_handler()({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))
    assert manifest["status"] == "accepted", manifest["reason"]
    return manifest["version"]


def customers_with_history(api, count: int = 30) -> list[str]:
    found = []
    for n in range(200):
        user = f"u-{n:05d}"
        status, answer = api.json("GET", f"/users/{user}/recommendations?limit=5")
        if status == 200 and answer["personalized"]:
            found.append(user)
        if len(found) == count:
            break
    return found


def test_every_answer_that_lists_items_names_itself_with_a_signed_id(refresh_at_once, seeded, api):  # noqa: F811
    version = trained(seeded, api)
    key = configured_recommendation_key()
    user = customers_with_history(api, 1)[0]
    answers = {
        "recommendations": api.json("GET", f"/users/{user}/recommendations?limit=5")[1],
        "popular": api.json("GET", "/popular?limit=5")[1],
        "similar": api.json("GET", f"/items/{api.json('GET', '/popular?limit=1')[1]['items'][0]['item_id']}/similar")[1],
    }
    for surface, answer in answers.items():
        served = decode(answer["recommendation_id"], key)
        assert served is not None and served.surface == surface and served.strategy == answer["strategy"]
        assert served.experiment is None  # no experiment runs
    assert decode(answers["recommendations"]["recommendation_id"], key).version == version
    again = api.json("GET", f"/users/{user}/recommendations?limit=5")[1]["recommendation_id"]
    assert again != answers["recommendations"]["recommendation_id"]  # each answer its own
    # A cached answer, the same for everyone, keeps one id while it shows the same: ETags hold.
    assert api.json("GET", "/popular?limit=5")[1]["recommendation_id"] == answers["popular"]["recommendation_id"]


def test_an_experiment_splits_customers_stickily_and_serves_the_baseline_as_such(refresh_at_once, seeded, api):  # noqa: F811
    version = trained(seeded, api)
    key = configured_recommendation_key()
    users = customers_with_history(api)  # before the experiment: everyone personalized
    objector = users.pop()
    assert api.json("PUT", f"/users/{objector}/consent", {"personalization": False})[0] == 200
    status, experiment = api.json("POST", "/experiments", {"name": "model vs bestsellers", "variants": [
        {"name": "model", "serves": "active", "traffic": 0.5}, {"name": "popular", "serves": "popular", "traffic": 0.5}]})
    assert status == 201

    seen = {}
    for user in users:
        answer = api.json("GET", f"/users/{user}/recommendations?limit=5")[1]
        served = decode(answer["recommendation_id"], key)
        assert served.experiment == experiment["experiment_id"]
        seen[user] = served.variant
        if served.variant == "popular":
            assert not answer["personalized"] and answer["strategy"].startswith("experiment:popular")
        else:
            assert answer["personalized"] and answer["model_version"] == version
    assert set(seen.values()) == {"model", "popular"}
    # Sticky: the same customer, the same variant, request after request.
    for user in users[:10]:
        answer = api.json("GET", f"/users/{user}/recommendations?limit=5")[1]
        assert decode(answer["recommendation_id"], key).variant == seen[user]
    # The objector keeps the answer they always get, and is counted in no variant.
    answer = api.json("GET", f"/users/{objector}/recommendations?limit=5")[1]
    assert answer["strategy"].startswith("no_consent:")
    assert decode(answer["recommendation_id"], key).experiment is None

    # Stopped: everyone is back on the active model, ids name no experiment.
    assert api.json("POST", f"/experiments/{experiment['experiment_id']}/stop")[0] == 200
    answer = api.json("GET", f"/users/{users[0]}/recommendations?limit=5")[1]
    assert answer["personalized"] and decode(answer["recommendation_id"], key).experiment is None


def test_a_variant_serves_the_version_it_names(refresh_at_once, seeded, api):  # noqa: F811
    first = trained(seeded, api)
    second = trained(seeded, api)  # now active
    assert first != second
    users = customers_with_history(api, 12)
    status, experiment = api.json("POST", "/experiments", {"name": "new vs old", "variants": [
        {"name": "new", "serves": "active", "traffic": 0.5}, {"name": "old", "serves": first, "traffic": 0.5}]})
    assert status == 201
    versions = {}
    for user in users:
        answer = api.json("GET", f"/users/{user}/recommendations?limit=5")[1]
        versions[decode(answer["recommendation_id"], configured_recommendation_key()).variant] = answer["model_version"]
    assert versions == {"new": second, "old": first}
