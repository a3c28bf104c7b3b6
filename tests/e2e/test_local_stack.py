"""The local stack as an engineer uses it: start, talk HTTP, start again, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from devstack import stack
from devstack.api_client import ApiClient
from devstack.dynamodb_local import free_port, port_in_use
from devstack.template import load_template
from tests.training_data import A_MODEL_SERVES
from tests.factories import item, iso, purchase

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("stack")
    state, started = stack.up(free_port(), state_dir)
    assert started
    yield state, state_dir
    stack.down(state_dir)


def test_events_and_catalog_go_in_over_http(running_stack):
    state, state_dir = running_stack
    api = ApiClient.for_stack(state_dir)

    items = api.put_items([item("sku-1"), item("sku-2", in_stock=False)])
    events = api.send_events([purchase(f"p-{n}", price=5) for n in range(3)] * 2)

    assert (items.accepted, events.accepted, events.duplicates) == (2, 3, 3)
    assert api.request("GET", "/items/sku-2").body["in_stock"] is False
    assert api.request("GET", "/users/u-1").body["summary"]["purchase_count"] == 3
    bad = api.request("POST", "/events", {"events": [{"event_id": "x"}]})
    assert bad.status == 422 and bad.body["rejected"][0]["event_id"] == "x"


def test_cors_preflight_allows_the_configured_origin_only(running_stack):
    state, state_dir = running_stack
    api = ApiClient.for_stack(state_dir)
    origin = load_template()["Parameters"]["AllowedOrigins"]["Default"].split(",")[0]
    allowed = api.request("OPTIONS", "/events", headers={"origin": origin})
    other = api.request("OPTIONS", "/events", headers={"origin": "https://evil.example"})
    assert allowed.headers.get("access-control-allow-origin") == origin
    assert "access-control-allow-origin" not in other.headers


def test_a_second_start_says_the_stack_is_already_running(running_stack):
    state, state_dir = running_stack
    result = subprocess.run(
        [sys.executable, "-m", "devstack.cli", "up", "--port", str(state.port), "--state-dir", str(state_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0
    assert "already running" in result.stdout
    assert stack.read_state(state_dir).pid == state.pid


def test_a_busy_port_is_reported_clearly(tmp_path, running_stack):
    state, state_dir = running_stack
    with pytest.raises(stack.StackError, match=f"port {state.port} is in use"):
        stack.up(state.port, tmp_path / "other")


def test_down_stops_the_gateway_and_dynamodb_local(tmp_path):
    state, _ = stack.up(free_port(), tmp_path)
    stopped = stack.down(tmp_path)
    assert stopped.pid == state.pid
    assert not port_in_use(state.port)
    assert not stack.alive(state.dynamodb_pid)
    assert stack.down(tmp_path) is None


def test_a_retail_csv_is_imported_through_the_api_and_reimporting_changes_nothing(running_stack, tmp_path):
    state, state_dir = running_stack
    csv_file = tmp_path / "retail.csv"
    csv_file.write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "581001,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2011-06-01 10:00:00,2.55,17850.0,United Kingdom\n"
        "581001,71053,WHITE METAL LANTERN,2,2011-06-01 10:00:00,3.39,17850.0,United Kingdom\n"
        "C581002,71053,WHITE METAL LANTERN,-1,2011-06-02 10:00:00,3.39,17850.0,United Kingdom\n"
        "581003,POST,POSTAGE,1,2011-06-02 10:00:00,18.00,17850.0,United Kingdom\n"
    )
    command = [sys.executable, "-m", "devstack.cli", "import-csv", str(csv_file), "--state-dir", str(state_dir)]

    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert first.returncode == 0, first.stderr
    assert "2 purchases, 1 returns" in first.stdout  # the cancellation is netted, not dropped
    assert "skipped 1 rows: non-product code" in first.stdout
    assert "events: 3 accepted, 0 duplicates" in first.stdout
    assert "events: 0 accepted, 3 duplicates" in again.stdout
    user = ApiClient.for_stack(state_dir).request("GET", "/users/17850").body
    summary = user["summary"]
    assert (user["country"], summary["orders"], summary["lines"], summary["units"], summary["returns"]) == (
        "GB", 1, 2, 8, 1)
    assert summary["spend"] == {"GBP": "18.69"} and summary["returned"] == {"GBP": "3.39"}  # 15.30 + 6.78 - 3.39
    assert ApiClient.for_stack(state_dir).request("GET", "/items/71053").body["title"] == "WHITE METAL LANTERN"


def test_when_dynamodb_goes_away_clients_get_a_503_with_retry_after_not_a_crash(tmp_path):
    state, _ = stack.up(free_port(), tmp_path)
    try:
        api = ApiClient.for_stack(tmp_path, timeout=120)
        assert api.request("POST", "/events", {"events": [purchase("p-1")]}).status == 200
        os.kill(state.dynamodb_pid, signal.SIGKILL)

        for method, path, body in (("POST", "/events", {"events": [purchase("p-2")]}),
                                   ("GET", "/users/u-1/recommendations", None), ("GET", "/users/u-1", None)):
            response = api.request(method, path, body)
            assert response.status == 503, (path, response.body)
            assert response.body["error"]["code"] == "storage_unavailable"
            assert int(response.headers["retry-after"]) >= 1
    finally:
        stack.down(tmp_path)


def test_a_flood_of_the_same_batch_from_many_clients_is_stored_once(running_stack):
    state, state_dir = running_stack
    api = ApiClient.for_stack(state_dir)
    batch = [purchase(f"flood-{n}", user_id=f"flooder-{n % 10}", price=3) for n in range(500)]

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: api.send_events(batch), range(6)))

    assert sum(a.accepted for a in answers) == 500
    assert sum(a.duplicates for a in answers) == 2500
    for n in range(10):
        assert api.request("GET", f"/users/flooder-{n}").body["summary"]["purchase_count"] == 50


def test_a_client_with_a_skewed_clock_loses_only_its_future_events_each_named(running_stack):
    _, state_dir = running_stack
    api = ApiClient.for_stack(state_dir)
    skewed = [purchase(f"skew-{n}", user_id="skewed", timestamp=ahead(hours=2)) for n in range(300)]
    honest = [purchase(f"ok-{n}", user_id="skewed") for n in range(200)]

    with ThreadPoolExecutor(4) as pool:
        totals = list(pool.map(api.send_events, [skewed + honest] * 4))

    assert sum(t.accepted for t in totals) == 200
    assert all(len(t.rejected) == 300 for t in totals)
    assert {e["field"] for r in totals[0].rejected for e in r["errors"]} == {"timestamp"}
    assert api.request("GET", "/users/skewed").body["summary"]["purchase_count"] == 200


def test_over_http_customers_see_only_their_own_data_and_curl_can_sign_as_the_backend(running_stack):
    state, state_dir = running_stack
    backend = ApiClient.for_stack(state_dir)
    backend.send_events([purchase("auth-1", user_id="u-auth")])
    cli = [sys.executable, "-m", "devstack.cli"]
    token = subprocess.run([*cli, "token", "u-auth", "--state-dir", str(state_dir)],
                           capture_output=True, text=True, check=True).stdout.strip()
    signing = subprocess.run([*cli, "credentials", "--state-dir", str(state_dir)],
                             capture_output=True, text=True, check=True).stdout.split()

    def curl(*options: str) -> int:
        result = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *options],
                                capture_output=True, text=True, timeout=30)
        return int(result.stdout)

    assert curl("-H", f"authorization: Bearer {token}", f"{state.url}/users/u-auth") == 200
    assert curl("-H", f"authorization: Bearer {token}", f"{state.url}/users/u-1/recommendations") == 403
    assert curl(f"{state.url}/users/u-auth") == 401
    assert curl(*signing, f"{state.url}/segments") == 200
    # curl (7.x) leaves a ':' in the path unencoded when it signs, as AWS does not: every segment
    # id has one. ./dev call signs as AWS computes it.
    members = "/segments/rfm:champions/members?limit=5"
    assert curl(*signing, f"{state.url}{members}") == 403
    called = subprocess.run([*cli, "call", "GET", members, "--state-dir", str(state_dir)],
                            capture_output=True, text=True)
    # Signed right: the members, or (before any nightly run) the segment named as having none.
    answer = json.loads(called.stdout)
    assert called.stderr.strip() in ("HTTP 200", "HTTP 404"), called.stderr
    assert "members" in answer or answer["error"]["fields"][0]["field"] == "segment_id"
    listing = subprocess.run([*cli, "call", "GET", "/segments", "--state-dir", str(state_dir)],
                             capture_output=True, text=True, check=True)
    assert "segments" in json.loads(listing.stdout)
    batch = json.dumps({"events": [purchase("auth-2", user_id="u-auth")]})
    assert curl(*signing, "-H", "content-type: application/json", "--data", batch, f"{state.url}/events") == 200
    assert backend.request("GET", "/users/u-auth").body["summary"]["purchase_count"] == 2


def test_a_corrupted_model_or_an_unreachable_model_folder_never_stops_recommendations(tmp_path):
    """The loaded version keeps serving; a cold start falls back to the cached popular list."""
    from devstack.demo_data import generate_shop

    stack.up(free_port(), tmp_path, persist=True)
    try:
        backend = ApiClient.for_stack(tmp_path)
        shop = generate_shop(seed=3, n_users=120, n_items=40)
        backend.put_items(shop.items)
        backend.send_events(shop.events)
        train = lambda: backend.train_and_wait(A_MODEL_SERVES, timeout=300)
        good, other = train()["version"], train()["version"]
        assert backend.request("POST", f"/models/{good}/activate").status == 200
        user = next(u for u in shop.archetypes if shop.archetypes[u] == "loyal")
        customer = backend.as_customer(user)

        def answer() -> dict:
            response = customer.request("GET", f"/users/{user}/recommendations")
            assert response.status == 200, response.body
            return response.body

        assert wait_until(lambda: answer()["model_version"] == good)
        artifact = tmp_path / "models" / "models" / other / "model.npz"  # the local bucket
        intact = artifact.read_bytes()
        artifact.write_bytes(b"not a model")
        assert backend.request("POST", f"/models/{other}/activate").status == 409  # checked first
        artifact.write_bytes(intact)
        # Corrupted after activation, before serving next looks (it looks every 5 s locally):
        assert backend.request("POST", f"/models/{other}/activate").status == 200
        artifact.write_bytes(b"not a model")
        time.sleep(6)
        assert answer()["model_version"] == good  # the corrupted version could not replace it

        stack.down(tmp_path)
        stack.up(free_port(), tmp_path, persist=True)  # a cold start that can load no model
        cold = ApiClient.for_stack(tmp_path).as_customer(user)
        body = cold.request("GET", f"/users/{user}/recommendations").body
        assert body["strategy"].endswith(":cached") and not body["personalized"] and body["items"]

        models = tmp_path / "models"
        models.rename(tmp_path / "models-gone")
        models.write_text("the bucket is unreachable")
        time.sleep(6)
        assert cold.request("GET", f"/users/{user}/recommendations").status == 200
        assert cold.request("GET", "/popular").status == 200
    finally:
        stack.down(tmp_path)


def ahead(**delta: float) -> str:
    return iso(datetime.now(timezone.utc) + timedelta(**delta))


def wait_until(condition, seconds: float = 15, every: float = 0.5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


def test_a_training_run_killed_halfway_with_its_process_leaves_the_active_version(tmp_path):
    from devstack.demo_data import generate_shop

    state, _ = stack.up(free_port(), tmp_path, persist=True)
    try:
        backend = ApiClient.for_stack(tmp_path)
        shop = generate_shop(seed=5, n_users=400, n_items=80)
        backend.put_items(shop.items)
        backend.send_events(shop.events)
        config = A_MODEL_SERVES
        good = backend.train_and_wait(config, timeout=300)["version"]
        bucket = tmp_path / "models" / "models"

        assert backend.request("POST", "/models/train", {"config": config}).status == 202
        assert wait_until(lambda: any(json.loads(m.read_text())["status"] == "training"
                                      for m in bucket.glob("*/manifest.json")), seconds=30, every=0.02)
        os.kill(state.pid, signal.SIGKILL)  # the Lambda timed out or its host died, mid-run
        stack.down(tmp_path)
        stack.up(free_port(), tmp_path, persist=True)

        listing = ApiClient.for_stack(tmp_path).request("GET", "/models").body
        killed = next(v for v in listing["versions"] if v["version"] != good)
        assert listing["active"] == good
        assert killed["status"] == "training"  # shown as abandoned 16 minutes after it started
    finally:
        stack.down(tmp_path)
