"""Who may call what: every route needs a caller API Gateway vouched for; a signed-in customer
reaches only their own data; the shop's backend (SigV4) reaches everything."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest

from devstack.api_client import bearer
from devstack.gateway import Gateway
from devstack.local_auth import LOCAL_AUDIENCE, LocalAuth, _b64
from devstack.template import http_routes
from shared.auth import CLIENT_ROUTES, Access
from tests.conftest import LOCAL_AUTH, TEMPLATE, Api
from tests.factories import item, purchase

ROUTES = http_routes(TEMPLATE)
DEV_SECRET = {"x-devstack-secret": LOCAL_AUTH.dev_secret}  # what opens the local stack's /dev/ helpers


def concrete(path: str, user_id: str = "u-1") -> str:
    return (path.replace("{user_id}", user_id).replace("{item_id}", "sku-1").replace("{visitor_id}", "v_1")
            .replace("{segment_id}", "seg-1").replace("{version}", "v1"))


def with_token(api: Api, token: str) -> Api:
    return Api(api.gateway, bearer(token))


@pytest.mark.parametrize("route", [r for r in ROUTES if CLIENT_ROUTES.get(r.route_key) is not Access.PUBLIC],
                         ids=lambda r: r.route_key)
def test_every_route_but_the_public_ones_refuses_a_caller_without_credentials(api, route):
    status, body = api.anonymous().json(route.method, concrete(route.path), {})
    assert status == 401, body


def test_the_rules_name_only_routes_that_exist():
    assert set(CLIENT_ROUTES) <= {r.route_key for r in ROUTES}


def test_a_customer_reads_their_own_recommendations_and_segments(api):
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-1")]})
    customer = api.as_customer("u-1")

    for path in ("/users/u-1/recommendations", "/users/u-1/segments", "/users/u-1", "/users/u-1/export"):
        status, body = customer.json("GET", path)
        assert status == 200, (path, body)
    assert customer.json("POST", "/users/u-1/rank", {"item_ids": ["sku-1", "sku-2"]})[0] == 200


@pytest.mark.parametrize("route", [r for r in ROUTES if CLIENT_ROUTES.get(r.route_key) is Access.CUSTOMER],
                         ids=lambda r: r.route_key)
def test_a_customer_may_not_touch_another_customers_data(api, route):
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-2")]})

    status, body = api.as_customer("u-1").json(route.method, concrete(route.path, "u-2"), {})

    assert status == 403, body
    assert body["error"]["code"] == "forbidden"
    assert api.json("GET", "/users/u-2")[1]["summary"]["purchase_count"] == 1  # not erased


SHOP_ROUTES = [r for r in ROUTES if r.route_key not in CLIENT_ROUTES]


@pytest.mark.parametrize("route", SHOP_ROUTES, ids=lambda r: r.route_key)
def test_the_shops_own_routes_do_not_exist_for_customers(api, route):
    """They are not on the public API: API Gateway answers 404 before any function runs."""
    status, body = api.as_customer("u-1").json(route.method, concrete(route.path), {})
    assert (status, body) == (404, {"message": "Not Found"})


def test_a_customer_cannot_ingest_events_even_about_themselves(api):
    status, _ = api.as_customer("u-1").json("POST", "/events", {"events": [purchase("p-1", user_id="u-1")]})

    assert status == 404
    assert api.json("GET", "/users/u-1")[0] == 404  # nothing was stored


def with_every_route_on_the_public_api(template: dict) -> dict:
    """template.yaml as it would be if someone put the shop's routes on the public API by mistake."""
    template = copy.deepcopy(template)
    for function in template["Resources"].values():
        events = function.get("Properties", {}).get("Events") or {}
        for name, event in list(events.items()):
            if event["Type"] == "HttpApi" and event["Properties"]["ApiId"] == {"Ref": "TrustedApi"}:
                events[f"{name}Public"] = {"Type": "HttpApi",
                                           "Properties": {**event["Properties"], "ApiId": {"Ref": "PublicApi"}}}
    return template


@pytest.mark.parametrize("route", SHOP_ROUTES, ids=lambda r: r.route_key)
def test_a_shop_route_put_on_the_public_api_by_mistake_still_refuses_customers(moto_tables, route):
    """shared/auth.py is the second line: the function refuses a customer whatever the routing."""
    careless = Api(Gateway(with_every_route_on_the_public_api(TEMPLATE), [], LOCAL_AUTH))

    status, body = careless.as_customer("u-1").json(route.method, concrete(route.path, "u-1"), {})

    assert status == 403, body
    assert body["error"]["code"] == "forbidden"


def test_customers_and_anyone_read_the_catalog_and_popular_items(api):
    attributes = {k: v for k, v in item("sku-1").items() if k != "item_id"}
    assert api.json("PUT", "/items/sku-1", attributes)[0] == 200
    customer = api.as_customer("u-1")

    assert customer.json("GET", "/items/sku-1")[0] == 200
    assert customer.json("GET", "/popular")[0] == 200
    assert customer.json("GET", "/items/sku-1/similar")[0] in (200, 404)  # 404: no model yet, not 403
    assert api.anonymous().json("GET", "/items/sku-1")[0] == 200


