"""Warm latency of the recommendation handler versus the raw work it wraps, and cold start.

    ./dev bench serve [--items 50000] [--factors 64] [--requests 400]

Setup (not timed): DynamoDB Local with a catalog of --items items, 300 customers with 40 events
each (stored through ingest's own code, so each has the recent-activity item serving reads), and
a model of --items items x --factors factors published as the active version.

Warm: the function is loaded once and warmed up (its model and catalog snapshot loaded), as a warm
Lambda instance serves; then each request goes through the handler in-process, as Lambda calls it
(API Gateway event, routing, validation, profile, recent activity and bought-set reads, fold-in,
filters, the catalog snapshot, the re-read of the items returned, reasons). The raw reference
does the same DynamoDB reads with plain boto3 calls (profile, recent-activity item decoded,
bought set, the returned items by key, two by_category queries) and implicit's
recommend(recalculate_user=True) on the same model, with no filtering and no reasons.
Cold start: a fresh Python process importing the function and answering its first request
(which loads the model), as a new Lambda instance would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "bench",
                   "POWERTOOLS_METRICS_NAMESPACE": "Bench", "POWERTOOLS_METRICS_DISABLED": "true",
                   "POWERTOOLS_TRACE_DISABLED": "true", "MODEL_REFRESH_SECONDS": "3600"})
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402

from bench.quiet import quiet_handlers  # noqa: E402
from devstack.dynamodb_local import LOCAL_CREDENTIALS, DynamoDBLocal, client, create_tables, write_items  # noqa: E402
from devstack.gateway import LambdaContext, api_event, load_handler  # noqa: E402
from devstack.local_auth import customer_context  # noqa: E402
from devstack.template import http_routes, load_template  # noqa: E402
from shared.storage.blobs import LocalBlobs  # noqa: E402
from shared.storage.models import Manifest, ModelStore  # noqa: E402
from shared.training.artifact import ModelArtifact  # noqa: E402
from shared.training.config import TrainingConfig  # noqa: E402

CATEGORIES = ["kitchen", "garden", "toys", "books", "lighting", "textiles", "bath", "pets"]


def seed(endpoint: str, tables: dict[str, str], n_items: int, n_users: int, history: int) -> None:
    dynamodb = client(endpoint)
    now = datetime.now(timezone.utc)
    rng = np.random.default_rng(3)
    items = [{"item_id": {"S": f"i{i}"}, "title": {"S": f"Item {i}"}, "category": {"S": CATEGORIES[i % 8]},
              "price": {"N": "9.5"}, "currency": {"S": "EUR"}, "in_stock": {"BOOL": bool(i % 20)},
              "retired": {"BOOL": False}, "created_at": {"S": "2025-01-01T00:00:00.000000Z"}}
             for i in range(n_items)]
    write_items(dynamodb, tables["ItemsTable"], items, threads=4)
    from shared.events import Event
    from shared.storage.events import EventStore

    store = EventStore(tables["EventsTable"], tables["UsersTable"], 8)
    events = []
    for user in range(n_users):
        for n, item in enumerate(rng.integers(0, n_items, size=history)):
            moment = now - timedelta(days=float(rng.uniform(0, 300)))
            kind = "purchase" if n % 3 == 0 else "view"
            events.append(Event.model_validate({
                "user_id": f"u{user}", "event_id": f"e{n}", "item_id": f"i{item}", "event_type": kind,
                "timestamp": moment.isoformat(), "channel": "web",
                **({"price": 9.5, "currency": "EUR"} if kind == "purchase" else {})}))
    for start in range(0, len(events), 1000):
        store.write(events[start:start + 1000])


def publish_model(models_dir: Path, n_items: int, factors: int) -> ModelArtifact:
    rng = np.random.default_rng(5)
    artifact = ModelArtifact(
        item_ids=[f"i{i}" for i in range(n_items)],
        item_factors=rng.normal(0, 0.1, (n_items, factors)).astype(np.float32),
        popular_items=[f"i{i}" for i in range(200)],
        parameters=TrainingConfig(factors=factors).model_dump(mode="json"))
    store = ModelStore(LocalBlobs(models_dir))
    manifest = Manifest(version="bench", status="accepted", started_at=datetime.now(timezone.utc))
    store.publish(manifest, artifact)
    store.save(manifest)
    store.activate("bench")
    return artifact


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)) * 1000, float(np.percentile(samples, 99)) * 1000


def warm_handler() -> tuple[object, object]:
    """The recommendation function loaded once, as a Lambda instance is, with its route."""
    route = next(r for r in http_routes(load_template()) if r.path == "/users/{user_id}/recommendations")
    return route, load_handler(route)


def wait_for_snapshot(route: object, timeout: float = 120) -> None:
    """A warm instance has loaded its catalog snapshot (in the background, after its first request)."""
    view = getattr(sys.modules.get(f"lambda_{route.function}_app"), "catalog_view", None)
    deadline = time.monotonic() + timeout
    while view is not None and not view.ready() and time.monotonic() < deadline:
        time.sleep(0.05)


def through_handler(warm: tuple[object, object], users: list[str], limit: int) -> list[float]:
    route, handler = warm
    timings = []
    for user in users:
        event = api_event(route, "GET", f"/users/{user}/recommendations", f"limit={limit}", {}, b"",
                          {"user_id": user}, "127.0.0.1", customer_context(user))
        started = time.perf_counter()
        response = handler(event, LambdaContext(function_name=route.function))
        timings.append(time.perf_counter() - started)
        if response["statusCode"] != 200:
            raise SystemExit(f"handler answered {response['statusCode']}: {response['body'][:300]}")
    return timings


def raw_work(endpoint: str, tables: dict[str, str], artifact: ModelArtifact, users: list[str], limit: int) -> list[float]:
    from implicit.cpu.als import AlternatingLeastSquares

    dynamodb = client(endpoint)
    model = AlternatingLeastSquares(factors=artifact.item_factors.shape[1], regularization=5.0)
    model.item_factors = artifact.item_factors
    model.user_factors = np.zeros((1, artifact.item_factors.shape[1]), dtype=np.float32)  # refitted per request
    index = {item_id: i for i, item_id in enumerate(artifact.item_ids)}
    timings = []
    for user in users:
        started = time.perf_counter()
        dynamodb.get_item(TableName=tables["UsersTable"], Key={"user_id": {"S": user}}, ConsistentRead=True)
        recent = dynamodb.batch_get_item(RequestItems={tables["UsersTable"]: {
            "Keys": [{"user_id": {"S": user + "\x00recent"}}], "ConsistentRead": True}})
        rows = json.loads(zlib.decompress(recent["Responses"][tables["UsersTable"]][0]["events"]["B"]))
        dynamodb.get_item(TableName=tables["UsersTable"], Key={"user_id": {"S": user + "\x00purchases"}},
                          ConsistentRead=True)
        columns = np.array([index[r[1]] for r in rows])
        row = csr_matrix((np.ones(len(columns), np.float32), (np.zeros(len(columns)), columns)),
                         shape=(1, len(artifact.item_ids)))
        ids, _ = model.recommend(0, row, N=100, recalculate_user=True)
        dynamodb.batch_get_item(RequestItems={tables["ItemsTable"]: {
            "Keys": [{"item_id": {"S": artifact.item_ids[i]}} for i in ids[:limit]]}})
        for category in CATEGORIES[:2]:
            dynamodb.query(TableName=tables["ItemsTable"], IndexName="by_category", ScanIndexForward=False,
                           Limit=10, KeyConditionExpression="category = :c", ProjectionExpression="item_id",
                           ExpressionAttributeValues={":c": {"S": category}})
        timings.append(time.perf_counter() - started)
    return timings


def cold_start(user: str, limit: int) -> float:
    script = f"""
