"""The local stack runs every function in one process, where they share Powertools' class state:
the resolver's current request, so the gateway answers one request at a time, and the metric set,
which with metrics disabled no flush empties, so the gateway does after each invocation."""

from __future__ import annotations

import sys
import threading

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
