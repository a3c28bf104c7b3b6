"""A customer's rights: consent, a copy of their data, and erasure that leaves nothing behind."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import quote

from datetime import datetime, timezone

import pytest

from devstack.gateway import LambdaContext
from devstack.template import PROJECT_ROOT
from shared.segments.families import needs_consent
from shared.storage import dynamo, privacy
from shared.storage.privacy import EXPORT_PAGE_BYTES
from shared.storage.training_data import load_training_data
from shared.training.config import training_config
from tests.factories import ago, event, purchase
from tests.integration.test_ingest_on_dynamodb_local import stored_events
from tests.training_data import A_MODEL_SERVES, shop, store_events

pytestmark = pytest.mark.integration


@pytest.fixture
def loaded(local_api):
    demo = shop(60, 40, seed=6)
    local_api.json("POST", "/items", {"items": demo.items})
    for user in demo.users:
        local_api.json("PUT", f"/users/{user['user_id']}", {k: v for k, v in user.items() if k != "user_id"})
    for start in range(0, len(demo.events), 1000):
        local_api.json("POST", "/events", {"events": demo.events[start:start + 1000]})
    local_api.train_and_wait(A_MODEL_SERVES)
    buyers = {e["user_id"] for e in demo.events if e["event_type"] == "purchase"}
    return local_api, sorted(buyers)[0], demo


def everything_about(tables, user_id):
    events = dynamo.client().query(TableName=tables["EventsTable"], KeyConditionExpression="user_id = :u",
                                   ExpressionAttributeValues={":u": {"S": user_id}}, ConsistentRead=True)["Items"]
    profile = dynamo.client().get_item(TableName=tables["UsersTable"], Key={"user_id": {"S": user_id}}).get("Item")
    # Every item of the segments table that names the customer: their entry of each run's bucket
    # of customers, and their entry in any run's page of members.
    pages = dynamo.client().get_paginator("scan").paginate(TableName=tables["SegmentsTable"])
    rows = [dynamo.deserialize(row) for page in pages for row in page["Items"]]
    memberships = [row for row in rows if user_id in (row.get("customers") or {})
                   or user_id in (row.get("members") or {})]
    return events, profile, memberships


def test_the_export_holds_the_profile_every_event_and_the_segment_memberships(loaded):
    api, user, demo = loaded
    status, export = api.json("GET", f"/users/{user}/export")
    assert status == 200
    assert export["profile"]["user_id"] == user
    assert len(export["events"]) == sum(e["user_id"] == user for e in demo.events)
    # Each membership of the nightly run with its reason: what the customer is on, and why.
    assert export["segment_memberships"]
    assert all(m["reason"] and m["run"] and m["segment_id"] for m in export["segment_memberships"])


def test_erasure_leaves_only_the_suppression_record_and_the_next_run_does_not_bring_it_back(loaded, local_tables):
    api, user, _ = loaded
    assert all(everything_about(local_tables, user))

    status, body = api.json("DELETE", f"/users/{user}")

    assert status == 200 and body["erased"]["events"] > 0 and body["erased"]["segment_memberships"] > 0
    events, profile, memberships = everything_about(local_tables, user)
    assert (events, memberships) == ([], [])
    assert set(dynamo.deserialize(profile)) == {"user_id", "erased_at", "erasure_status"}
    shown = api.json("GET", f"/users/{user}")[1]
    assert shown["erased_at"] and shown["summary"]["purchase_count"] == 0 and shown["attributes"] == {}
    assert api.json("GET", f"/users/{user}/segments")[1]["tags"] == []
    # The next nightly run reads everything again (whether its model passes the gate against the
    # active one depends on which customers its holdout holds: not this test's business).
    assert api.train_and_wait(A_MODEL_SERVES)["status"] in ("accepted", "rejected")
    assert everything_about(local_tables, user)[2] == []  # and the new nightly run did not bring it back


def test_withdrawing_consent_stops_personalization_at_once(loaded):
    api, user, _ = loaded
    assert api.json("GET", f"/users/{user}/recommendations")[1]["personalized"] is True

    status, answer = api.json("PUT", f"/users/{user}/consent", {"personalization": False})

    assert status == 200 and answer["consent"]["personalization"]["granted"] is False
    assert api.json("GET", f"/users/{user}/recommendations")[1]["strategy"].startswith("no_consent")
    assert api.json("PUT", f"/users/{user}/consent", {"personalization": "no"})[0] == 422


def test_withdrawing_consent_ends_behavioural_memberships_at_once_and_keeps_declared_ones(loaded, local_tables):
    api, user, _ = loaded
    before = {m["segment_id"] for m in api.json("GET", f"/users/{user}/export")[1]["segment_memberships"]}
    behavioural = sorted(s for s in before if needs_consent(s))
    assert behavioural, "the loaded shop's buyer has behavioural segments"
    assert user in members_of(api, behavioural[0])

    assert api.json("PUT", f"/users/{user}/consent", {"personalization": False})[0] == 200

    after = {m["segment_id"] for m in api.json("GET", f"/users/{user}/export")[1]["segment_memberships"]}
    assert after == {s for s in before if not needs_consent(s)}
    assert all(user not in members_of(api, segment) for segment in behavioural)


def test_withdrawing_personalization_alone_keeps_the_segments_and_profiling_alone_the_recommendations(loaded):
    api, user, _ = loaded
    before = {m["segment_id"] for m in api.json("GET", f"/users/{user}/export")[1]["segment_memberships"]}

    assert api.json("PUT", f"/users/{user}/consent", {"personalization": {"granted": False}})[0] == 200
    assert {m["segment_id"] for m in api.json("GET", f"/users/{user}/export")[1]["segment_memberships"]} == before
    assert api.json("GET", f"/users/{user}/recommendations")[1]["personalized"] is False

    assert api.json("PUT", f"/users/{user}/consent", {"personalization": {"granted": True},
                                                      "profiling": {"granted": False}, "source": "backend"})[0] == 200
    assert api.json("GET", f"/users/{user}/recommendations")[1]["personalized"] is True
    after = {m["segment_id"] for m in api.json("GET", f"/users/{user}/export")[1]["segment_memberships"]}
    assert after == {s for s in before if not needs_consent(s)}
    history = api.json("GET", f"/users/{user}/consent")[1]["history"]["changes"]
    # The demo customer may have opted in to a contact channel when the shop was loaded: not asked here.
    assert [(c["purpose"], c["granted"]) for c in history if c["purpose"] in ("personalization", "profiling")] == [
        ("personalization", False), ("personalization", True), ("profiling", False)]


def members_of(api, segment_id: str) -> set[str]:
    found, cursor = set(), None
    while True:
        query = f"?limit=1000&cursor={cursor}" if cursor else "?limit=1000"
        page = api.json("GET", f"/segments/{quote(segment_id, safe='')}/members{query}")[1]
        found |= {m["user_id"] for m in page["members"]}
        cursor = page["next_cursor"]
        if not cursor:
            return found


def test_an_erasure_keeps_only_a_suppression_record_with_the_objection(local_api, local_tables):
    local_api.json("PUT", "/users/u-obj", {"country": "DE", "attributes": {"age_band": "25-34"}})
    local_api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-obj")]})
    local_api.json("PUT", "/users/u-obj/consent", {"personalization": False})

    status, body = local_api.json("DELETE", "/users/u-obj")

    assert status == 200 and body["status"] == "complete" and "objection" in body["kept"]
    _, profile, _ = everything_about(local_tables, "u-obj")
    assert set(dynamo.deserialize(profile)) == {"user_id", "erased_at", "erasure_status", "consent",
                                                 "consent_updated_at"}
    # The customer comes back: the objection still holds, for every answer.
    local_api.json("PUT", "/users/u-obj", {"country": "FR"})
    local_api.json("POST", "/events", {"events": [purchase("p-2", user_id="u-obj", timestamp=ago(seconds=0))]})
    consent = local_api.json("GET", "/users/u-obj/consent")[1]
    assert {p: s["granted"] for p, s in consent["consent"].items() if s["source"] != "default"} == \
        {"personalization": False, "profiling": False}
    assert consent["history"]["changes"] == []  # the history goes; the objections are the proof kept
    assert local_api.json("GET", "/users/u-obj/recommendations")[1]["strategy"].startswith("no_consent")


def test_events_stamped_before_an_erasure_are_refused_each_named_and_later_ones_kept(local_api, local_tables):
    local_api.json("POST", "/events", {"events": [event("v-0", user_id="u-gone")]})
    erased_at = local_api.json("DELETE", "/users/u-gone")[1]["erased_at"]

    late = [event("v-1", user_id="u-gone", timestamp=ago(minutes=5)), purchase("p-2", user_id="u-gone",
                                                                               timestamp=ago(minutes=3)),
            event("v-3", user_id="u-gone", timestamp=ago(seconds=-2)), event("v-4", user_id="u-other")]
    status, body = local_api.json("POST", "/events", {"events": late})

    assert status == 207 and body["accepted"] == 2 and body["refused_after_erasure"] == 2
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(0, "v-1"), (1, "p-2")]
    assert erased_at in body["rejected"][0]["errors"][0]["message"]
    stored = [e["event_id"] for e in stored_events(local_tables["EventsTable"], "u-gone")]
    assert stored == ["v-3"]
    assert local_api.json("GET", "/users/u-gone")[1]["summary"]["purchase_count"] == 0


def test_an_erasure_racing_a_stream_of_the_customers_events_leaves_none_from_before_it(local_api, local_tables):
    stop = threading.Event()
    answers: list[dict] = []

    def keep_sending() -> None:
        n = 0
        while not stop.is_set() and n < 4000:
            batch = [event(f"r-{n + i}", user_id="u-race", timestamp=ago(minutes=10)) for i in range(50)]
            n += 50
            answers.append(local_api.json("POST", "/events", {"events": batch})[1])

    sender = threading.Thread(target=keep_sending)
    sender.start()
    time.sleep(1.0)  # the customer has events in the table, and more are arriving
    status, erasure = local_api.json("DELETE", "/users/u-race")
    time.sleep(1.0)  # and keep arriving after the erasure
    stop.set()
    sender.join()

    assert status == 200 and erasure["erased"]["events"] > 0
    assert stored_events(local_tables["EventsTable"], "u-race") == []
    refused = sum(a["refused_after_erasure"] for a in answers)
    assert refused > 0 and sum(a["accepted"] for a in answers) == erasure["erased"]["events"]
    _, profile, _ = everything_about(local_tables, "u-race")
    assert "summary_version" not in profile and "consent" not in profile


def test_an_export_comes_in_pages_that_stay_far_under_lambdas_6_mb(local_api, local_tables):
    properties = {f"k{n}": "€" * 1000 for n in range(5)}  # about 15 KB stored, 30 KB as JSON
    for start in range(0, 300, 50):
        body = {"events": [event(f"e-{n:04}", user_id="u-big", properties=properties)
                           for n in range(start, start + 50)]}
        assert local_api.json("POST", "/events", body)[1]["accepted"] == 50

    seen, cursor, pages = [], None, 0
    while True:
        response = local_api.call("GET", "/users/u-big/export" + (f"?cursor={cursor}" if cursor else ""))
        assert response.status == 200 and len(response.body) < EXPORT_PAGE_BYTES * 1.1
        page = json.loads(response.body)
        seen += [e["event_id"] for e in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages >= 3 and sorted(seen) == [f"e-{n:04}" for n in range(300)]


def test_an_erasure_that_runs_out_of_time_says_so_and_the_next_call_finishes_it(local_api, local_tables, monkeypatch):
    store_events(local_tables["EventsTable"], [event(f"e-{n}", user_id="u-long", timestamp=ago(days=1))
                                               for n in range(600)])
    monkeypatch.setattr(privacy, "ERASE_KEYS_PER_PAGE", 100)
    store = privacy.PrivacyStore(local_tables["EventsTable"], local_tables["UsersTable"],
                                 local_tables["SegmentsTable"])
    clock = iter([1.0, 1.0, 0.0])

    first = store.erase("u-long", lambda: next(clock))

    assert (first.status, first.erased["events"]) == ("in_progress", 200)
    assert dynamo.get_item(local_tables["UsersTable"], {"user_id": "u-long"}, "read")["erasure_status"] == "in_progress"
    store_events(local_tables["EventsTable"], [event("e-x", user_id="u-other", timestamp=ago(days=1))])
    training = load_training_data(local_tables["EventsTable"], local_tables["UsersTable"], training_config({}),
                                  datetime.now(timezone.utc))
    assert training.interactions.user_ids == ["u-other"]  # the events still to delete are not trained on
    status, body = local_api.json("DELETE", "/users/u-long")
    assert (status, body["status"], body["erased"]["events"]) == (200, "complete", 400)
    assert stored_events(local_tables["EventsTable"], "u-long") == []


def test_an_unfinished_erasure_whose_stamp_does_not_read_is_finished_with_every_event(local_tables, monkeypatch):
    store_events(local_tables["EventsTable"], [event(f"e-{n}", user_id="u-long", timestamp=ago(days=1))
                                               for n in range(300)])
    monkeypatch.setattr(privacy, "ERASE_KEYS_PER_PAGE", 100)
    store = privacy.PrivacyStore(local_tables["EventsTable"], local_tables["UsersTable"],
                                 local_tables["SegmentsTable"])
    assert store.erase("u-long", iter([1.0, 0.0]).__next__).status == "in_progress"
    dynamo.client().update_item(TableName=local_tables["UsersTable"], Key={"user_id": {"S": "u-long"}},
                                UpdateExpression="SET erased_at = :n", ExpressionAttributeValues={":n": {"N": "5"}})

    finished = store.finish("u-long", lambda: 1.0)

    assert (finished.status, finished.erased["events"]) == ("complete", 200)
    assert stored_events(local_tables["EventsTable"], "u-long") == []


def test_a_list_computed_before_an_objection_or_an_erasure_no_longer_shows_the_customer(loaded, local_tables):
    """The nightly run may have read the customer just before they objected or were erased, and
    its members written after: the lists are checked against consent as they are read."""
    api, user, demo = loaded
    other = sorted({e["user_id"] for e in demo.events if e["event_type"] == "purchase"})[1]
    memberships = {m["segment_id"] for m in api.json("GET", f"/users/{user}/export")[1]["segment_memberships"]}
    behavioural = next(s for s in memberships if needs_consent(s))
    declared = next(s for s in memberships if not needs_consent(s))
    # As if the objection landed after the run read the customer: the consent changes, the rows stay.
    dynamo.client().update_item(TableName=local_tables["UsersTable"], Key={"user_id": {"S": user}},
                                UpdateExpression="SET consent = :c",
                                ExpressionAttributeValues={":c": {"M": {"personalization": {"BOOL": False}}}})

    assert user not in members_of(api, behavioural)
    assert user in members_of(api, declared)  # declared data is not behaviour: it stays

    other_segment = next(m["segment_id"] for m in api.json("GET", f"/users/{other}/export")[1]["segment_memberships"])
    dynamo.client().update_item(TableName=local_tables["UsersTable"], Key={"user_id": {"S": other}},
                                UpdateExpression="SET erased_at = :at",
                                ExpressionAttributeValues={":at": {"S": "2999-01-01T00:00:00.000000Z"}})
    assert other not in members_of(api, other_segment)

    # An erasure stamp that does not read (written by hand) withholds its customer, and only them.
    third = sorted({e["user_id"] for e in demo.events if e["event_type"] == "purchase"})[2]
    third_segment = next(m["segment_id"] for m in api.json("GET", f"/users/{third}/export")[1]["segment_memberships"])
    before = members_of(api, third_segment)
    dynamo.client().update_item(TableName=local_tables["UsersTable"], Key={"user_id": {"S": third}},
                                UpdateExpression="SET erased_at = :at", ExpressionAttributeValues={":at": {"N": "5"}})
    assert members_of(api, third_segment) == before - {third, other}


def test_the_scheduled_sweep_finishes_an_erasure_and_keeps_what_the_customer_sent_since(local_api, local_tables,
                                                                                         monkeypatch):
    store_events(local_tables["EventsTable"], [event(f"e-{n}", user_id="u-long", timestamp=ago(days=1))
                                               for n in range(300)])
    monkeypatch.setattr(privacy, "ERASE_KEYS_PER_PAGE", 100)
    store = privacy.PrivacyStore(local_tables["EventsTable"], local_tables["UsersTable"],
                                 local_tables["SegmentsTable"])
    clock = iter([1.0, 0.0])
    assert store.erase("u-long", lambda: next(clock)).status == "in_progress"
    local_api.json("POST", "/events", {"events": [event("after", user_id="u-long", timestamp=ago(seconds=-1))]})
    sweep = json.loads((PROJECT_ROOT / "events" / "privacy" / "finish_erasures.json").read_text())

    outcome = local_api.gateway.handler(next(r for r in local_api.gateway.routes if r.function == "PrivacyFunction"))(
        sweep, LambdaContext(function_name="PrivacyFunction"))

    assert outcome == {"complete": 1, "in_progress": 0, "failed": 0}
    assert [e["event_id"] for e in stored_events(local_tables["EventsTable"], "u-long")] == ["after"]
    assert store.pending_erasures() == []
