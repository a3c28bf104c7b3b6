"""A stored custom segment definition can never break a read: what POST /segments refuses, and how
reads survive definitions that an older version (or a hand) put into the table."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from itertools import accumulate
from typing import Any

import pytest

from shared.segments import rules
from shared.config import get_settings
from shared.segments.service import materialize_segments
from shared.storage import dynamo
from shared.storage import segments as segment_storage
from shared.storage.segments import CUSTOM_PARTITION, SegmentStore
from tests.factories import ago, purchase

GERMANY = {"name": "Germany", "rule": {"field": "country", "op": "==", "value": "DE"}}
CONDITION = {"field": "orders_total", "op": ">=", "value": 1}
NUMBER_RULE = (b'{"name": "Numbers", "rule": {"all": [{"field": "country", "op": "==", "value": "DE"}, '
               b'{"field": "orders_total", "op": ">=", "value": %s}]}}')
DAYS_RULE = (b'{"name": "Days", "rule": {"all": [{"field": "country", "op": "==", "value": "DE"}, '
             b'{"field": "spend_in_days", "days": %s, "op": ">=", "value": 1}]}}')


class Recorder:
    """Stands in for the logger and the metrics, keeping what they were given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def metric(self, name: str) -> float:
        return sum(args[2] for called, args, _ in self.calls if called == "add_metric" and args[0] == name)


def nested(levels: int) -> dict[str, Any]:
    """`levels` of all/any, one inside the other, alternating from an outer all."""
    rule: dict[str, Any] = CONDITION
    for level in reversed(range(levels)):
        rule = {("all", "any")[level % 2]: [rule]}
    return rule


def stored_custom(api) -> tuple[list[str], list[str]]:
    status, listing = api.json("GET", "/segments")
    assert status == 200, listing
    return [c["segment_id"] for c in listing["custom"]], listing["unreadable"]


@pytest.mark.parametrize(("raw", "field"), [
    (NUMBER_RULE % b"NaN", "rule.all[1].value"),
    (NUMBER_RULE % b"Infinity", "rule.all[1].value"),
    (NUMBER_RULE % b"-Infinity", "rule.all[1].value"),
    (NUMBER_RULE % b"1e400", "rule.all[1].value"),
    (NUMBER_RULE % b"-1e400", "rule.all[1].value"),
    (DAYS_RULE % b"1e400", "rule.all[1].days"),
])
def test_numbers_that_are_not_finite_are_refused_naming_where_they_are(api, raw, field):
    status, body = api.json("POST", "/segments", raw=raw)

    assert status == 422, body
    assert [f["field"] for f in body["error"]["fields"]] == [field]
    assert "finite number" in body["error"]["fields"][0]["message"]
    assert stored_custom(api) == ([], [])


def conditions(count: int) -> dict[str, Any]:
    """`count` conditions in groups of at most 20 (the entries one all/any may hold)."""
    return {"all": [{"any": [CONDITION] * min(17, count - start)} for start in range(0, count, 17)]}


@pytest.mark.parametrize(("at_limit", "past_limit", "field", "message"), [
    (nested(5), nested(6), "rule.all[0].any[0].all[0].any[0].all[0].any", "at most 5 levels of all/any"),
    (conditions(50), conditions(51), "rule", "51 conditions: at most 50 in a rule"),
    ({"all": [CONDITION] * 20}, {"all": [CONDITION] * 21}, "rule.all", "21 entries: at most 20 in one all"),
    ({"all": [CONDITION, {"any": [CONDITION] * 20}]}, {"all": [CONDITION, {"any": [CONDITION] * 21}]},
     "rule.all[1].any", "at most 20 in one any"),
])
def test_a_rule_at_a_limit_is_accepted_and_past_it_refused_naming_the_limit(api, at_limit, past_limit, field,
                                                                           message):
    assert api.json("POST", "/segments", {"name": "At the limit", "rule": at_limit})[0] == 201

    status, body = api.json("POST", "/segments", {"name": "Past the limit", "rule": past_limit})

    assert status == 422, body
    assert [f["field"] for f in body["error"]["fields"]] == [field]
    assert message in body["error"]["fields"][0]["message"]


