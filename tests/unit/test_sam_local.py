"""Customer routes under `sam local start-api`: no authorizer runs there, so the functions check a
bearer token themselves against the local issuer's key, only when the SAM CLI says so
(AWS_SAM_LOCAL=true), and never otherwise."""

from __future__ import annotations

import copy
import json
import time

import pytest

from devstack.gateway import LambdaContext, load_handler
from devstack.local_auth import LocalAuth
from devstack.template import PROJECT_ROOT, http_routes
from shared.auth import AccessDenied, CallerKind, authorize
from shared.sam_local import rs256_valid
from tests.conftest import LOCAL_AUTH, TEMPLATE

SAMPLE = json.loads((PROJECT_ROOT / "events" / "recommend" / "get_users_user_id_recommendations.json").read_text())


def as_sam_local_sends(token: str | None, user_id: str = "u-00042") -> dict:
    """The sample event as sam local start-api builds it: no authorizer in requestContext."""
    event = copy.deepcopy(SAMPLE)
    del event["requestContext"]["authorizer"]
    event["pathParameters"] = {"user_id": user_id}
    if token is not None:
        event["headers"]["authorization"] = f"Bearer {token}"
    return event


@pytest.fixture
def sam_local(monkeypatch):
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    monkeypatch.setenv("LOCAL_ISSUER_JWKS", json.dumps(LOCAL_AUTH.jwks()))


def test_under_sam_local_a_local_token_opens_that_customers_routes(sam_local):
    caller = authorize(as_sam_local_sends(LOCAL_AUTH.issue_token("u-00042")), "sub")
    assert (caller.kind, caller.user_id) == (CallerKind.CUSTOMER, "u-00042")


def test_under_sam_local_the_function_answers_with_recommendations(sam_local, moto_tables):
    route = next(r for r in http_routes(TEMPLATE) if r.route_key == SAMPLE["routeKey"])
    handler = load_handler(route)

    result = handler(as_sam_local_sends(LOCAL_AUTH.issue_token("u-00042")), LambdaContext(route.function))
    assert result["statusCode"] == 200, result
    refused = handler(as_sam_local_sends(None), LambdaContext(route.function))
    assert refused["statusCode"] == 401


@pytest.mark.parametrize("why, token, user_id", [
    ("another customer's id", lambda: LOCAL_AUTH.issue_token("u-1"), "u-00042"),
    ("expired", lambda: LOCAL_AUTH.issue_token("u-00042", now=time.time() - 7200), "u-00042"),
    ("another key", lambda: LocalAuth.create().issue_token("u-00042"), "u-00042"),
    ("another audience", lambda: LOCAL_AUTH.issue_token("u-00042", aud="other-app"), "u-00042"),
    ("edited claims", lambda: edited(LOCAL_AUTH.issue_token("u-1"), sub="u-00042"), "u-00042"),
    ("not a JWT", lambda: "not-a-token", "u-00042"),
])
def test_under_sam_local_bad_tokens_are_refused(sam_local, why, token, user_id):
    with pytest.raises(AccessDenied) as denied:
        authorize(as_sam_local_sends(token(), user_id), "sub")
    assert denied.value.status in (401, 403), why


@pytest.mark.parametrize("value", [None, "", "false", "True", "1", "yes"])
def test_without_the_sam_clis_variable_no_function_checks_tokens_itself(monkeypatch, value):
    """On AWS, and anywhere AWS_SAM_LOCAL is not exactly "true", a request no authorizer vouched
    for stays unauthenticated, whatever token it carries and whatever key is configured."""
    monkeypatch.setenv("LOCAL_ISSUER_JWKS", json.dumps(LOCAL_AUTH.jwks()))
    if value is None:
        monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)
    else:
        monkeypatch.setenv("AWS_SAM_LOCAL", value)
    with pytest.raises(AccessDenied) as denied:
        authorize(as_sam_local_sends(LOCAL_AUTH.issue_token("u-00042")), "sub")
    assert denied.value.status == 401


def test_the_rs256_check_agrees_with_the_cryptography_library():
    token = LOCAL_AUTH.issue_token("u-1")
    header, claims, signature = token.split(".")
    from devstack.local_auth import _unb64

    key = LOCAL_AUTH.signing_key.public_key().public_numbers()
    assert rs256_valid(f"{header}.{claims}".encode(), _unb64(signature), key.n, key.e)
    assert not rs256_valid(f"{header}.{claims}x".encode(), _unb64(signature), key.n, key.e)
    broken = bytearray(_unb64(signature))
    broken[-1] ^= 1
    assert not rs256_valid(f"{header}.{claims}".encode(), bytes(broken), key.n, key.e)


def edited(token: str, **claims) -> str:
    import base64

    from devstack.local_auth import _b64

    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return f"{header}.{_b64(json.dumps({**body, **claims}).encode())}.{signature}"


def test_the_template_declares_the_key_variable_empty_so_sam_local_can_set_it():
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["LOCAL_ISSUER_JWKS"] == "" and variables["VISITOR_TOKEN_SECRET"] == ""
    assert "AWS_SAM_LOCAL" not in json.dumps(TEMPLATE)  # nothing in the deployment can switch it on
