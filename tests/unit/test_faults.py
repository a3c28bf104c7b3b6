"""DynamoDB throttling or outages during ingest: a 503 that says retry, and nothing lost."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from shared.storage import dynamo
from tests.factories import purchase


class FaultInjector:
    """Makes the (moto) client's transactions fail for chosen users, as a throttled table would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing_users: set[str] = set()
        self.error: Exception | None = None
        client = dynamo.client()
        real_transact = client.transact_write_items

        def transact(**kwargs: Any) -> Any:
            puts = [action["Put"]["Item"] for action in kwargs["TransactItems"] if "Put" in action]
            if self.error and {item["user_id"]["S"] for item in puts} & self.failing_users:
                raise self.error
            return real_transact(**kwargs)

        monkeypatch.setattr(client, "transact_write_items", transact)

    def fail(self, users: set[str], error: Exception) -> None:
        self.failing_users, self.error = users, error

    def heal(self) -> None:
        self.error = None


def throttled() -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                       "TransactWriteItems")


@pytest.fixture
def faults(monkeypatch, moto_tables) -> FaultInjector:
    monkeypatch.setattr(dynamo, "backoff_delays", lambda attempts, **_: [0.0] * attempts)
    return FaultInjector(monkeypatch)


@pytest.mark.parametrize("error", [throttled(), EndpointConnectionError(endpoint_url="http://dynamodb")])
def test_a_dynamodb_fault_is_a_503_with_retry_after_and_a_json_body(api, faults, error):
    faults.fail({"u-1"}, error)

    response = api.call("POST", "/events", {"events": [purchase("p-1")]})

    assert response.status == 503
    assert int(response.headers["retry-after"]) >= 1
    assert b"Traceback" not in response.body
    assert b"storage_unavailable" in response.body


def test_a_client_retry_after_a_partial_failure_stores_everything_exactly_once(api, faults):
    batch = [purchase("p-1", user_id="healthy", price=7), purchase("p-2", user_id="unlucky", price=9)]
    faults.fail({"unlucky"}, throttled())
    assert api.call("POST", "/events", {"events": batch}).status == 503

    faults.heal()
    status, body = api.json("POST", "/events", {"events": batch})

    assert (status, body["accepted"], body["duplicates"]) == (200, 1, 1)
    for user, spend in (("healthy", 7), ("unlucky", 9)):
        got = api.json("GET", f"/users/{user}")
        summary = got[1]["summary"] if got[0] == 200 else pytest.fail(str(got))
        assert (summary["purchase_count"], float(summary["spend"]["EUR"])) == (1, spend)