def test_a_body_over_the_routes_own_limit_is_413_naming_it_and_one_under_it_is_accepted(api):
    def countries(count: int) -> dict[str, Any]:
        return {"name": f"Countries {count}", "rule": {"field": "country", "op": "in",
                                                       "value": [f"C{i:05d}" for i in range(count)]}}

    assert 20_000 < len(json.dumps(countries(2000))) < rules.MAX_DEFINITION_BODY_BYTES
    assert api.json("POST", "/segments", countries(2000))[0] == 201

    big = countries(5000)
    assert rules.MAX_DEFINITION_BODY_BYTES < len(json.dumps(big)) < 100_000  # far under the service's 2 MB
    status, body = api.json("POST", "/segments", big)
    assert status == 413, body
    assert body["error"]["fields"] == [{"field": "body", "message": "at most 32768 bytes"}]


def test_a_definition_that_would_list_past_the_limit_is_413_though_its_body_is_under_it(api):
    """Every page of GET /segments lists every definition, its characters past ASCII escaped (an
    emoji: 4 bytes sent, 12 listed): a hundred bodies of 32 KB of emoji would list as 10 MB, past
    Lambda's 6 MB for everyone. The limit bounds the definition as listed too."""
    def cities(count: int, text: str) -> dict[str, Any]:
        return {"name": f"Cities {text[:1]}", "rule": {"field": "city", "op": "in", "value": [text * 20] * count}}

    sent = json.dumps(cities(340, "\U0001F600"), ensure_ascii=False).encode()  # as a client sends UTF-8
    assert len(sent) < rules.MAX_DEFINITION_BODY_BYTES
    status, body = api.json("POST", "/segments", raw=sent)
    assert status == 413 and body["error"]["fields"][0]["field"] == "body", body
    assert "as GET /segments lists it" in body["error"]["message"]
    assert api.json("POST", "/segments", cities(340, "a"))[0] == 201  # the same in ASCII lists as it is sent


def test_definitions_too_large_to_list_are_named_not_listed_and_still_applied(api, moto_tables):
    """Stored before POST /segments bounded a definition as listed: a hundred of them would list as
    10 MB, past Lambda's 6 MB for everyone. The page names them instead, and they still apply."""
    emoji = "\U0001F600" * 20
    legacy = rules.CustomSegmentIn.model_validate({"name": "Germany or far away", "rule": {"any": [
        {"field": "country", "op": "==", "value": "DE"}, {"field": "city", "op": "in", "value": [emoji] * 340}]}})
    stored = legacy.stored(datetime.now(timezone.utc))
    assert rules.listed_size(stored) > rules.MAX_DEFINITION_BODY_BYTES  # about 80 KB listed
    dynamo.client().put_item(TableName=moto_tables["SegmentsTable"], Item={
        "segment_id": {"S": CUSTOM_PARTITION}, "sk": {"S": stored.segment_id}, "definition": {"S": rules.stored_text(stored)}})
    assert api.json("POST", "/segments", {**GERMANY, "name": "Germany"})[0] == 201
    a_german_customer(api)

    call = api.call("GET", "/segments")
    listing = json.loads(call.body)
    assert [c["segment_id"] for c in listing["custom"]] == ["custom:germany"]
    assert listing["unlisted"] == [stored.segment_id] and listing["unreadable"] == []
    assert len(call.body) < 10_000

    assert custom_tags(api) == {"custom:germany", stored.segment_id}  # applied on request
    assert materialize(moto_tables)["segments"][stored.segment_id]["members"] == 1  # and nightly


