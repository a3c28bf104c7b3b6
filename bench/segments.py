"""Segment tags: the nightly computation for 100k customers, and the user endpoint's latency,
each against the same work done directly in numpy.

    ./dev bench segments [--customers 100000] [--requests 300]

1. Materialization compute: segment_customer (the function both paths use) for every customer,
   against a vectorized numpy computation of the same RFM, value and lifecycle rules over
   arrays; the two are checked to agree on every customer's RFM name. Storage is not included:
   writing members is DynamoDB's batch writes, measured by bench/ingest.py.
2. GET /users/{id}/segments on DynamoDB Local, in-process as Lambda calls it, against the raw
   reads it needs (GetItem, Query, BatchGetItem) followed by the numpy computation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "bench",
                   "POWERTOOLS_METRICS_NAMESPACE": "Bench", "POWERTOOLS_METRICS_DISABLED": "true",
                   "POWERTOOLS_TRACE_DISABLED": "true"})
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.quiet import quiet_handlers  # noqa: E402
from devstack.dynamodb_local import LOCAL_CREDENTIALS, DynamoDBLocal, client, create_tables, write_items  # noqa: E402
from devstack.gateway import LambdaContext, api_event, load_handler  # noqa: E402
from devstack.local_auth import customer_context  # noqa: E402
from devstack.template import http_routes, load_template  # noqa: E402
from shared.history import HistoryEvent  # noqa: E402
from shared.segments.tags import RFM_GRID, segment_customer  # noqa: E402
from shared.users import PurchaseSummary, User  # noqa: E402

NOW = datetime.now(timezone.utc)
CATEGORIES = ["kitchen", "garden", "toys", "books"]


def synthetic_base(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    orders = rng.geometric(0.3, n)
    recency = rng.uniform(0, 365, n)
    tenure = recency + rng.uniform(0, 365, n)
    spend = np.round(orders * rng.lognormal(3, 0.6, n), 2)
    return orders, recency, tenure, spend


def statistics(orders, recency, spend) -> dict:
    q = [20, 40, 60, 80]
    return {"recency_days_quintiles": np.percentile(recency, q).tolist(),
            "frequency_quintiles": np.percentile(orders, q).tolist(),
            "spend_quintiles": {"EUR": np.percentile(spend, q).tolist()},
            "spend_percentiles": {"EUR": dict(zip(["50", "80", "95"], np.percentile(spend, [50, 80, 95]).tolist()))}}


def profile(orders: int, recency: float, tenure: float, spend: float) -> User:
    return User(user_id="u", country="DE", summary=PurchaseSummary(
        purchase_count=int(orders), spend={"EUR": float(spend)},
        last_purchase_at=(NOW - timedelta(days=float(recency))).isoformat(),
        first_purchase_at=(NOW - timedelta(days=float(tenure))).isoformat()))


def history(i: int, recency: float) -> list[HistoryEvent]:
    stamp = (NOW - timedelta(days=float(recency))).timestamp()
    return [HistoryEvent(f"i{(i + k) % 400}", "purchase" if k % 2 == 0 else "view", 1, stamp - k * 86_400,
                         "web" if k % 3 else "ios", 12.0, "EUR") for k in range(5)]


def numpy_reference(orders, recency, tenure, spend, stats) -> np.ndarray:
    """RFM names, value tiers and lifecycle for every customer at once."""
    r = 6 - (1 + (recency[:, None] > np.array(stats["recency_days_quintiles"])).sum(axis=1))
    f = 1 + (orders[:, None] > np.array(stats["frequency_quintiles"])).sum(axis=1)
    names = np.empty(len(orders), dtype=object)
    for name, rule in RFM_GRID.items():
        names[np.vectorize(rule)(r, f)] = name
    p = stats["spend_percentiles"]["EUR"]
    # Value tiers and lifecycle stages are computed for a like-for-like comparison, then dropped.
    _tiers = np.select([spend > p["95"], spend > p["80"], spend > p["50"]], ["VIP", "High value", "Medium value"],
                       "Low value")
    _stages = np.select([tenure <= 30, recency <= 90, recency <= 180], ["New", "Active", "Lapsing"], "Churned")
    return names


def compute_bench(n: int) -> None:
    orders, recency, tenure, spend = synthetic_base(n)
    stats = statistics(orders, recency, spend)
    categories = {f"i{k}": CATEGORIES[k % 4] for k in range(400)}
    inputs = [(profile(orders[i], recency[i], tenure[i], spend[i]), history(i, recency[i])) for i in range(n)]
    started = time.perf_counter()
    ours = [segment_customer(p, h, categories, stats, NOW)[2] for p, h in inputs]
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    reference = numpy_reference(orders, recency, tenure, spend, stats)
    numpy_seconds = time.perf_counter() - started
    rfm = [next(t.name for t in tags if t.family == "rfm") for tags in ours]
    agree = sum(a == b for a, b in zip(rfm, reference, strict=True))
    print(f"materialization compute, {n:,} customers (5 events each):")
    print(f"  segment_customer, every family : {seconds:6.2f} s  ({n / seconds:,.0f} customers/s)")
    print(f"  numpy, RFM + value + lifecycle : {numpy_seconds:6.2f} s  ({seconds / numpy_seconds:,.0f}x faster)")
    print(f"  RFM names agree on {agree:,} of {n:,} customers")


def endpoint_bench(requests: int) -> None:
    os.environ.update(LOCAL_CREDENTIALS)
    quiet_handlers()
    dynamodb = DynamoDBLocal.start()
    try:
        tables = create_tables(dynamodb.endpoint, f"bench-{uuid.uuid4().hex[:6]}")
        os.environ.update({"AWS_ENDPOINT_URL_DYNAMODB": dynamodb.endpoint, "EVENTS_TABLE": tables["EventsTable"],
                           "ITEMS_TABLE": tables["ItemsTable"], "USERS_TABLE": tables["UsersTable"],
                           "SEGMENTS_TABLE": tables["SegmentsTable"], "MODEL_BUCKET": "bench",
                           "LOCAL_MODEL_DIR": str(Path("/tmp") / f"bench-models-{uuid.uuid4().hex[:6]}")})
        db = client(dynamodb.endpoint)
        orders, recency, tenure, spend = synthetic_base(300, seed=2)
        rows = []
        for i in range(300):
            p = profile(orders[i], recency[i], tenure[i], spend[i])
            db.put_item(TableName=tables["UsersTable"], Item={
                "user_id": {"S": f"u{i}"}, "country": {"S": "DE"}, "purchase_count": {"N": str(int(orders[i]))},
                "spend": {"M": {"EUR": {"N": str(spend[i])}}},
                "last_purchase_at": {"S": p.summary.last_purchase_at},
                "first_purchase_at": {"S": p.summary.first_purchase_at}})
            for k, event in enumerate(history(i, recency[i]) * 8):
                rows.append({"user_id": {"S": f"u{i}"}, "event_id": {"S": f"e{k}"}, "item_id": {"S": event.item_id},
                             "event_type": {"S": event.event_type}, "quantity": {"N": "1"}, "channel": {"S": "web"},
                             "price": {"N": "12"}, "currency": {"S": "EUR"},
                             "ts": {"S": datetime.fromtimestamp(event.timestamp - k * 3600, timezone.utc)
                                    .strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})
        write_items(db, tables["EventsTable"], rows)
        route = next(r for r in http_routes(load_template()) if r.path == "/users/{user_id}/segments")
        handler = load_handler(route)
        users = [f"u{i % 300}" for i in range(requests)]
        ours, raw = [], []
        for user in users:
            event = api_event(route, "GET", f"/users/{user}/segments", "", {}, b"", {"user_id": user}, "127.0.0.1",
                              customer_context(user))
            started = time.perf_counter()
            assert handler(event, LambdaContext(function_name=route.function))["statusCode"] == 200
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            db.get_item(TableName=tables["UsersTable"], Key={"user_id": {"S": user}})
            items = db.query(TableName=tables["EventsTable"], IndexName="by_time", ScanIndexForward=False, Limit=500,
                             ConsistentRead=True, KeyConditionExpression="user_id = :u",
                             ExpressionAttributeValues={":u": {"S": user}})["Items"]
            keys = list({r["item_id"]["S"] for r in items})[:100]
            db.batch_get_item(RequestItems={tables["ItemsTable"]: {"Keys": [{"item_id": {"S": k}} for k in keys]}})
            db.query(TableName=tables["SegmentsTable"], KeyConditionExpression="segment_id = :c",
                     ExpressionAttributeValues={":c": {"S": "#custom"}})
            i = int(user[1:])
            numpy_reference(orders[i:i + 1], recency[i:i + 1], tenure[i:i + 1], spend[i:i + 1],
                            statistics(orders, recency, spend))
            raw.append(time.perf_counter() - started)
    finally:
        dynamodb.stop()
    (o50, o99), (r50, r99) = (np.percentile(ours, [50, 99]) * 1000), (np.percentile(raw, [50, 99]) * 1000)
    print(f"GET /users/{{id}}/segments, {requests} requests, 40 events per customer, DynamoDB Local:")
    print(f"  handler             p50 {o50:6.1f} ms  p99 {o99:6.1f} ms")
    print(f"  raw reads + numpy   p50 {r50:6.1f} ms  p99 {r99:6.1f} ms")
    print(f"  ratio               p50 {o50 / r50:6.2f}     p99 {o99 / r99:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    compute_bench(args.customers)
    endpoint_bench(args.requests)


if __name__ == "__main__":
    main()
