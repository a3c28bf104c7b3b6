"""A visitor's own events personalize their next answer, and a customer who signs in on the
visitor's device gets recommendations from both histories: on DynamoDB Local with a trained model."""

from __future__ import annotations

import pytest

from devstack.api_client import bearer
from tests.conftest import Api
from tests.factories import event
from tests.integration.test_serving import ITEMS, SHOP, api, served  # noqa: F401 - the trained shop's fixtures

pytestmark = pytest.mark.integration
KITCHEN = [item_id for item_id, item in ITEMS.items() if item["category"] == "kitchen"][:3]


def new_visitor(api: Api) -> tuple[str, str, Api]:
    status, body = api.anonymous().json("POST", "/visitors")
    assert status == 201, body
    return body["visitor_id"], body["token"], Api(api.gateway, bearer(body["token"]))


def views(items: list[str]) -> dict:
    return {"events": [{k: v for k, v in event(f"view-{i}", item_id=i).items() if k != "user_id"} for i in items]}


def test_a_visitors_own_views_personalize_their_next_recommendations(api):
    visitor_id, _, visitor = new_visitor(api)
    assert visitor.json("GET", f"/visitors/{visitor_id}/recommendations")[1]["personalized"] is False

    assert visitor.json("POST", f"/visitors/{visitor_id}/events", views(KITCHEN))[0] == 200
    status, answer = visitor.json("GET", f"/visitors/{visitor_id}/recommendations?limit=5")

    assert status == 200 and answer["user_id"] == visitor_id
    assert answer["personalized"] is True, answer["strategy"]
    assert any(ITEMS[k]["title"] in r["reason"]["text"] for r in answer["items"] for k in KITCHEN)


def test_after_linking_a_customers_recommendations_use_the_visitors_history(api):
    visitor_id, token, visitor = new_visitor(api)
    visitor.json("POST", f"/visitors/{visitor_id}/events", views(KITCHEN))
    customer = api.as_customer("brand-new-customer")
    assert customer.json("GET", "/users/brand-new-customer/recommendations")[1]["personalized"] is False

    assert customer.json("POST", "/users/brand-new-customer/visitors", {"visitor_token": token})[0] == 200
    answer = customer.json("GET", "/users/brand-new-customer/recommendations?limit=5")[1]

    assert answer["personalized"] is True
    assert any(ITEMS[k]["title"] in r["reason"]["text"] for r in answer["items"] for k in KITCHEN)
