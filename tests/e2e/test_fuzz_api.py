"""Fuzzing the local stack over HTTP against docs/openapi.json: whatever a client sends, valid or
not, the answer is never a 5xx and always what the document promises (status, content type,
body schema). Bounded: a few examples per operation, so it runs in the suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import schemathesis
from schemathesis.config import SchemathesisConfig
from hypothesis import HealthCheck, settings

from devstack import stack
from devstack.api_client import ApiClient
from devstack.dynamodb_local import free_port
from devstack.local_auth import LocalAuth
from devstack.template import PROJECT_ROOT
from tests.factories import item, purchase

pytestmark = pytest.mark.e2e
# Authentication is not fuzzed here: every request is signed as it is sent (SignedAsBackend), and
# who may call what is tested rule by rule in tests/unit/test_authentication.py.
schema = schemathesis.openapi.from_path(
    PROJECT_ROOT / "docs" / "openapi.json",
    config=SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}}),
)
EXAMPLES_PER_OPERATION = 12


class SignedAsBackend(requests.auth.AuthBase):
    """SigV4 over the request as it will be sent, as the shop's backend signs it."""

    def __init__(self, auth: LocalAuth) -> None:
        self.auth = auth

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        headers = self.auth.sign(request.method, request.url, dict(request.headers),
                                 body.encode() if isinstance(body, str) else body)
        request.headers.update(headers)
        return request


@pytest.fixture(scope="module")
def fuzzed_stack(tmp_path_factory):
    state_dir: Path = tmp_path_factory.mktemp("fuzz")
    state, _ = stack.up(free_port(), state_dir)
    backend = ApiClient.for_stack(state_dir)
    backend.put_items([item(f"sku-{n}") for n in range(5)])
    backend.send_events([purchase(f"p-{n}", user_id=f"u-{n % 3}", item_id=f"sku-{n % 5}") for n in range(12)])
    yield state.url, SignedAsBackend(stack.running(state_dir)[1])
    stack.down(state_dir)


@schema.parametrize()
# Derandomized: the same examples every run, so a failure in CI reproduces; to explore new
# inputs, run it with derandomize=False and more examples.
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_request_gets_a_server_error_or_an_undocumented_answer(case, fuzzed_stack):
    base_url, signed = fuzzed_stack
    case.call_and_validate(base_url=base_url, auth=signed, timeout=60, excluded_checks=[
        # API Gateway answers a method a path lacks with 404, not the 405 this check wants.
        schemathesis.checks.unsupported_method,
        # A body can match the schema and still be refused with 422 naming the field: rules
        # that span fields (a segment condition's "days" with its field) are not in the schema.
        schemathesis.checks.positive_data_acceptance,
    ])