def test_the_listed_definitions_stop_at_the_listing_budget():
    at = datetime.now(timezone.utc)
    big = [rules.CustomSegmentIn.model_validate({"name": f"Cities {n}", "rule": {
        "field": "city", "op": "in", "value": [f"{n:03d}-" + "a" * 30] * 800}}).stored(at) for n in range(120)]
    sizes = [rules.listed_size(definition) for definition in big]
    assert 25_000 < min(sizes) and max(sizes) <= rules.MAX_DEFINITION_BODY_BYTES

    listed, unlisted = rules.listable(big)

    fits = sum(1 for total in accumulate(sizes) if total <= rules.MAX_LISTED_DEFINITIONS_BYTES)
    assert 90 < fits < 120
    assert [d.segment_id for d in listed] == [d.segment_id for d in big[:fits]]
    assert unlisted == [d.segment_id for d in big[fits:]]
    assert sum(map(rules.listed_size, listed)) <= rules.MAX_LISTED_DEFINITIONS_BYTES


def test_the_101st_custom_segment_is_refused_naming_the_limit(api, moto_tables):
    dynamo.batch_put(moto_tables["SegmentsTable"], [
        {"segment_id": CUSTOM_PARTITION, "sk": f"custom:s{i}", "definition": "written by hand"}
        for i in range(rules.MAX_CUSTOM_SEGMENTS)])

    status, body = api.json("POST", "/segments", GERMANY)
    assert status == 409, body
    assert "at most 100 custom segments" in body["error"]["message"]

    assert api.call("DELETE", "/segments/custom:s0").status == 204
    assert api.json("POST", "/segments", GERMANY)[0] == 201


def test_a_definition_that_would_not_read_back_as_stored_is_refused(api, monkeypatch):
    written = rules.stored_text
    monkeypatch.setattr(rules, "stored_text", lambda definition: written(definition).replace('"DE"', '"FR"'))

    status, body = api.json("POST", "/segments", GERMANY)

    assert status == 422, body
    assert body["error"]["fields"][0]["field"] == "rule"
    assert "reads back different" in body["error"]["fields"][0]["message"]
    monkeypatch.undo()
    assert stored_custom(api) == ([], [])


def test_a_definition_that_fails_to_evaluate_is_refused(api, monkeypatch):
    def failing(*_: Any) -> Any:
        raise ArithmeticError("cannot evaluate")

    monkeypatch.setattr(rules, "_value", failing)

    status, body = api.json("POST", "/segments", GERMANY)

    assert status == 422, body
    assert body["error"]["fields"] == [{"field": "rule",
                                        "message": "cannot be stored and evaluated: cannot evaluate"}]
    monkeypatch.undo()
    assert stored_custom(api) == ([], [])


def a_german_customer(api) -> None:
    api.json("PUT", "/users/u-1", {"country": "DE"})
    assert api.json("POST", "/events", {"events": [purchase("p-1", timestamp=ago(days=2))]})[0] == 200


def materialize(tables: dict[str, str]) -> dict[str, Any]:
    return materialize_segments(get_settings(), SegmentStore(tables["SegmentsTable"]), {}, datetime.now(timezone.utc),
                                run="r1")


def custom_tags(api) -> set[str]:
    status, body = api.json("GET", "/users/u-1/segments")
    assert status == 200, body
    return {t["segment_id"] for t in body["tags"] if t["family"] == "custom"}