import time, sys
started = time.perf_counter()
sys.path.insert(0, {str(ROOT)!r})
from devstack.gateway import LambdaContext, api_event, load_handler
from devstack.local_auth import customer_context
from devstack.template import http_routes, load_template
route = next(r for r in http_routes(load_template()) if r.path == "/users/{{user_id}}/recommendations")
handler = load_handler(route)
event = api_event(route, "GET", "/users/{user}/recommendations", "limit={limit}", {{}}, b"", {{"user_id": "{user}"}}, "127.0.0.1", customer_context("{user}"))
assert handler(event, LambdaContext(function_name=route.function))["statusCode"] == 200
print(time.perf_counter() - started, flush=True)
# Not the interpreter's own exit: the catalog snapshot is loading in a daemon thread, and CPython
# 3.11 ends such a thread with pthread_exit, which can abort ("FATAL: exception not rethrown") when
# the thread is inside a compiled extension then (python/cpython#87135; PyO3/pyo3#4874 for Rust
# ones such as pydantic-core). A Lambda instance never exits that way: it is frozen, then killed.
import os
os._exit(0)
"""
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ)
    if output.returncode != 0:
        raise SystemExit(f"the cold start's process ended with {output.returncode}:\n{output.stdout[-500:]}\n{output.stderr[-3000:]}")
    return float(output.stdout.strip().splitlines()[-1])


def main() -> None:
    quiet_handlers()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    dynamodb = DynamoDBLocal.start()
    try:
        tables = create_tables(dynamodb.endpoint, f"bench-{uuid.uuid4().hex[:6]}")
        models_dir = Path(tempfile.mkdtemp())
        os.environ.update({"AWS_ENDPOINT_URL_DYNAMODB": dynamodb.endpoint, "LOCAL_MODEL_DIR": str(models_dir),
                           "EVENTS_TABLE": tables["EventsTable"], "ITEMS_TABLE": tables["ItemsTable"],
                           "USERS_TABLE": tables["UsersTable"], "SEGMENTS_TABLE": tables["SegmentsTable"],
                           "MODEL_BUCKET": "bench",
                           # Answers carry a signed recommendation id, as in production.
                           "VISITOR_TOKEN_SECRET": "bench-visitor-token-key-of-at-least-32-bytes"})
        seed(dynamodb.endpoint, tables, args.items, 300, 40)
        artifact = publish_model(models_dir, args.items, args.factors)
        users = [f"u{i % 300}" for i in range(args.requests)]
        warm = warm_handler()  # loaded once, as a Lambda instance is
        through_handler(warm, users[:1], 10)  # the first request starts the catalog snapshot's load
        wait_for_snapshot(warm[0])
        through_handler(warm, users[:20], 10)  # warm: model and snapshot loaded, connections open
        raw_work(dynamodb.endpoint, tables, artifact, users[:20], 10)
        handler_times, raw_times = [], []
        for start in range(0, len(users), 50):  # interleaved, so both see the same machine
            handler_times += through_handler(warm, users[start:start + 50], 10)
            raw_times += raw_work(dynamodb.endpoint, tables, artifact, users[start:start + 50], 10)
        colds = [cold_start("u1", 10) for _ in range(3)]
    finally:
        dynamodb.stop()
    (h50, h99), (r50, r99) = percentiles(handler_times), percentiles(raw_times)
    print(f"model {args.items:,} items x {args.factors} factors; customers with 40 events; "
          f"{len(users)} requests each, DynamoDB Local")
    print(f"  recommendation handler  p50 {h50:6.1f} ms   p99 {h99:6.1f} ms")
    print(f"  raw reads + implicit    p50 {r50:6.1f} ms   p99 {r99:6.1f} ms")
    print(f"  ratio handler/raw       p50 {h50 / r50:6.2f}      p99 {h99 / r99:6.2f}   (target <= 1.5)")
    print(f"  cold start (imports + model load + first answer): {min(colds):.2f} s best, "
          f"{max(colds):.2f} s worst of 3 (target < 1.5 s)")


if __name__ == "__main__":
    main()
