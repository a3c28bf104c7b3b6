"""Who may call: a rotated visitor key stops the old tokens on warm instances too, a token altered
in any way is refused, and a request context of odd shapes is refused, never a crash."""

from __future__ import annotations

import base64
import time

import boto3
import pytest

from devstack.api_client import bearer
from shared.auth import AccessDenied, caller_of
from shared.config import get_settings
from shared.errors import StorageUnavailable
from shared.storage import secrets
from shared.visitors import InvalidVisitorToken, VisitorTokens
from tests.conftest import Api, local_gateway
from tests.factories import event

BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def view(event_id: str) -> dict:
    entry = event(event_id, item_id="sku-1")
    del entry["user_id"]
    return entry


@pytest.fixture
def key_in_secrets_manager(moto_tables, monkeypatch):
    manager = boto3.client("secretsmanager")
    arn = manager.create_secret(Name="visitor-key", SecretString="o" * 64)["ARN"]
    monkeypatch.setenv("VISITOR_TOKEN_SECRET_ARN", arn)
    get_settings.cache_clear()
    secrets._kept.clear()
    clock = [1000.0]
    monkeypatch.setattr(secrets.time, "monotonic", lambda: clock[0])
    yield manager, arn, clock
    secrets._kept.clear()
    get_settings.cache_clear()


def test_a_rotated_visitor_key_stops_the_old_tokens_within_minutes_on_a_warm_instance(key_in_secrets_manager):
    manager, arn, clock = key_in_secrets_manager
    api = Api(local_gateway())
    status, body = api.anonymous().json("POST", "/visitors")  # the key is read: the instance is warm
    assert status == 201, body
    visitor_id, token = body["visitor_id"], body["token"]
    manager.put_secret_value(SecretId=arn, SecretString="n" * 64)  # leaked, so rotated

    as_visitor = Api(api.gateway, bearer(token))
    assert as_visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": [view("e-1")]})[0] == 200
    clock[0] += secrets.KEY_KEPT_SECONDS + 1

    assert as_visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": [view("e-2")]})[0] == 401
    status, body = api.anonymous().json("POST", "/visitors")
    fresh = VisitorTokens(b"n" * 64).verify(body["token"], time.time())  # signed with the new key
    assert status == 201 and fresh == body["visitor_id"]


def test_a_secrets_manager_fault_when_the_key_is_read_again_keeps_the_key_read_before(key_in_secrets_manager,
                                                                                         monkeypatch):
    _, arn, clock = key_in_secrets_manager
    first = secrets.visitor_tokens(arn, "")
    clock[0] += secrets.KEY_KEPT_SECONDS + 1

    def unavailable(*_):
        raise StorageUnavailable("throttled")

    monkeypatch.setattr(secrets, "_read", unavailable)
    assert secrets.visitor_tokens(arn, "") is first
    clock[0] += secrets.REREAD_AFTER_FAULT_SECONDS + 1
    monkeypatch.undo()
    monkeypatch.setattr(secrets.time, "monotonic", lambda: clock[0])
    assert secrets.visitor_tokens(arn, "") is not first  # read again once the fault is over


def altered_signatures(token: str) -> list[str]:
    """The token with the last character of its signature replaced by each other base64url
    character that decodes to the same bytes (its unused low bits differ)."""
    head, _, signature = token.rpartition(".")
    decoded = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return [f"{head}.{signature[:-1]}{c}" for c in BASE64URL if c != signature[-1]
            and base64.urlsafe_b64decode(signature[:-1] + c + "=" * (-len(signature) % 4)) == decoded]


def test_a_token_whose_signature_is_spelled_otherwise_is_refused(api):
    status, body = api.anonymous().json("POST", "/visitors")
    visitor_id, token = body["visitor_id"], body["token"]
    altered = altered_signatures(token)
    assert len(altered) == 3  # 43 characters for 32 bytes: the last one's two low bits are unused

    for variant in altered:
        with pytest.raises(InvalidVisitorToken):
            VisitorTokens(get_settings().visitor_token_secret.encode()).verify(variant, time.time())
        assert Api(api.gateway, bearer(variant)).json("GET", f"/visitors/{visitor_id}/recommendations")[0] == 401


@pytest.mark.parametrize("authorizer", [{"jwt": {"claims": ["sub"]}}, {"jwt": {"claims": "sub=u-1"}}, {"jwt": "claims"},
                                        {"iam": "arn:aws:iam::1:role/x"}, "authorizer"])
def test_a_request_context_of_odd_shapes_is_refused_as_no_credentials(authorizer):
    request = {"routeKey": "GET /users/{user_id}/recommendations", "pathParameters": {"user_id": "u-1"},
               "headers": {}, "requestContext": {"authorizer": authorizer}}

    with pytest.raises(AccessDenied) as refused:
        caller_of(request, "sub")

    assert refused.value.status == 401
