"""Ids in paths are percent-encoded by clients and decoded once, as API Gateway decodes them:
what is stored, read, checked against the caller's token and erased is the id itself."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import quote

import pytest

from devstack.gateway import LambdaContext, load_handler
from devstack.local_auth import trusted_context
from devstack.template import PROJECT_ROOT, http_routes
from tests.conftest import TEMPLATE
from tests.factories import item, purchase

# (the id, how a client writes it in the path)
IDS = [
    ("a b", "a%20b"),
    ("a/b", "a%2Fb"),
    ("a#b", "a%23b"),
    ("a+b", "a+b"),  # a literal '+' in a path is a plus, not a space
    ("100%", "100%25"),
    ("a%41", "a%2541"),  # decoded once: not "aA"
    ("a?b", "a%3Fb"),
    ("ü/€ 𝄞+%#?", quote("ü/€ 𝄞+%#?", safe="+")),
]
PROFILE = {"country": "ES", "city": "Sevilla"}
CATALOG_ENTRY = {k: v for k, v in item("x").items() if k != "item_id"}


def test_a_profile_put_at_an_encoded_id_is_read_back_under_the_decoded_id(api):
    assert api.json("PUT", "/users/jos%C3%A9", PROFILE)[0] == 200

    status, body = api.json("GET", "/users/jos%C3%A9")

    assert status == 200, body
    assert (body["user_id"], body["city"]) == ("josé", "Sevilla")


def test_a_customer_whose_id_needs_encoding_exports_their_own_data(api):
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="josé")]})

    status, body = api.as_customer("josé").json("GET", "/users/jos%C3%A9/export")

    assert status == 200, body
    assert [e["event_id"] for e in body["events"]] == ["p-1"]


def test_erasing_an_encoded_id_erases_that_customer(api):
    api.json("PUT", "/users/jos%C3%A9", PROFILE)
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="josé")]})

    assert api.json("DELETE", "/users/jos%C3%A9")[0] == 200

    status, held = api.json("GET", "/users/jos%C3%A9/export")
    assert status == 200 and held["user_id"] == "josé"
    assert held["events"] == []
    assert (held["profile"] or {}).get("city") is None


@pytest.mark.parametrize("user_id, segment", IDS, ids=[segment for _, segment in IDS])
def test_any_id_round_trips_through_the_gateway(api, user_id, segment):
    assert api.json("PUT", f"/users/{segment}", PROFILE)[0] == 200
    assert api.json("PUT", f"/items/{segment}", CATALOG_ENTRY)[0] == 200

    profile = api.json("GET", f"/users/{segment}")
    catalog_entry = api.json("GET", f"/items/{segment}")

    assert profile[0] == 200 and profile[1]["user_id"] == user_id, profile
    assert catalog_entry[0] == 200 and catalog_entry[1]["item_id"] == user_id, catalog_entry


def sample_event(name: str, parameters: dict[str, str], body: Any = None) -> dict[str, Any]:
    """events/ingest/<name>.json for these ids, sent by the shop's backend, as API Gateway
    delivers it to the function: pathParameters and rawPath decoded, rawPath cut at a '?'."""
    event = json.loads((PROJECT_ROOT / "events" / "ingest" / f"{name}.json").read_text())
    path = event["routeKey"].split(" ", 1)[1]
    for parameter, value in parameters.items():
        path = path.replace(f"{{{parameter}}}", value)
    path = path.split("?")[0]
    event.update(rawPath=path, pathParameters=parameters)
    event["requestContext"]["http"]["path"] = path
    event["requestContext"]["authorizer"] = trusted_context()
    if body is not None:
        event["body"] = json.dumps(body)
    return event


def as_customer(event: dict[str, Any], user_id: str) -> dict[str, Any]:
    signed_in = copy.deepcopy(event)
    signed_in["requestContext"]["authorizer"] = {"jwt": {"claims": {"sub": user_id}, "scopes": None}}
    return signed_in


@pytest.fixture
def ingest(moto_tables):
    route = next(r for r in http_routes(TEMPLATE) if r.function == "IngestFunction")
    handler = load_handler(route)
    return lambda event: handler(event, LambdaContext(function_name="IngestFunction"))


@pytest.mark.parametrize("user_id", [user_id for user_id, _ in IDS] + ["josé"])
def test_any_id_round_trips_through_the_events_api_gateway_sends(ingest, user_id):
    put_user = ingest(sample_event("put_users_user_id", {"user_id": user_id}, PROFILE))
    put_item = ingest(sample_event("put_items_item_id", {"item_id": user_id}, CATALOG_ENTRY))
    assert (put_user["statusCode"], put_item["statusCode"]) == (200, 200), (put_user, put_item)

    read = sample_event("get_users_user_id", {"user_id": user_id})
    profile = ingest(read)
    own_profile = ingest(as_customer(read, user_id))
    catalog_entry = ingest(sample_event("get_items_item_id", {"item_id": user_id}))

    for result in (profile, own_profile, catalog_entry):
        assert result["statusCode"] == 200, result
    assert json.loads(profile["body"])["user_id"] == json.loads(own_profile["body"])["user_id"] == user_id
    assert json.loads(catalog_entry["body"])["item_id"] == user_id


@pytest.mark.parametrize(("method", "path"), [("PUT", "/users/u-1%00purchases"), ("GET", "/users/u-1%00purchases"),
                                              ("DELETE", "/users/u-1%00purchases")])
def test_an_id_with_a_nul_cannot_reach_a_customers_bought_set(api, method, path):
    """The bought set of u-1 is the users-table item "u-1\\x00purchases": no path may name it."""
    assert api.json("POST", "/events", {"events": [purchase("p-1", "u-1", "sku-1")]})[0] == 200

    status, body = api.json(method, path, PROFILE if method == "PUT" else None)

    assert status == 422 and body["error"]["fields"][0]["field"] == "user_id"
    assert api.json("GET", "/users/u-1")[1]["summary"]["orders"] == 1
