"""Custom segments: rule validation with clear errors, evaluation, and the API on moto."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.history import HistoryEvent
from shared.segments.rules import CustomSegment, CustomSegmentIn
from shared.segments.tags import segment_customer
from shared.users import PurchaseSummary, User
from tests.factories import ago, purchase

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
KITCHEN_FANS_DE = {"name": "Kitchen fans in Germany",
                   "rule": {"all": [{"field": "country", "op": "==", "value": "DE"},
                                    {"field": "purchases_in_category", "category": "kitchen", "days": 30,
                                     "op": ">=", "value": 2}]}}


def definition(body: dict) -> CustomSegment:
    parsed = CustomSegmentIn.model_validate(body)
    return CustomSegment(segment_id=parsed.segment_id, name=parsed.name, description=parsed.description,
                         rule=parsed.rule, created_at=NOW)


def bought(item, days_ago):
    return HistoryEvent(item, "purchase", 1, (NOW - timedelta(days=days_ago)).timestamp(), "web", 10.0, "EUR")


def custom_names(country, history, *definitions):
    profile = User(user_id="u-1", country=country, summary=PurchaseSummary(
        purchase_count=len(history), spend={"EUR": 10.0 * len(history)},
        last_purchase_at=NOW.isoformat(), first_purchase_at=NOW.isoformat()))
    categories = {"k1": "kitchen", "k2": "kitchen", "g1": "garden"}
    _, _, tags = segment_customer(profile, history, categories, {}, NOW, definitions)
    return [t.name for t in tags if t.family == "custom"]


def test_a_rule_with_a_time_window_matches_only_inside_the_window():
    fans = definition(KITCHEN_FANS_DE)
    assert custom_names("DE", [bought("k1", 3), bought("k2", 20)], fans) == ["Kitchen fans in Germany"]
    assert custom_names("DE", [bought("k1", 3), bought("k2", 40)], fans) == []  # one is outside 30 days
    assert custom_names("FR", [bought("k1", 3), bought("k2", 20)], fans) == []


def test_any_of_and_tags_of_other_families_can_be_combined():
    rule = definition({"name": "Garden or new", "rule": {"any": [
        {"field": "purchases_in_category", "category": "garden", "days": 365, "op": ">=", "value": 1},
        {"field": "tag", "op": "==", "value": "New"}]}})
    assert custom_names("DE", [bought("g1", 100)], rule) == ["Garden or new"]
    assert custom_names("DE", [bought("k1", 1)], rule) == ["Garden or new"]  # lifecycle New


@pytest.mark.parametrize(("rule", "message"), [
    ({"field": "purchases_in_category", "category": "kitchen", "op": ">=", "value": 2}, "needs 'days'"),
    ({"field": "orders_total", "op": ">=", "value": "many"}, "is a number"),
    ({"field": "country", "op": "in", "value": "DE"}, "needs a list"),
    ({"field": "attribute", "op": "==", "value": "x"}, "'attribute'"),
    ({"field": "colour", "op": "==", "value": "red"}, "field"),
    ({"all": []}, "all"),
])
def test_invalid_rules_are_refused_through_the_api_naming_the_part_at_fault(api, rule, message):
    status, body = api.json("POST", "/segments", {"name": "Broken", "rule": {"all": [rule]} if "all" not in rule else rule})
    assert status == 422
    assert any(f["field"].startswith("rule") for f in body["error"]["fields"])
    assert message in " ".join(f["field"] + " " + f["message"] for f in body["error"]["fields"])


def test_custom_segments_are_created_listed_applied_and_deleted(api):
    status, created = api.json("POST", "/segments", KITCHEN_FANS_DE)
    assert (status, created["segment_id"]) == (201, "custom:kitchen-fans-in-germany")
    assert api.json("POST", "/segments", KITCHEN_FANS_DE)[0] == 409

    api.json("PUT", "/items/k1", {"title": "Pan", "category": "kitchen"})
    api.json("PUT", "/users/u-1", {"country": "DE"})
    api.json("POST", "/events", {"events": [purchase("p-1", item_id="k1", timestamp=ago(days=2)),
                                            purchase("p-2", item_id="k1", timestamp=ago(days=5))]})
    tags = api.json("GET", "/users/u-1/segments")[1]["tags"]
    assert "custom:kitchen-fans-in-germany" in {t["segment_id"] for t in tags}
    assert [c["name"] for c in api.json("GET", "/segments")[1]["custom"]] == ["Kitchen fans in Germany"]

    assert api.call("DELETE", "/segments/custom:kitchen-fans-in-germany").status == 204
    assert api.json("DELETE", "/segments/custom:kitchen-fans-in-germany")[0] == 404
    assert "custom:kitchen-fans-in-germany" not in {t["segment_id"] for t in api.json("GET", "/users/u-1/segments")[1]["tags"]}


@pytest.mark.parametrize("rule, field", [
    ({"field": "tag", "op": ">=", "value": "Champions"}, "rule.op"),  # it would have meant: not Champions
    ({"all": [{"field": "country", "op": "==", "value": "DE"},
              {"field": "country", "op": "contains", "value": "DE"}]}, "rule.all[1].op"),
    ({"any": [{"field": "city", "op": "==", "value": 5}]}, "rule.any[0].value"),
    ({"field": "country", "op": "==", "value": ["DE"]}, "rule.value"),
    ({"field": "region", "op": "in", "value": []}, "rule.value"),
    ({"field": "attribute", "attribute": "size", "op": ">=", "value": ["M"]}, "rule.value"),
    ({"field": "attribute", "attribute": "interests", "op": "contains", "value": ["tea"]}, "rule.value"),
])
def test_a_condition_that_could_only_match_no_one_or_the_wrong_customers_is_refused(api, rule, field):
    status, body = api.json("POST", "/segments", {"name": "Odd", "rule": rule})

    assert status == 422 and [f["field"] for f in body["error"]["fields"]] == [field], body


@pytest.mark.parametrize("rule", [
    {"field": "tag", "op": "!=", "value": ["lifecycle:churned", "Lapsing"]},  # none of them
    {"field": "tag", "op": "in", "value": ["Champions", "Loyal"]},
    {"field": "attribute", "attribute": "interests", "op": "contains", "value": "tea"},
    {"field": "attribute", "attribute": "size", "op": ">=", "value": 40},
])
def test_conditions_that_mean_what_they_say_are_accepted(api, rule):
    assert api.json("POST", "/segments", {"name": "Fine", "rule": rule})[0] == 201


@pytest.mark.parametrize("rule, field", [
    ({"all": [{"field": "country", "op": "==", "value": "DE"},
              {"field": "purchases_in_category", "category": "kitchen", "op": ">=", "value": 2}]}, "rule.all[1]"),
    ({"all": [{"any": [{"field": "city", "op": "==", "value": "Köln"}, {"field": "nope", "op": "==", "value": 1}]}]},
     "rule.all[0].any[1].field"),
    ({"field": "country", "op": "==", "value": {"a": 1}}, "rule.value"),
])
def test_errors_name_the_part_as_the_client_wrote_it(api, rule, field):
    """Not rule.all.all[1].condition, nor rule.condition.value.bool: pydantic's tags of a rule's shape are left out."""
    status, body = api.json("POST", "/segments", {"name": "Odd", "rule": rule})

    assert status == 422 and [f["field"] for f in body["error"]["fields"]] == [field], body
