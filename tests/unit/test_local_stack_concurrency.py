"""The local stack runs every function in one process, where they share Powertools' class state:
the resolver's current request, so the gateway answers one request at a time, and the metric set,
which with metrics disabled no flush empties, so the gateway does after each invocation."""

from __future__ import annotations

import sys
import threading

from aws_lambda_powertools.metrics import MetricUnit

from devstack.gateway import forget_metrics
from shared.observability import metrics
from tests.factories import purchase


def test_no_invocation_leaves_values_in_the_shared_metric_set(api):
    for n in range(3):
        assert api.json("GET", f"/users/u-{n}/recommendations")[0] == 200
        assert api.json("POST", "/events", {"events": [purchase(f"e-{n}", user_id=f"u-{n}")]})[0] == 200
        assert metrics.metric_set == {}


def test_requests_to_two_functions_at_once_are_each_answered_by_their_own(api):
    """Recommendations and ingest at once, threads switching as often as they can. Answered
    together, each function's app read the other's request ("no route for POST /events" to a
    GET, 422 "body: Field required" to a POST); and with the metric set left to grow, a metric's
    100th value made add_metric serialize it while the other added to it (a 500)."""
    statuses: list[int] = []

    def recommend() -> None:
        for n in range(600):
            statuses.append(api.json("GET", f"/users/u-{n % 7}/recommendations")[0])

    def ingest() -> None:
        for n in range(300):
            statuses.append(api.json("POST", "/events", {"events": [purchase(f"c-{n}", user_id=f"u-{n % 7}")]})[0])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for work in (recommend, ingest)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(statuses) == 900 and set(statuses) == {200}, sorted(set(statuses))


def test_work_in_the_background_adds_metrics_while_invocations_end(api):
    """A campaign job or a training run adds metrics outside the invocations (a failing custom
    rule adds one per customer) while the gateway empties the set after each invocation: a
    metric's 100th value serialized the set as it was being emptied, and the job failed."""
    assert api.json("GET", "/users/u-1/recommendations")[0] == 200  # the functions are loaded
    failures: list[Exception] = []

    def background() -> None:
        try:
            for _ in range(20_000):
                metrics.add_metric("SegmentRuleFailures", MetricUnit.Count, 1)
        except Exception as error:  # noqa: BLE001 - what the job would have died of
            failures.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        worker = threading.Thread(target=background)
        worker.start()
        while worker.is_alive():
            forget_metrics()  # what the gateway does as each invocation ends
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == [], failures[:1]


def test_a_request_sent_from_inside_another_is_a_503_naming_why_not_a_hang(api, monkeypatch):
    from devstack import gateway
    from shared.storage import events as event_storage

    monkeypatch.setattr(gateway, "INVOCATION_WAIT_SECONDS", 0.2)
    real_read, inner = event_storage.stored_recent_events, []

    def read_and_call_back(*args):
        inner.append(api.json("GET", "/popular"))  # while ingest answers
        return real_read(*args)

    monkeypatch.setattr(event_storage, "stored_recent_events", read_and_call_back)
    assert api.json("POST", "/events", {"events": [purchase("e-1")]})[0] == 200
    status, body = inner[0]
    assert status == 503 and "one request at a time" in body["message"], body
