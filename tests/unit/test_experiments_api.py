"""POST /experiments and friends, as the shop's backend calls them."""

from __future__ import annotations

from datetime import timedelta

from shared.storage.blobs import S3Blobs
from shared.storage.models import ModelStore
from tests.conftest import MODEL_BUCKET
from tests.unit.test_model_retention import add_version

GOOD, REJECTED = "v20261130-010000-aaaa", "v20261129-010000-bbbb"
SPLIT = {"name": "model vs bestsellers", "variants": [{"name": "model", "serves": "active", "traffic": 0.5},
                                                      {"name": "popular", "serves": "popular", "traffic": 0.5}]}


def published(moto_tables) -> ModelStore:
    models = ModelStore(S3Blobs(MODEL_BUCKET))
    add_version(models, GOOD, timedelta(days=1))
    add_version(models, REJECTED, timedelta(days=2), status="rejected")
    models.activate(GOOD)
    return models


def test_a_marketer_starts_lists_and_stops_an_experiment(api, moto_tables):
    published(moto_tables)
    status, started = api.json("POST", "/experiments", SPLIT)
    assert status == 201, started
    assert started["status"] == "running" and started["spec"]["variants"][1]["serves"] == "popular"

    status, again = api.json("POST", "/experiments", SPLIT)
    assert status == 409 and started["experiment_id"] in again["error"]["message"]

    status, listing = api.json("GET", "/experiments")
    assert status == 200 and [e["experiment_id"] for e in listing["experiments"]] == [started["experiment_id"]]
    assert listing["experiments"][0]["results"] is None  # the nightly run has not written any yet

    status, stopped = api.json("POST", f"/experiments/{started['experiment_id']}/stop")
    assert status == 200 and stopped["status"] == "stopped"
    assert api.json("POST", f"/experiments/{started['experiment_id']}/stop")[0] == 409
    assert api.json("POST", "/experiments", SPLIT)[0] == 201  # the surface is free again


def test_promotion_goes_through_the_activation_gate(api, moto_tables):
    models = published(moto_tables)
    spec = {**SPLIT, "variants": [{"name": "now", "serves": "active", "traffic": 0.5},
                                  {"name": "old", "serves": REJECTED, "traffic": 0.5}]}
    experiment_id = api.json("POST", "/experiments", spec)[1]["experiment_id"]
    status, refused = api.json("POST", f"/experiments/{experiment_id}/promote", {"variant": "old"})
    assert status == 409 and "rejected" in refused["error"]["message"]
    assert models.active().version == GOOD
    status, done = api.json("POST", f"/experiments/{experiment_id}/promote", {"variant": "now"})
    assert status == 200 and done["status"] == "promoted" and done["promoted"] == "now"


def test_bad_requests_name_the_field(api, moto_tables):
    published(moto_tables)
    status, body = api.json("POST", "/experiments", {**SPLIT, "variants": [{"name": "a", "serves": "active", "traffic": 0.7},
                                                                           {"name": "b", "serves": "popular", "traffic": 0.2}]})
    assert status == 422 and fields(body) == ["variants"] and "add up to 1" in str(body)
    twice = {**SPLIT, "variants": [{**SPLIT["variants"][0], "name": "a"}, {**SPLIT["variants"][1], "name": "a"}]}
    assert fields(api.json("POST", "/experiments", twice)[1]) == ["variants"]
    status, body = api.json("POST", "/experiments", {**SPLIT, "control": "nope"})
    assert status == 422 and fields(body) == ["control"] and "nope" in str(body)
    newline = {**SPLIT, "variants": [{**SPLIT["variants"][0], "serves": GOOD + "\n"}, SPLIT["variants"][1]]}
    assert fields(api.json("POST", "/experiments", newline)[1]) == ["variants[0].serves"]
    status, body = api.json("POST", "/experiments", {**SPLIT, "surface": "checkout"})
    assert status == 422 and "surface" in str(body)
    for loose in (True, "0.5"):  # once read as 1.0 and 0.5
        status, body = api.json("POST", "/experiments", {**SPLIT, "variants": [
            {"name": "a", "serves": "active", "traffic": loose}, {"name": "b", "serves": "popular", "traffic": 0.5}]})
        assert status == 422 and "traffic" in str(body), loose
    status, body = api.json("POST", "/experiments", {**SPLIT, "variants": [{"name": "a", "serves": "v20200101-000000-dddd",
                                                                            "traffic": 0.5}, SPLIT["variants"][1]]})
    assert status == 404 and "v20200101-000000-dddd" in body["error"]["message"]
    assert fields(body) == ["variants[0].serves"]  # the field of the request that names it
    assert api.json("GET", "/experiments/exp-20200101-000000")[0] == 404
    assert api.json("GET", "/experiments/not-an-id")[0] == 422


def fields(body: dict) -> list[str]:
    return [field["field"] for field in body["error"].get("fields", [])] or [body["error"].get("field")]


def test_the_attribution_report_is_empty_before_the_first_nightly_run(api, moto_tables):
    status, report = api.json("GET", "/attribution")
    assert status == 200 and report == {"as_of": None, "days": []}
