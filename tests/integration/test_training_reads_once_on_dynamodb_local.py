"""The train function on DynamoDB Local: one read of each table, and nightly members equal to the
tags each customer gets on request."""

from __future__ import annotations

import pytest

from devstack.gateway import LambdaContext
from tests.training_data import A_MODEL_SERVES, shop
from tests.unit.test_training_reads_once import passes, record_scans, train_handler

pytestmark = pytest.mark.integration


def test_the_train_function_reads_each_table_once_and_its_members_are_the_tags_on_request(
        local_api, local_tables, monkeypatch):
    demo = shop(60, 40, seed=6)
    local_api.json("POST", "/items", {"items": demo.items})
    for user in demo.users:
        local_api.json("PUT", f"/users/{user['user_id']}", {k: v for k, v in user.items() if k != "user_id"})
    for start in range(0, len(demo.events), 1000):
        assert local_api.json("POST", "/events", {"events": demo.events[start:start + 1000]})[0] == 200
    handler = train_handler()
    scans = record_scans(monkeypatch)

    manifest = handler({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "accepted", manifest["reason"]
    assert passes(scans) == {local_tables[t]: 1 for t in ("UsersTable", "EventsTable", "ItemsTable")}
    members: dict[str, set[str]] = {}
    listing = local_api.json("GET", "/segments")[1]
    assert listing["next_cursor"] is None  # every segment of the run on one page
    for summary in listing["segments"]:
        page = local_api.json("GET", f"/segments/{summary['segment_id']}/members?limit=1000")[1]
        assert page["next_cursor"] is None
        for member in page["members"]:
            members.setdefault(member["user_id"], set()).add(summary["segment_id"])
    assert members
    for user in {u["user_id"] for u in demo.users}:
        on_request = {t["segment_id"] for t in local_api.json("GET", f"/users/{user}/segments")[1]["tags"]}
        assert on_request == members.get(user, set()), user
