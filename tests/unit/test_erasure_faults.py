"""An erasure that DynamoDB interrupts, at any of its calls, ends with the customer and their linked
visitors all erased, whether the client retries it or the scheduled sweep finishes it (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack.gateway import LambdaContext
from devstack.template import PROJECT_ROOT
from shared.config import get_settings
from shared.storage import dynamo
from tests.factories import ago, event, purchase

SWEEP = json.loads((PROJECT_ROOT / "events" / "privacy" / "finish_erasures.json").read_text())


class Interrupt:
    """Refuses the `at`-th DynamoDB call made while armed (0: none), as a throttled table would
    past botocore's own retries; counts the calls."""

    def __init__(self) -> None:
        self.at, self.calls = 0, 0


@pytest.fixture
def interrupt(monkeypatch) -> Interrupt:
    from botocore.client import BaseClient

    original, state = BaseClient._make_api_call, Interrupt()

    def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if state.at and client.meta.service_model.service_name == "dynamodb":
            state.calls += 1
            if state.calls == state.at:
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    monkeypatch.setattr(dynamo, "backoff_delays", lambda attempts, **_: [0.0] * attempts)
    return state


def customer_with_a_visitor(api, n: int) -> tuple[str, str]:
    user, visitor = f"u-{n}", f"v-{n}"
    events = [event(f"e-{n}", user, "sku-1", "view", timestamp=ago(seconds=300)),
              purchase(f"p-{n}", user_id=user, item_id="sku-2", price=5, timestamp=ago(seconds=200)),
              event(f"ev-{n}", visitor, "sku-3", "view", timestamp=ago(seconds=250))]
    assert api.json("POST", "/events", {"events": events})[0] == 200
    assert api.json("POST", f"/users/{user}/visitors", {"visitor_id": visitor})[0] == 200
    return user, visitor


def stored_events(user_id: str) -> list[str]:
    rows = dynamo.client().query(TableName=get_settings().events_table, ConsistentRead=True,
                                 KeyConditionExpression="user_id = :u",
                                 ExpressionAttributeValues={":u": {"S": user_id}})["Items"]
    return [row["event_id"]["S"] for row in rows]


def erased(api, user: str, visitor: str) -> bool:
    """Nothing of either is stored or exported, and an event stamped before the erasure is refused."""
    late = event(f"late-{visitor}", visitor, "sku-4", "view", timestamp=ago(seconds=100))
    status, answer = api.json("POST", "/events", {"events": [late]})
    return (stored_events(user) == stored_events(visitor) == []
            and api.json("GET", f"/users/{visitor}/export")[1]["events"] == []
            and status == 422 and answer["refused_after_erasure"] == 1)


def sweep(api) -> dict[str, int]:
    route = next(r for r in api.gateway.routes if r.function == "PrivacyFunction")
    return api.gateway.handler(route)(SWEEP, LambdaContext(function_name="PrivacyFunction"))


def interrupted_erasures(api, interrupt: Interrupt) -> Iterator[tuple[int, str, str]]:
    """For each DynamoDB call an erasure makes: a customer with a visitor whose erasure was
    interrupted at that call (answered 503), with the call's number."""
    user, visitor = customer_with_a_visitor(api, 0)
    interrupt.at = 10**9
    assert api.json("DELETE", f"/users/{user}")[1]["linked_visitors"] == [visitor]
    for at in range(1, interrupt.calls + 1):
        user, visitor = customer_with_a_visitor(api, at)
        interrupt.at, interrupt.calls = at, 0
        assert api.json("DELETE", f"/users/{user}")[0] == 503, at
        interrupt.at = 0
        yield at, user, visitor


def test_an_erasure_interrupted_at_any_call_ends_complete_with_its_visitors_when_retried(api, interrupt):
    for at, user, visitor in interrupted_erasures(api, interrupt):
        status, retried = api.json("DELETE", f"/users/{user}")

        assert status == 200 and retried["status"] == "complete", (at, retried)
        assert retried["linked_visitors"] == [visitor], at  # before: [] when the first try got past the record
        assert erased(api, user, visitor), at


def test_an_erasure_interrupted_at_any_call_is_finished_by_the_sweep_alone(api, interrupt):
    for at, user, visitor in interrupted_erasures(api, interrupt):
        # Interrupted before its record was written, the erasure never began: the 503 asks for a retry.
        began = "erasure_status" in dynamo.client().get_item(
            TableName=get_settings().users_table, Key={"user_id": {"S": user}})["Item"]

        sweep(api)

        assert erased(api, user, visitor) or not began, at
        assert began or at <= 3, at  # the first record is the third call


def test_records_written_by_hand_that_name_each_other_are_finished_without_going_round(api):
    from shared.storage.privacy import IN_PROGRESS, PrivacyStore

    settings = get_settings()
    for user, other in (("u-a", "u-b"), ("u-b", "u-a")):
        dynamo.client().put_item(TableName=settings.users_table, Item=dynamo.serialize({
            "user_id": user, "erased_at": "2026-12-01T00:00:00.000000Z", "erasure_status": IN_PROGRESS,
            "linked_visitors": [other]}))
    store = PrivacyStore(settings.events_table, settings.users_table, settings.segments_table)

    out_of_time = store.finish("u-a", lambda: 0.0)  # before: each finished the other, until RecursionError

    assert out_of_time.status == IN_PROGRESS and store.finish("u-a", lambda: 60.0).status == "complete"