GARBAGE = {
    # What the version before this one stored for NaN, Infinity or 1e400: JSON turns them into null.
    "custom:null-value": {"S": json.dumps({
        "segment_id": "custom:null-value", "name": "Null value", "description": "", "created_at": ago(days=1),
        "rule": {"field": "orders_total", "op": ">=", "value": None, "days": None, "category": None,
                 "attribute": None}})},
    "custom:infinite": {"S": '{"segment_id": "custom:infinite", "name": "Infinite", "description": "", '
                             '"created_at": "2026-01-01T00:00:00Z", '
                             '"rule": {"field": "orders_total", "op": ">=", "value": 1e400}}'},
    "custom:not-json": {"S": "{not json"},
    # 380 KB that would read: 400 conditions of 900-character values, on every listing and every evaluation
    "custom:huge": {"S": json.dumps({
        **GERMANY, "segment_id": "custom:huge", "description": "", "created_at": ago(days=1),
        "rule": {"any": [{"all": [{**GERMANY["rule"], "value": "DE" + "x" * 900}] * 20}] * 20}})},
    "custom:a-number": {"N": "42"},
    "custom:other-id": {"S": json.dumps({**GERMANY, "segment_id": "custom:germany", "description": "",
                                         "created_at": ago(days=1)})},
}


def put_garbage(tables: dict[str, str]) -> None:
    client = dynamo.client()
    for segment_id, definition in GARBAGE.items():
        client.put_item(TableName=tables["SegmentsTable"], Item={
            "segment_id": {"S": CUSTOM_PARTITION}, "sk": {"S": segment_id}, "definition": definition})
    client.put_item(TableName=tables["SegmentsTable"], Item={
        "segment_id": {"S": CUSTOM_PARTITION}, "sk": {"S": "custom:no-definition"}})


def test_unreadable_definitions_are_skipped_logged_counted_and_listed_for_deletion(api, moto_tables, monkeypatch):
    assert api.json("POST", "/segments", GERMANY)[0] == 201
    a_german_customer(api)
    put_garbage(moto_tables)
    unreadable = sorted([*GARBAGE, "custom:no-definition"])
    recorder = Recorder()
    monkeypatch.setattr(segment_storage, "logger", recorder)
    monkeypatch.setattr(segment_storage, "metrics", recorder)

    assert stored_custom(api) == (["custom:germany"], unreadable)
    assert recorder.metric("SegmentDefinitionsSkipped") == len(unreadable)
    logged = sorted(kwargs["extra"]["segment_id"] for called, _, kwargs in recorder.calls if called == "warning")
    assert logged == unreadable

    assert custom_tags(api) == {"custom:germany"}

    index = materialize(moto_tables)
    assert index["segments"]["custom:germany"]["members"] == 1
    assert not {s for s in index["segments"] if s.startswith("custom:")} - {"custom:germany"}
    assert api.json("GET", "/segments/custom:germany/members")[1]["members"][0]["user_id"] == "u-1"

    for segment_id in unreadable:
        assert api.call("DELETE", f"/segments/{segment_id}").status == 204
    assert stored_custom(api) == (["custom:germany"], [])


def test_a_rule_that_raises_for_a_customer_is_skipped_and_the_others_still_apply(api, moto_tables, monkeypatch):
    assert api.json("POST", "/segments", GERMANY)[0] == 201
    assert api.json("POST", "/segments", {"name": "Boom", "rule": {"field": "city", "op": "==",
                                                                    "value": "Boomtown"}})[0] == 201
    a_german_customer(api)
    compare = rules._compare

    def raising(actual: Any, op: str, expected: Any) -> bool:
        if expected == "Boomtown":
            raise RuntimeError("a comparison that raises")
        return compare(actual, op, expected)

    recorder = Recorder()
    monkeypatch.setattr(rules, "_compare", raising)
    monkeypatch.setattr(rules, "logger", recorder)
    monkeypatch.setattr(rules, "metrics", recorder)
    monkeypatch.setattr(rules, "_reported_failures", set())

    assert custom_tags(api) == {"custom:germany"}
    index = materialize(moto_tables)
    assert index["segments"]["custom:germany"]["members"] == 1
    assert "custom:boom" not in index["segments"]

    assert recorder.metric("SegmentRuleFailures") == 2  # on request, and in the nightly run
    logged = [kwargs["extra"]["rule"] for called, _, kwargs in recorder.calls if called == "exception"]
    assert len(logged) == 1 and "Boomtown" in logged[0]  # once per rule, not once per customer
