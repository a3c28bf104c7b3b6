"""What each route costs per million requests, from DynamoDB's own consumed capacity.

    ./dev bench cost [--items 5000] [--customers 20] [--history 500] [--requests 20] [--detail]

Setup (not counted): DynamoDB Local with a catalog of --items items (about 170 bytes each, as the
demo shop's), --customers customers with --history events each (about 190 bytes each, a third of
them purchases) and a profile, visitors with 20 views, all stored through ingest's own code, and
a model of the catalog's items published as the active version.

Each route is called --requests times through its handler in-process, warm (as one Lambda
instance serves), after a warm-up. Every DynamoDB call the handler makes is sent with
ReturnConsumedCapacity=TOTAL (a botocore hook adds it) and the ConsumedCapacity of the response
is summed: read request units (RRU) and write request units (WRU) per request, as DynamoDB
on-demand bills them. DynamoDB Local reports what it computes from the items it reads and writes;
transactions are checked against DynamoDB's documented rule (2 WRU per KB of each item written
or checked in a transaction, plus 1 WRU per KB for each local secondary index entry written) and
the larger figure is taken, which the output says. Lambda time is measured here (median, this machine); memory is
the function's MemorySize in template.yaml.

`--detail` prints every DynamoDB call of one request per route, with its capacity.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "bench",
                   "POWERTOOLS_METRICS_NAMESPACE": "Bench", "POWERTOOLS_METRICS_DISABLED": "true",
                   "POWERTOOLS_TRACE_DISABLED": "true", "MODEL_REFRESH_SECONDS": "3600",
                   "VISITOR_TOKEN_SECRET": "bench-visitor-token-key-of-at-least-32-bytes"})
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.item_size import KB, item_bytes  # noqa: E402
from bench.quiet import quiet_handlers  # noqa: E402
from devstack.dynamodb_local import LOCAL_CREDENTIALS, DynamoDBLocal, create_tables, write_items  # noqa: E402
from devstack.dynamodb_local import client as local_client  # noqa: E402
from devstack.gateway import LambdaContext, api_event, load_handler  # noqa: E402
from devstack.local_auth import trusted_context  # noqa: E402
from devstack.template import http_routes, load_template, resources  # noqa: E402

# --- Prices: the one table this bench computes with -------------------------------------------
# Read from AWS's public pricing pages (aws.amazon.com/lambda/pricing, /api-gateway/pricing,
# /dynamodb/pricing/on-demand) for us-east-1, as of 2025 (DynamoDB on-demand after its 1 November
# 2024 cut): the same figures as docs/deploy.md. First tiers; free tiers left out. Check before quoting.
PRICES_REGION, PRICES_READ = "us-east-1", "2025 (AWS pricing pages; DynamoDB after the 2024-11-01 cut)"
PRICES = {
    "dynamodb_rru": 0.125 / 1e6,         # $ per on-demand read request unit
    "dynamodb_wru": 0.625 / 1e6,         # $ per on-demand write request unit
    "lambda_request": 0.20 / 1e6,        # $ per Lambda request (x86)
    "lambda_gb_second": 0.0000166667,    # $ per GB-second (x86, first 6 billion GB-s a month)
    "http_api_request": 1.00 / 1e6,      # $ per API Gateway HTTP API request (first 300 million, per 512 KB)
}
# ---------------------------------------------------------------------------------------------

CATEGORIES = ["kitchen", "garden", "toys", "books", "lighting", "textiles", "bath", "pets"]
READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


@dataclass
class Call:
    operation: str
    rru: float = 0.0
    wru: float = 0.0
    reported_wru: float = 0.0  # what DynamoDB Local said, when the documented rule gives more
    reported_rru: float = 0.0
    note: str = ""


@dataclass
class Meter:
    """Every DynamoDB call's consumed capacity, while `active`."""

    active: bool = False
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    corrected: set[str] = field(default_factory=set)
    sizer: Any = None  # an unmetered client, to read item sizes for the transaction rule

    def add_capacity(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in READS | WRITES:
            params["ReturnConsumedCapacity"] = "TOTAL"

    def keep_body(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["meter_body"] = params.get("body")

    def record(self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any] | None = None,
               **_: Any) -> None:
        if not self.active or model.name not in READS | WRITES:
            return
        consumed = parsed.get("ConsumedCapacity") or []
        if isinstance(consumed, dict):
            consumed = [consumed]
        units = sum(float(c.get("CapacityUnits") or 0) for c in consumed)
        call = Call(model.name)
        if model.name in READS:
            call.rru = units
        else:
            call.wru = units
        if model.name == "BatchGetItem":
            body = (context or {}).get("meter_body") or b"{}"
            self.batch_get_rule(json.loads(body), parsed, call)
        with self.lock:
            self.calls.append(call)

    def batch_get_rule(self, request: dict[str, Any], parsed: dict[str, Any], call: Call) -> None:
        """DynamoDB charges every key of a BatchGetItem, found or not, at least one read (0.5 RRU
        eventually consistent, 1 strongly), each found item by its size rounded up to 4 KB;
        DynamoDB Local reports nothing for a missing key."""
        units = 0.0
        for table, spec in request.get("RequestItems", {}).items():
            per = 1.0 if spec.get("ConsistentRead") else 0.5
            found = parsed.get("Responses", {}).get(table, [])
            left = len((parsed.get("UnprocessedKeys") or {}).get(table, {}).get("Keys", []))
            units += sum(per * max(1, math.ceil(item_bytes(item) / (4 * KB))) for item in found)
            units += per * max(0, len(spec.get("Keys", [])) - len(found) - left)
        if units > call.rru:
            call.reported_rru, call.rru = call.rru, units
            call.note = "missing keys counted at one read each (DynamoDB Local reported less)"
            self.corrected.add("BatchGetItem")

    def transaction_rule(self, request: dict[str, Any], call: Call) -> None:
        """DynamoDB's documented charge for a transaction, from the items' sizes after it."""
        units = 0.0
        for action in request["TransactItems"]:
            kind, spec = next(iter(action.items()))
            key = spec.get("Key") or {k: spec["Item"][k] for k in self.keys(spec["TableName"])}
            item = self.sizer.get_item(TableName=spec["TableName"], Key=key).get("Item")
            size = item_bytes(item or key)
            units += 2 * math.ceil(size / KB)
            if kind == "ConditionCheck":
                continue  # nothing written
            for _ in self.local_indexes(spec["TableName"], item or {}):
                units += math.ceil(size / KB)  # the index entry: 1 WRU per KB (not doubled: an assumption)
        if units > call.wru:
            call.reported_wru, call.wru = call.wru, units
            call.note = "from item sizes (DynamoDB Local reported less)"
            self.corrected.add("TransactWriteItems")

    _tables: dict[str, Any] = field(default_factory=dict)

    def describe(self, table: str) -> dict[str, Any]:
        if table not in self._tables:
            self._tables[table] = self.sizer.describe_table(TableName=table)["Table"]
        return self._tables[table]

    def keys(self, table: str) -> list[str]:
        return [k["AttributeName"] for k in self.describe(table)["KeySchema"]]

    def local_indexes(self, table: str, item: dict[str, Any]) -> list[str]:
        """The local secondary indexes that hold this item (its sort key attribute is set)."""
        found = []
        for index in self.describe(table).get("LocalSecondaryIndexes", []):
            sort = [k["AttributeName"] for k in index["KeySchema"] if k["KeyType"] == "RANGE"]
            if all(name in item for name in sort):
                found.append(index["IndexName"])
        return found


def instrument(meter: Meter) -> None:
    """Every DynamoDB call of the service goes through shared.storage.dynamo's clients: hook them."""
    from shared.storage import dynamo

    for make in (dynamo.client, dynamo.bulk_client):
        events = make().meta.events
        events.register("provide-client-params.dynamodb.*", meter.add_capacity)
        events.register("before-call.dynamodb.BatchGetItem", meter.keep_body)
        events.register("after-call.dynamodb.*", meter.record)
        events.register("provide-client-params.dynamodb.TransactWriteItems", lambda params, **_: meter_tx.append(params))


meter_tx: list[dict[str, Any]] = []


def seed_catalog(endpoint: str, tables: dict[str, str], n_items: int) -> None:
    rng = np.random.default_rng(7)
    created = datetime.now(timezone.utc) - timedelta(days=400)
    items = []
    for i in range(n_items):
        moment = created + timedelta(days=float(rng.uniform(0, 399)))
        items.append({"item_id": {"S": f"sku-{i:05d}"}, "title": {"S": f"Enamel mug, blue, 350 ml no. {i}"},
                      "category": {"S": CATEGORIES[i % 8]}, "price": {"N": f"{5 + i % 40}.90"},
                      "currency": {"S": "EUR"}, "in_stock": {"BOOL": bool(i % 20)}, "retired": {"BOOL": False},
                      "created_at": {"S": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
                      "updated_at": {"S": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
                      "attributes": {"M": {"brand": {"S": "Acme"}}}})
    write_items(local_client(endpoint), tables["ItemsTable"], items, threads=4)


def event(user: str, n: int, item: int, kind: str, moment: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": f"{user}-e{n}", "user_id": user, "item_id": f"sku-{item:05d}",
                            "event_type": kind, "timestamp": moment.isoformat(), "channel": "web"}
    if kind == "purchase":
        body.update(quantity=1, price=19.9, currency="EUR", order_id=f"{user}-o{n // 3}")
    return body


def seed_people(tables: dict[str, str], n_items: int, customers: list[str], visitors: list[str],
                history: int) -> None:
    """Events through ingest's own code (what it keeps per customer is kept), profiles by key."""
    from shared.events import Event
    from shared.storage.events import EventStore

    rng = np.random.default_rng(3)
    now = datetime.now(timezone.utc)
    store = EventStore(tables["EventsTable"], tables["UsersTable"], 8)
    for user in customers:
        moments = sorted(now - timedelta(days=float(d)) for d in rng.uniform(0.01, 300, size=history))
        batch = [Event.model_validate(event(user, n, int(rng.integers(0, n_items)),
                                            "purchase" if n % 3 == 0 else "view", moment))
                 for n, moment in enumerate(moments)]
        for start in range(0, len(batch), 1000):
            store.write(batch[start:start + 1000])
    for user in visitors:
        store.write([Event.model_validate(event(user, n, int(rng.integers(0, n_items)), "view",
                                                now - timedelta(minutes=30 - n))) for n in range(20)])
    from shared.storage import dynamo

    for n, user in enumerate(customers):  # profiles by UpdateItem: the summary ingest kept stays
        dynamo.client().update_item(
            TableName=tables["UsersTable"], Key=dynamo.serialize({"user_id": user}),
            UpdateExpression="SET country = :c, city = :city",
            ExpressionAttributeValues=dynamo.serialize({":c": ["DE", "FR", "GB"][n % 3], ":city": "Lyon"}))


def publish_model(models_dir: Path, n_items: int) -> None:
    from shared.storage.blobs import LocalBlobs
    from shared.storage.models import Manifest, ModelStore
    from shared.training.artifact import ModelArtifact
    from shared.training.config import TrainingConfig

    rng = np.random.default_rng(5)
    ids = [f"sku-{i:05d}" for i in range(n_items)]
    artifact = ModelArtifact(
        item_ids=ids, item_factors=rng.normal(0, 0.1, (n_items, 64)).astype(np.float32),
        popular_items=ids[:200], popular_by_category={c: ids[i:200:8] for i, c in enumerate(CATEGORIES)},
        parameters=TrainingConfig(factors=64).model_dump(mode="json"))
    store = ModelStore(LocalBlobs(models_dir))
    manifest = Manifest(version="bench", status="accepted", started_at=datetime.now(timezone.utc))
    store.publish(manifest, artifact)
    store.save(manifest)
    store.activate("bench")


@dataclass
class Case:
    name: str
    route_path: str
    method: str
    requests: list[tuple[str, str, dict[str, str], bytes]]  # path, query, path parameters, body


@dataclass
class Result:
    name: str
    function: str
    memory_mb: int
    rru: float
    wru: float
    ms: float
    calls: list[Call]
    corrected: bool

    def dollars(self) -> dict[str, float]:
        return {
            "dynamodb": self.rru * PRICES["dynamodb_rru"] * 1e6 + self.wru * PRICES["dynamodb_wru"] * 1e6,
            "lambda": (PRICES["lambda_request"] + self.ms / 1000 * self.memory_mb / 1024 * PRICES["lambda_gb_second"]) * 1e6,
            "api": PRICES["http_api_request"] * 1e6,
        }


def memory_of(template: dict[str, Any], function: str) -> int:
    props = resources(template, "AWS::Serverless::Function")[function]
    return int(props.get("MemorySize") or template.get("Globals", {}).get("Function", {}).get("MemorySize", 128))


def run_case(case: Case, routes: dict[str, Any], handlers: dict[str, Any], meter: Meter, template: dict[str, Any],
             warm: int = 3) -> Result:
    route = routes[f"{case.method} {case.route_path}"]
    if route.function not in handlers:
        handlers[route.function] = load_handler(route)
        wait_warm(route.function)
    handler = handlers[route.function]

    def call(path: str, query: str, params: dict[str, str], body: bytes) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # the metrics Lambda would send to CloudWatch
            response = handler(api_event(route, case.method, path, query, {"content-type": "application/json"},
                                         body, params, "127.0.0.1", trusted_context()),
                               LambdaContext(function_name=route.function))
        if response["statusCode"] >= 300:
            raise SystemExit(f"{case.name}: {response['statusCode']} {response['body'][:300]}")

    for request in case.requests[:warm]:
        call(*request)
    wait_warm(route.function)
    rru = wru = 0.0
    times = []
    detail: list[Call] = []
    corrected = False
    for n, request in enumerate(case.requests[warm:]):
        meter.calls, meter_tx[:] = [], []
        meter.active = True
        started = time.perf_counter()
        call(*request)
        times.append(time.perf_counter() - started)
        meter.active = False
        transactions = [c for c in meter.calls if c.operation == "TransactWriteItems"]
        for tx_call, tx_request in zip(transactions, meter_tx):
            meter.transaction_rule(tx_request, tx_call)
        corrected |= any(c.note for c in meter.calls)
        rru += sum(c.rru for c in meter.calls)
        wru += sum(c.wru for c in meter.calls)
        if n == 0:
            detail = list(meter.calls)
    count = len(case.requests) - warm
    return Result(case.name, route.function, memory_of(template, route.function), rru / count, wru / count,
                  statistics.median(times) * 1000, detail, corrected)


# What a function loads in the background, off the request path, by the name its module gives it:
# the recommend function's catalog, the segments function's categories (catalog_snapshot.py).
SNAPSHOTS = {"catalog_view": "catalog_snapshot", "categories": "catalog_categories"}


def wait_warm(function: str, timeout: float = 120) -> None:
    """A function that loads a snapshot in the background is warm once it has."""
    module = sys.modules.get(f"lambda_{function}_app")
    deadline = time.monotonic() + timeout
    for view in (getattr(module, name, None) for name in SNAPSHOTS):
        while view is not None and not view.ready() and time.monotonic() < deadline:
            time.sleep(0.05)


def snapshot_loads(meter: Meter, items_table: str) -> dict[str, float]:
    """The read units of one load of each snapshot, by the storage function that loads it."""
    from shared.storage import catalog

    loads = {}
    for load in SNAPSHOTS.values():
        meter.calls = []
        meter.active = True
        getattr(catalog, load)(items_table)
        meter.active = False
        loads[load] = sum(c.rru for c in meter.calls)
    return loads


def main() -> None:
    quiet_handlers()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--history", type=int, default=500)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--detail", action="store_true")
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    dynamodb = DynamoDBLocal.start()
    template = load_template()
    try:
        tables = create_tables(dynamodb.endpoint, f"cost-{uuid.uuid4().hex[:6]}")
        models_dir = Path(tempfile.mkdtemp())
        os.environ.update({"AWS_ENDPOINT_URL_DYNAMODB": dynamodb.endpoint, "LOCAL_MODEL_DIR": str(models_dir),
                           "EVENTS_TABLE": tables["EventsTable"], "ITEMS_TABLE": tables["ItemsTable"],
                           "USERS_TABLE": tables["UsersTable"], "SEGMENTS_TABLE": tables["SegmentsTable"],
                           "MODEL_BUCKET": "bench", "CAMPAIGN_BUCKET": "bench"})
        customers = [f"c-{n:04d}" for n in range(args.customers)]
        visitors = [f"v-{uuid.uuid4()}" for _ in range(args.customers)]
        print(f"seeding: {args.items:,} items, {len(customers)} customers x {args.history} events, "
              f"{len(visitors)} visitors x 20 views ...", file=sys.stderr)
        seed_catalog(dynamodb.endpoint, tables, args.items)
        seed_people(tables, args.items, customers, visitors, args.history)
        publish_model(models_dir, args.items)

        meter = Meter(sizer=local_client(dynamodb.endpoint))
        instrument(meter)
        routes = {r.route_key: r for r in http_routes(template)}
        n = args.requests + 3
        people = [customers[i % len(customers)] for i in range(n)]
        guests = [visitors[i % len(visitors)] for i in range(n)]
        items = [f"sku-{(7 * i + 1) % args.items:05d}" for i in range(n)]
        ranked = json.dumps({"item_ids": [f"sku-{j:05d}" for j in range(0, 500, 10)]}).encode()
        stamp = datetime.now(timezone.utc)

        def events_body(users: list[str], tag: int) -> bytes:
            return json.dumps({"events": [event(user, 10_000 + 100 * tag + k, (tag * 31 + k) % args.items,
                                                "purchase" if k % 5 == 0 else "view",
                                                stamp - timedelta(seconds=60 - k))
                                          for k, user in enumerate(users)]}).encode()

        cases = [
            Case("customer recommendations", "/users/{user_id}/recommendations", "GET",
                 [(f"/users/{u}/recommendations", "limit=10", {"user_id": u}, b"") for u in people]),
            Case("visitor recommendations", "/visitors/{visitor_id}/recommendations", "GET",
                 [(f"/visitors/{v}/recommendations", "limit=10", {"visitor_id": v}, b"") for v in guests]),
            Case("popular", "/popular", "GET", [("/popular", "limit=10", {}, b"")] * n),
            Case("similar", "/items/{item_id}/similar", "GET",
                 [(f"/items/{i}/similar", "limit=10", {"item_id": i}, b"") for i in items]),
            Case("rank (50 items)", "/users/{user_id}/rank", "POST",
                 [(f"/users/{u}/rank", "", {"user_id": u}, ranked) for u in people]),
            Case("segments of a customer", "/users/{user_id}/segments", "GET",
                 [(f"/users/{u}/segments", "", {"user_id": u}, b"") for u in people]),
            Case("POST /events: 25 events of 25 customers", "/events", "POST",
                 [("/events", "", {}, events_body([customers[(t + k) % len(customers)] for k in range(25)], t))
                  for t in range(n)]),
            Case("POST /events: 25 events of 1 customer", "/events", "POST",
                 [("/events", "", {}, events_body([customers[t % len(customers)]] * 25, 1000 + t))
                  for t in range(n)]),
        ]
        handlers: dict[str, Any] = {}
        results = [run_case(case, routes, handlers, meter, template) for case in cases if
                   f"{case.method} {case.route_path}" in routes]
        snapshot_rru = snapshot_loads(meter, tables["ItemsTable"])
    finally:
        dynamodb.stop()

    print(f"shop-recs cost per route: {args.items:,} catalog items; customers with {args.history} events "
          f"(a third purchases), visitors with 20 views; {args.requests} warm requests each, DynamoDB Local, "
          f"in-process")
    print(f"prices: {PRICES_REGION}, read {PRICES_READ}: DynamoDB ${PRICES['dynamodb_rru'] * 1e6:.3f}/M RRU, "
          f"${PRICES['dynamodb_wru'] * 1e6:.3f}/M WRU; Lambda ${PRICES['lambda_request'] * 1e6:.2f}/M requests, "
          f"${PRICES['lambda_gb_second']}/GB-s; HTTP API ${PRICES['http_api_request'] * 1e6:.2f}/M")
    print(f"{'route':42} {'RRU':>7} {'WRU':>7} {'ms':>7} {'MB':>5} {'DynamoDB':>9} {'Lambda':>7} {'API':>6} "
          f"{'$ / M requests':>15}")
    for r in results:
        d = r.dollars()
        print(f"{r.name:42} {r.rru:7.1f} {r.wru:7.1f} {r.ms:7.1f} {r.memory_mb:5d} {d['dynamodb']:9.2f} "
              f"{d['lambda']:7.2f} {d['api']:6.2f} {sum(d.values()):15.2f}{'  *' if r.corrected else ''}")
    if "TransactWriteItems" in meter.corrected:
        print("* TransactWriteItems: DynamoDB Local reported fewer write units than DynamoDB's documented rule "
              "(2 WRU per KB of each item written or checked in a transaction, 1 per KB of each local index "
              "entry); the rule's figure is used.")
    if "BatchGetItem" in meter.corrected:
        print("* BatchGetItem: DynamoDB Local charged nothing for keys not found; each is counted at one read "
              "(0.5 RRU eventually consistent, 1 strongly), as DynamoDB charges a GetItem of a missing item.")
    print("Lambda ms: the handler's median on this machine (not measured on AWS); cold starts, CloudWatch "
          "Logs and X-Ray are left out (docs/deploy.md adds them).")
    from shared.serving.catalog_snapshot import CATALOG_REFRESH_SECONDS

    loads = 30 * 24 * 3600 / CATALOG_REFRESH_SECONDS
    for what, load in (("Catalog snapshot (recommend function", "catalog_snapshot"),
                       ("Categories snapshot (segments function", "catalog_categories")):
        rru = snapshot_rru[load]
        print(f"{what}, off the request path): {rru:.1f} RRU a load, every {CATALOG_REFRESH_SECONDS:.0f} s per warm "
              f"instance: {loads * rru:,.0f} RRU = ${loads * rru * PRICES['dynamodb_rru']:.3f} per warm instance "
              f"per 30 days")
    if args.detail:
        for r in results:
            print(f"\n{r.name}: the DynamoDB calls of one request")
            for c in r.calls:
                extra = f"  ({c.note}; reported {c.reported_wru or c.reported_rru:g})" if c.note else ""
                print(f"  {c.operation:20} RRU {c.rru:6.1f}  WRU {c.wru:6.1f}{extra}")


if __name__ == "__main__":
    main()