def test_a_customer_can_object_and_be_forgotten_by_themselves(api):
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-1")]})
    customer = api.as_customer("u-1")

    assert customer.json("PUT", "/users/u-1/consent", {"personalization": False})[0] == 200
    assert customer.json("DELETE", "/users/u-1")[0] == 200
    forgotten = api.json("GET", "/users/u-1")[1]  # only the suppression record, with the objection
    assert forgotten["erased_at"] and forgotten["summary"]["purchase_count"] == 0
    assert forgotten["consent"]["personalization"]["granted"] is False
    assert forgotten["consent"]["personalization"]["by"] == "customer"


def test_an_expired_token_is_refused_with_the_reason(api):
    expired = LOCAL_AUTH.issue_token("u-1", expires_in=60, now=datetime.now(timezone.utc).timestamp() - 3600)

    response = with_token(api, expired).call("GET", "/users/u-1/recommendations")

    assert response.status == 401
    assert "expired" in response.headers["www-authenticate"]


def test_a_token_signed_by_another_key_is_refused(api):
    impostor = dataclasses.replace(LocalAuth.create(), key_id=LOCAL_AUTH.key_id)  # same issuer and key id
    assert with_token(api, impostor.issue_token("u-1")).call("GET", "/users/u-1").status == 401


def test_a_token_whose_claims_were_edited_is_refused(api):
    header, payload, signature = LOCAL_AUTH.issue_token("u-1").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    edited = f"{header}.{_b64(json.dumps({**claims, 'sub': 'u-2'}).encode())}.{signature}"

    assert with_token(api, edited).call("GET", "/users/u-2").status == 401


def test_an_unsigned_token_is_refused(api):
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"sub": "u-1", "iss": LOCAL_AUTH.issuer, "aud": LOCAL_AUDIENCE,
                               "exp": 4_102_444_800}).encode())
    assert with_token(api, f"{header}.{payload}.").call("GET", "/users/u-1").status == 401


def test_a_token_for_another_application_is_refused(api):
    token = LOCAL_AUTH.issue_token("u-1", aud="some-other-app")
    assert with_token(api, token).call("GET", "/users/u-1").status == 401


def test_a_token_without_the_user_id_claim_is_forbidden(api, monkeypatch):
    monkeypatch.setenv("USER_ID_CLAIM", "custom:customer_id")
    from shared.config import get_settings

    get_settings.cache_clear()
    try:
        status, body = api.as_customer("u-1").json("GET", "/users/u-1/recommendations")
        assert status == 403
        assert "custom:customer_id" in body["error"]["message"]
        token = LOCAL_AUTH.issue_token("cognito-sub-123", **{"custom:customer_id": "u-1"})
        assert with_token(api, token).json("GET", "/users/u-1/segments")[0] == 200
    finally:
        get_settings.cache_clear()


def test_a_backend_signature_with_the_wrong_secret_is_refused(api):
    wrong = dataclasses.replace(LOCAL_AUTH, secret_access_key="not-the-secret")
    response = Api(api.gateway, lambda m, u, h, b: wrong.sign(m, u, h, b)).call("GET", "/segments")
    assert response.status == 403


def test_a_backend_signature_does_not_carry_over_to_another_body(api):
    signed = LOCAL_AUTH.sign("POST", "http://local/events", {"content-type": "application/json", "host": "local"},
                             json.dumps({"events": [purchase("p-1")]}).encode())
    forged_body = json.dumps({"events": [purchase("p-1", price=0.01)]}).encode()

    assert api.gateway.handle("POST", "/events", signed, forged_body).status == 403
    assert api.json("GET", "/users/u-1")[0] == 404


def test_a_backend_signature_from_ten_minutes_ago_is_refused(api):
    then = datetime.now(timezone.utc) - timedelta(minutes=10)
    signed = LOCAL_AUTH.sign("GET", "http://local/segments", {"host": "local"}, b"", now=then)

    response = api.gateway.handle("GET", "/segments", signed, b"")

    assert response.status == 403
    assert "expired" in json.loads(response.body)["message"].lower()


def test_the_local_stacks_sign_in_endpoint_gives_a_token_for_that_customer_only(api):
    anonymous = api.anonymous()
    status, body = anonymous.json("POST", "/dev/token", {"user_id": "u-1"}, headers=DEV_SECRET)
    assert status == 200

    customer = with_token(api, body["token"])
    assert customer.json("GET", "/users/u-1/segments")[0] == 200
    assert customer.json("GET", "/users/u-2/segments")[0] == 403
    assert anonymous.json("POST", "/dev/token", {}, headers=DEV_SECRET)[0] == 400


def test_the_local_stacks_backend_proxy_calls_as_the_shops_backend(api):
    anonymous = api.anonymous()
    status, _ = anonymous.json("POST", "/dev/trusted/events", {"events": [purchase("p-1", user_id="u-1")]},
                               headers=DEV_SECRET)
    assert status == 200
    assert anonymous.json("GET", "/dev/trusted/users/u-1", headers=DEV_SECRET)[1]["summary"]["purchase_count"] == 1
