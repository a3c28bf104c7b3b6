"""Training runs and model versions on DynamoDB Local: the lifecycle an operator relies on."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from devstack.dynamodb_local import client, create_tables, delete_tables
from shared.storage.blobs import LocalBlobs
from shared.storage.models import ModelStore
from tests.conftest import TEMPLATE, Api, local_gateway, use_tables
from tests.training_data import shop, store_events

pytestmark = pytest.mark.integration
SHOP = (500, 200)


@pytest.fixture(scope="module")
def seeded_tables(dynamodb_local):
    """One shop's events, shared read-only by this module's tests (seeding is the slow part)."""
    names = create_tables(dynamodb_local, f"m{uuid.uuid4().hex[:8]}", TEMPLATE)
    store_events(names["EventsTable"], shop(*SHOP).events, client(dynamodb_local))
    yield names
    delete_tables(dynamodb_local, names)


@pytest.fixture
def admin(seeded_tables, dynamodb_local, monkeypatch, tmp_path) -> Api:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local)
    monkeypatch.setenv("LOCAL_MODEL_DIR", str(tmp_path))
    use_tables(monkeypatch, seeded_tables)
    return Api(local_gateway())


def train(api: Api, **config) -> dict:
    return api.train_and_wait(config or None)


def active(api: Api) -> str | None:
    return api.json("GET", "/models")[1]["active"]


def test_training_publishes_an_accepted_version_and_makes_it_active(admin, tmp_path):
    manifest = train(admin)

    assert manifest["status"] == "accepted", manifest["reason"]
    assert manifest["active"] is True
    assert manifest["metrics"]["model"]["ndcg"] > manifest["metrics"]["popularity"]["ndcg"]
    assert set(manifest["timings"]) >= {"load", "matrix", "evaluate", "final_fit", "publish"}
    assert manifest["counts"]["interactions"] == len(shop(*SHOP).events)
    assert active(admin) == manifest["version"]
    assert (tmp_path / "models" / manifest["version"] / "model.npz").exists()


def test_a_version_can_be_rolled_back_to_and_forward_again(admin):
    first, second = train(admin)["version"], train(admin)["version"]
    assert active(admin) == second

    status, body = admin.json("POST", f"/models/{first}/activate")

    assert (status, body["version"], body["active"]) == (200, first, True)
    assert active(admin) == first
    assert admin.json("POST", f"/models/{second}/activate")[0] == 200
    assert active(admin) == second


def test_a_corrupted_artifact_is_never_activated_and_the_active_version_stays(admin, tmp_path):
    good, bad = train(admin)["version"], train(admin)["version"]
    admin.json("POST", f"/models/{good}/activate")
    LocalBlobs(tmp_path).put(f"models/{bad}/model.npz", b"not a model")

    status, body = admin.json("POST", f"/models/{bad}/activate")

    assert status == 409
    assert "checksum" in body["error"]["message"]
    assert active(admin) == good


def test_a_window_larger_than_allowed_fails_cleanly(admin):
    manifest = train(admin, max_interactions=100)
    assert manifest["status"] == "failed"
    assert "more than 100 interactions" in manifest["reason"]
    assert active(admin) is None


def test_a_model_that_loses_to_popularity_serves_popularity_and_going_back_to_it_needs_force(admin):
    good = train(admin)["version"]
    rejected = train(admin, min_gain_over_popularity=100)

    assert rejected["status"] == "rejected" and "popularity" in rejected["reason"]
    assert rejected["metrics"]["model"] and rejected["strategy"] == "popular"
    assert active(admin) == rejected["version"]  # customers get the better strategy: popular items
    serving = admin.json("GET", "/models")[1]["serving"]
    assert (serving["version"], serving["strategy"]) == (rejected["version"], "popular") and serving["reason"]
    assert admin.json("POST", f"/models/{good}/activate")[0] == 200  # a rollback to the accepted model
    assert admin.json("POST", f"/models/{rejected['version']}/activate")[0] == 409
    assert admin.json("POST", f"/models/{rejected['version']}/activate?force=true")[0] == 200


def test_a_run_killed_halfway_leaves_the_active_version_and_shows_as_abandoned(admin, monkeypatch):
    good = train(admin)["version"]

    def killed(*_args, **_kwargs):
        raise SystemExit("the Lambda timed out")  # not an Exception: nothing catches it, like a kill

    monkeypatch.setattr(ModelStore, "publish", killed)
    assert admin.call("POST", "/models/train").status == 202
    assert admin.gateway.trainer.wait(60)  # the run's thread ended with the "kill"
    monkeypatch.setattr("shared.storage.models.ABANDONED_AFTER", timedelta(0))

    listing = admin.json("GET", "/models")[1]
    assert listing["active"] == good
    assert listing["versions"][0]["status"] == "abandoned"


def test_customers_who_withdrew_consent_are_not_trained_on(local_api, local_tables, tmp_path):
    events = shop(150, 80, seed=4).events
    store_events(local_tables["EventsTable"], events)
    objector = events[-1]["user_id"]
    local_api.json("PUT", f"/users/{objector}", {"consent": {"personalization": False}})

    manifest = train(local_api, min_gain_over_popularity=0)

    assert manifest["counts"]["excluded_users"] == 1
    assert manifest["counts"]["users"] == len({e["user_id"] for e in events}) - 1


def test_the_nightly_segments_agree_with_the_tags_computed_on_request(local_api, local_tables):
    """Customers ingested through the API (so they have summaries), trained, materialized."""
    demo = shop(60, 40, seed=6)
    local_api.json("POST", "/items", {"items": demo.items})
    for user in demo.users[:60]:
        local_api.json("PUT", f"/users/{user['user_id']}", {k: v for k, v in user.items() if k != "user_id"})
    for start in range(0, len(demo.events), 1000):
        assert local_api.json("POST", "/events", {"events": demo.events[start:start + 1000]})[0] == 200
    train(local_api, min_gain_over_popularity=0)

    listing = local_api.json("GET", "/segments")[1]
    assert listing["next_cursor"] is None  # every segment of the run on one page
    members: dict[str, set[str]] = {}
    for summary in listing["segments"]:
        cursor, seen = None, []
        while True:  # small pages, to exercise the cursor
            page = local_api.json("GET", f"/segments/{summary['segment_id']}/members?limit=7"
                                  + (f"&cursor={cursor}" if cursor else ""))[1]
            seen += [m["user_id"] for m in page["members"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == summary["members"]
        for user in seen:
            members.setdefault(user, set()).add(summary["segment_id"])

    assert {s["family"] for s in listing["segments"]} >= {"rfm", "lifecycle", "geography", "technographic"}
    forged = local_api.json("GET", f"/segments/{listing['segments'][0]['segment_id']}/members?cursor=bm9wZQ==")
    assert forged[0] == 400 and forged[1]["error"]["fields"][0]["field"] == "cursor"
    for user in {u["user_id"] for u in demo.users}:
        on_request = {t["segment_id"] for t in local_api.json("GET", f"/users/{user}/segments")[1]["tags"]}
        assert on_request == members.get(user, set()), user


def test_before_any_nightly_run_there_are_no_segments_and_members_are_a_404(local_api):
    assert local_api.json("GET", "/segments")[1] == {"run": None, "materialized_at": None, "families": {},
                                                     "segments": [], "next_cursor": None, "custom": [],
                                                     "unreadable": [], "unlisted": []}
    status, body = local_api.json("GET", "/segments/rfm:champions/members")
    assert status == 404 and body["error"]["fields"][0]["field"] == "segment_id"
