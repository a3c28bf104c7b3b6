"""A customer erased while the nightly run computes is not written back into its segments (moto).

The run reads its customers minutes before it writes their memberships (on the export path, the
exports are older still); an erasure in between ended the memberships of the runs listed then,
not of tonight's, which was not written yet."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

from shared.config import get_settings
from shared.segments.service import materialize_segments
from shared.storage.bus import LocalBus
from shared.storage.customers import load_customers
from shared.storage.privacy import COMPLETE, IN_PROGRESS, PrivacyStore
from shared.storage.segments import SegmentStore
from shared.storage.training_data import read_nightly
from shared.training.config import training_config
from tests.factories import ago, item, purchase


def shop(api) -> None:
    assert api.json("POST", "/items", {"items": [item("pan", category="kitchen")]})[0] == 200
    for user in ("u-1", "u-2"):
        assert api.json("PUT", f"/users/{user}", {"country": "DE", "city": "Berlin",
                                                  "attributes": {"interests": ["kitchen"]}})[0] == 200
    assert api.json("POST", "/events", {"events": [
        purchase("p-1", user_id="u-1", item_id="pan", timestamp=ago(days=2)),
        purchase("p-2", user_id="u-2", item_id="pan", timestamp=ago(days=3))]})[0] == 200


def members(api, segment_id: str) -> list[str]:
    status, page = api.json("GET", f"/segments/{segment_id}/members")
    assert status == 200, page
    return [member["user_id"] for member in page["members"]]


def a_night_that_has_read(api, tables: dict[str, str], bus: LocalBus):
    """A run a night before (the triggers' baseline), a new item (a trigger's cause), then tonight's
    read: (the segment store, tonight, what it read)."""
    store = SegmentStore(tables["SegmentsTable"])
    shop(api)
    materialize_segments(get_settings(), store, {}, datetime.now(timezone.utc) - timedelta(hours=1), "r0", bus=bus)
    assert api.json("POST", "/items", {"items": [item("knife", category="kitchen")]})[0] == 200
    now = datetime.now(timezone.utc)
    read = read_nightly(tables["EventsTable"], tables["UsersTable"], tables["ItemsTable"], training_config(None), now)
    return store, now, read


def test_a_customer_erased_while_the_nightly_run_trains_is_not_written_back(api, moto_tables, tmp_path):
    bus = LocalBus(tmp_path / "bus.jsonl")
    store, now, read = a_night_that_has_read(api, moto_tables, bus)

    status, erased = api.json("DELETE", "/users/u-1")  # while the run trains
    assert (status, erased["status"]) == (200, "complete")
    materialize_segments(get_settings(), store, {}, now, now.strftime("%Y%m%dT%H%M%S"), read.segments.customers, bus)

    assert store.memberships("u-1") == []
    assert api.json("GET", "/users/u-1/export")[1]["segment_memberships"] == []
    assert store.memberships("u-2")  # the others' are written
    assert {json.loads(e["Detail"]).get("user_id") for e in bus.read()} == {"u-2"}  # no trigger names u-1


def test_a_customer_who_objects_while_the_nightly_run_trains_is_named_by_no_trigger(api, moto_tables, tmp_path):
    """Triggers are made from the customers the run read; an objection to profiling since (minutes
    before on the Scan path, hours on the export path) must keep them out of every event."""
    bus = LocalBus(tmp_path / "bus.jsonl")
    store, now, read = a_night_that_has_read(api, moto_tables, bus)

    objection = {"profiling": {"granted": False}, "source": "app-settings"}
    assert api.json("PUT", "/users/u-1/consent", objection)[0] == 200  # while the run trains
    materialize_segments(get_settings(), store, {}, now, now.strftime("%Y%m%dT%H%M%S"), read.segments.customers, bus)

    named = [json.loads(e["Detail"]).get("user_id") for e in bus.read()]
    assert "u-2" in named and "u-1" not in named


def test_a_customer_erased_after_the_export_the_run_reads_is_not_listed(api, moto_tables):
    tables, settings, store = moto_tables, get_settings(), SegmentStore(moto_tables["SegmentsTable"])
    shop(api)
    exported_at = datetime.now(timezone.utc)
    exported = dataclasses.replace(load_customers(tables["EventsTable"], tables["UsersTable"], tables["ItemsTable"]),
                                   as_of=exported_at)  # what the exports show
    assert api.json("DELETE", "/users/u-1")[1]["status"] == "complete"  # before the fit starts
    now = datetime.now(timezone.utc)
    materialize_segments(settings, store, {}, now, now.strftime("%Y%m%dT%H%M%S"), exported)

    assert store.memberships("u-1") == []
    segment_id = store.memberships("u-2")[0]["segment_id"]
    assert members(api, segment_id) == ["u-2"]
    listed = {s["segment_id"]: s["members"] for s in api.json("GET", "/segments")[1]["segments"]}
    assert listed[segment_id] == 1  # the count is of the members listed: u-1 was never written


def test_a_segment_whose_only_member_was_erased_since_the_read_is_not_listed(api, moto_tables):
    tables, settings, store = moto_tables, get_settings(), SegmentStore(moto_tables["SegmentsTable"])
    shop(api)
    assert api.json("PUT", "/users/u-1", {"country": "FR", "city": "Paris"})[0] == 200  # their own segments
    read = dataclasses.replace(load_customers(tables["EventsTable"], tables["UsersTable"], tables["ItemsTable"]),
                               as_of=datetime.now(timezone.utc))
    assert api.json("DELETE", "/users/u-1")[1]["status"] == "complete"
    now = datetime.now(timezone.utc)
    materialize_segments(settings, store, {}, now, now.strftime("%Y%m%dT%H%M%S"), read)

    listed = {s["segment_id"]: s["members"] for s in api.json("GET", "/segments")[1]["segments"]}
    assert "geography:country-fr" not in listed and "geography:city-paris" not in listed
    assert listed["geography:country-de"] == 1


def test_a_customer_erased_before_the_read_who_came_back_keeps_tonights_memberships(api, moto_tables):
    """Only erasures since the read count: a customer erased earlier and back since is a customer again."""
    settings, store = get_settings(), SegmentStore(moto_tables["SegmentsTable"])
    shop(api)
    assert api.json("DELETE", "/users/u-1")[1]["status"] == "complete"
    assert api.json("PUT", "/users/u-1", {"country": "DE", "city": "Berlin"})[0] == 200  # back
    now = datetime.now(timezone.utc) + timedelta(seconds=1)
    materialize_segments(settings, store, {}, now, now.strftime("%Y%m%dT%H%M%S"))

    assert {m["segment_id"] for m in store.memberships("u-1")} == {"geography:country-de", "geography:city-berlin"}


def test_a_paused_erasure_the_sweep_finishes_while_the_run_computes_is_not_written_back(api, moto_tables):
    """Begun before the run read its customers, it was noted then; its events were still stored."""
    tables, settings, store = moto_tables, get_settings(), SegmentStore(moto_tables["SegmentsTable"])
    shop(api)
    privacy = PrivacyStore(tables["EventsTable"], tables["UsersTable"], tables["SegmentsTable"])
    assert privacy.erase("u-1", lambda: 0.0).status == IN_PROGRESS  # a 202: out of time at once
    now = datetime.now(timezone.utc)
    # As materialize_segments reads them itself (a run without training): the events still stored.
    customers = load_customers(tables["EventsTable"], tables["UsersTable"], tables["ItemsTable"])

    assert privacy.finish("u-1", lambda: 60.0).status == COMPLETE  # the sweep, while the run computes
    materialize_segments(settings, store, {}, now, now.strftime("%Y%m%dT%H%M%S"), customers)

    assert store.memberships("u-1") == []
    assert store.memberships("u-2")


def test_the_events_an_erasure_in_progress_covers_are_not_read_for_the_segments(api, moto_tables):
    """As serving leaves them out: the erasure deleted the customer's recent-activity item at once,
    and the Query that stands in for a missing item read back the events it had not deleted yet."""
    tables = moto_tables
    shop(api)
    privacy = PrivacyStore(tables["EventsTable"], tables["UsersTable"], tables["SegmentsTable"])
    assert privacy.erase("u-1", lambda: 0.0).status == IN_PROGRESS  # its events are still stored

    loaded = load_customers(tables["EventsTable"], tables["UsersTable"], tables["ItemsTable"])
    read = read_nightly(tables["EventsTable"], tables["UsersTable"], tables["ItemsTable"], training_config(None),
                        datetime.now(timezone.utc)).segments.customers
    for customers in (loaded, read):
        assert list(customers.histories.get("u-1") or []) == []
        assert len(customers.histories["u-2"]) == 1
