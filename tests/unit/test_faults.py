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


@pytest.fixture
def model_bucket_down(monkeypatch) -> dict[str, bool]:
    """S3 answers SlowDown (past botocore's own retries) while `down` is set."""
    from botocore.client import BaseClient

    original, state = BaseClient._make_api_call, {"down": True}

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if state["down"] and client.meta.service_model.service_name == "s3":
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    return state


def test_functions_that_start_while_the_model_bucket_does_not_answer_say_retry_not_no_model(api, model_bucket_down,
                                                                                          monkeypatch):
    from shared import refresh

    monkeypatch.setattr(refresh, "FAULT_RETRY_SECONDS", 0)  # the retry interval has passed when asked again
    routes = ["/popular", "/users/u-1/recommendations", "/users/u-1/segments"]
    for path in routes:
        response = api.call("GET", path)
        # Before: 200 with no items, "popular:no_model", cacheable by anyone for five minutes.
        assert response.status == 503, path
        assert int(response.headers["retry-after"]) >= 1 and b"storage_unavailable" in response.body
        assert "public" not in response.headers.get("cache-control", "")

    model_bucket_down["down"] = False
    assert [api.call("GET", path).status for path in routes] == [200, 200, 200]


@pytest.mark.parametrize("code", ["AccessDeniedException", "ResourceNotFoundException", "KMSAccessDeniedException"])
def test_an_item_write_the_table_or_role_refuses_is_a_503_never_the_clients_fault(api, monkeypatch, code):
    """A 4xx tells a catalog feed not to send the item again: it was answered 413 or 422 for
    what is a fault of the deployment, and the item was silently never stored."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "PutItem" and params.get("Item", {}).get("item_id", {}).get("S") == "sku-refused":
            raise ClientError({"Error": {"Code": code, "Message": "refused"}}, operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    one = api.call("PUT", "/items/sku-refused", {"title": "Chair", "category": "seating"})
    batch = api.call("POST", "/items", {"items": [{"item_id": "sku-refused", "title": "Chair", "category": "seating"},
                                                  {"item_id": "sku-ok", "title": "Desk", "category": "tables"}]})

    assert (one.status, batch.status) == (503, 503) and b"storage_unavailable" in batch.body
    assert api.json("GET", "/items/sku-ok")[0] == 200  # the neighbour is stored; the feed resends both


def test_an_item_sent_twice_in_one_batch_is_its_last_entry_however_the_puts_are_timed(api, monkeypatch):
    """The puts run in parallel: a slow put of the first entry once landed last and stayed."""
    import time

    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "PutItem" and params.get("Item", {}).get("title", {}).get("S") == "first":
            time.sleep(0.3)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    status, body = api.json("POST", "/items", {"items": [
        {"item_id": "sku-1", "title": "first", "category": "seating", "in_stock": False},
        {"item_id": "sku-1", "title": "second", "category": "seating", "in_stock": True}]})

    assert status == 200 and body["accepted"] == 2, body
    stored = api.json("GET", "/items/sku-1")[1]
    assert (stored["title"], stored["in_stock"]) == ("second", True)
