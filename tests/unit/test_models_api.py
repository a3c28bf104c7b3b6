"""Training and model versions through the admin API, on moto (DynamoDB and S3)."""

from __future__ import annotations

import pytest

from devstack.demo_data import generate_shop
from shared.storage.blobs import S3Blobs
from tests.conftest import MODEL_BUCKET
from tests.training_data import A_MODEL_SERVES, END, store_events
from tests.unit.test_training_pipeline import customer_ids_in


def versions(api):
    return api.json("GET", "/models")[1]


def test_a_model_is_published_to_the_bucket_and_activated(api, moto_tables):
    """The S3 path; the version lifecycle is tested on DynamoDB Local, where scans are fast."""
    store_events(moto_tables["EventsTable"], generate_shop(seed=2, n_users=80, n_items=40, end=END).events)

    manifest = api.train_and_wait(A_MODEL_SERVES)

    assert (manifest["status"], manifest["active"]) == ("accepted", True), manifest["reason"]
    keys = S3Blobs(MODEL_BUCKET).keys("")
    folder = f"models/{manifest['version']}"
    assert {f"{folder}/model.npz", f"{folder}/statistics.json", f"{folder}/manifest.json", "active.json"} <= set(keys)


def test_an_empty_table_gives_a_clear_status_and_no_version_becomes_active(api):
    manifest = api.train_and_wait()

    assert (manifest["status"], manifest["active"]) == ("insufficient_data", False)
    assert "no interactions" in manifest["reason"]
    assert versions(api)["active"] is None
    status, body = api.json("POST", f"/models/{manifest['version']}/activate")
    assert status == 409


@pytest.mark.parametrize(("body", "field"), [
    ({"config": {"factors": 0}}, "config.factors"),
    ({"config": {"colour": 1}}, "config.colour"),
    ({"settings": {}}, "settings"),
    # Outside what a datetime holds once in UTC: an OverflowError, answered 500 before.
    ({"as_of": "0001-01-01T00:00:00+14:00"}, "as_of"),
    ({"as_of": "9999-12-31T23:59:59-14:00"}, "as_of"),
])
def test_bad_training_parameters_are_refused_naming_the_field(api, body, field):
    status, error = api.json("POST", "/models/train", body)
    assert status == 422
    assert field in {f["field"] for f in error["error"]["fields"]}


def test_an_unknown_version_is_a_404(api):
    assert api.json("POST", "/models/v-nope/activate")[0] == 404


def test_a_training_config_of_the_wrong_type_is_refused_not_coerced(api):
    status, body = api.json("POST", "/models/train", {"config": {"regularization": False, "factors": "64"}})
    assert status == 422
    assert {f["field"] for f in body["error"]["fields"]} == {"config.regularization", "config.factors"}


def test_a_model_published_to_the_bucket_holds_no_customer_id(api, moto_tables):
    events = [{**e, "user_id": f"customer-{e['user_id']}"}  # ids no item id or statistic could contain
              for e in generate_shop(seed=2, n_users=80, n_items=40, end=END).events]
    store_events(moto_tables["EventsTable"], events)

    manifest = api.train_and_wait(A_MODEL_SERVES)

    assert manifest["status"] == "accepted", manifest["reason"]
    assert manifest["counts"]["users"] == len({e["user_id"] for e in events})
    published = S3Blobs(MODEL_BUCKET).get(manifest["artifact"]["key"])
    assert customer_ids_in(published, {e["user_id"] for e in events}) == set()


# Each far outside what a run can do: a date 10^12 days back, a matrix of 10^9 columns, NaNs.
ABSURD = {
    "window_days": 10**6, "holdout_days": 10**12, "max_interactions": 10**12, "factors": 10**9,
    "iterations": 10**9, "random_seed": 2**64, "popularity_days": 10**9, "top_k": 10**9,
    "min_users_to_evaluate": 10**12, "recency_half_life_days": 1e300, "alpha": 1e300, "epsilon": 1e-300,
    "regularization": 1e300, "min_gain_over_popularity": 1e300, "max_drop_from_active": 2.0,
    "event_weights": {"purchase": 1e300},
}


def test_every_numeric_training_setting_is_bounded_and_an_absurd_one_is_refused_by_name(api):
    status, body = api.json("POST", "/models/train", {"config": ABSURD})

    assert status == 422
    assert {f["field"] for f in body["error"]["fields"]} == (
        {f"config.{name}" for name in ABSURD if name != "event_weights"} | {"config.event_weights.purchase"})
    assert api.json("GET", "/models")[1]["versions"] == []  # refused before any run started


@pytest.mark.parametrize("value", ["1e400", "Infinity"])
def test_an_infinite_setting_is_refused(api, value):
    status, body = api.json("POST", "/models/train", raw=f'{{"config": {{"alpha": {value}}}}}'.encode())

    assert status == 422
    assert [f["field"] for f in body["error"]["fields"]] == ["config.alpha"]


@pytest.mark.parametrize("as_of", ["2999-01-01T00:00:00Z", "1960-01-01", "last tuesday"])
def test_a_bad_as_of_is_refused_naming_the_field(api, as_of):
    status, error = api.json("POST", "/models/train", {"as_of": as_of})
    assert status == 422
    assert "as_of" in {f["field"] for f in error["error"]["fields"]}


def test_models_say_which_strategy_serves_and_why(api, moto_tables):
    store_events(moto_tables["EventsTable"], generate_shop(seed=2, n_users=80, n_items=40, end=END).events)

    manifest = api.train_and_wait(A_MODEL_SERVES)
    listed = versions(api)

    assert listed["serving"]["version"] == manifest["version"] == listed["active"]
    assert listed["serving"]["strategy"] == manifest["strategy"] != ""
    assert "NDCG@10" in listed["serving"]["reason"]


def test_on_the_scan_path_get_models_shows_no_pipeline_and_calls_no_step_functions(api, monkeypatch):
    """The pipeline's status is the export path's (tests/unit/test_training_pipeline_state_machine.py)."""
    from shared.storage import pipeline

    monkeypatch.setattr(pipeline, "client", lambda: pytest.fail("the scan path asked Step Functions"))

    assert versions(api)["pipeline"] is None
