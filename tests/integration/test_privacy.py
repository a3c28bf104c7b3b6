"""A customer's rights: consent, a copy of their data, and erasure that leaves nothing behind."""

from __future__ import annotations

import pytest

from shared.storage import dynamo
from shared.storage.models import LocalBlobs, ModelStore
from tests.training_data import shop

pytestmark = pytest.mark.integration


@pytest.fixture
def loaded(local_api):
    demo = shop(60, 40, seed=6)
    local_api.json("POST", "/items", {"items": demo.items})
    for user in demo.users:
        local_api.json("PUT", f"/users/{user['user_id']}", {k: v for k, v in user.items() if k != "user_id"})
    for start in range(0, len(demo.events), 1000):
        local_api.json("POST", "/events", {"events": demo.events[start:start + 1000]})
    local_api.json("POST", "/models/train", {"config": {"min_gain_over_popularity": 0}})
    buyers = {e["user_id"] for e in demo.events if e["event_type"] == "purchase"}
    return local_api, sorted(buyers)[0], demo


def everything_about(tables, user_id):
    events = dynamo.client().query(TableName=tables["EventsTable"], KeyConditionExpression="user_id = :u",
                                   ExpressionAttributeValues={":u": {"S": user_id}}, ConsistentRead=True)["Items"]
    profile = dynamo.client().get_item(TableName=tables["UsersTable"], Key={"user_id": {"S": user_id}}).get("Item")
    memberships = dynamo.client().query(TableName=tables["SegmentsTable"], IndexName="by_user",
                                        KeyConditionExpression="member_user_id = :u",
                                        ExpressionAttributeValues={":u": {"S": user_id}})["Items"]
    return events, profile, memberships


def test_the_export_holds_the_profile_every_event_and_the_segment_memberships(loaded):
    api, user, demo = loaded
    status, export = api.json("GET", f"/users/{user}/export")
    assert status == 200
    assert export["profile"]["user_id"] == user
    assert len(export["events"]) == sum(e["user_id"] == user for e in demo.events)
    assert export["segment_memberships"]


def test_erasure_leaves_nothing_and_the_next_training_run_does_not_see_the_customer(loaded, local_tables, tmp_path):
    api, user, _ = loaded
    assert all(everything_about(local_tables, user))

    status, body = api.json("DELETE", f"/users/{user}")

    assert status == 200 and body["erased"]["events"] > 0 and body["erased"]["segment_memberships"] > 0
    assert everything_about(local_tables, user) == ([], None, [])
    assert api.json("GET", f"/users/{user}")[0] == 404
    assert api.json("GET", f"/users/{user}/segments")[1]["tags"] == []
    manifest = api.json("POST", "/models/train", {"config": {"min_gain_over_popularity": 0}})[1]
    store = ModelStore(LocalBlobs(tmp_path / "models"))
    assert user not in store.load(store.manifest(manifest["version"])).user_ids
    assert everything_about(local_tables, user)[2] == []  # and the new nightly run did not bring it back


def test_withdrawing_consent_stops_personalization_at_once(loaded):
    api, user, _ = loaded
    assert api.json("GET", f"/users/{user}/recommendations")[1]["personalized"] is True

    status, profile = api.json("PUT", f"/users/{user}/consent", {"personalization": False})

    assert status == 200 and profile["consent"] == {"personalization": False}
    assert api.json("GET", f"/users/{user}/recommendations")[1]["strategy"].startswith("no_consent")
    assert api.json("PUT", f"/users/{user}/consent", {"personalization": "no"})[0] == 422
