"""Segment tags: the nightly computation for 100k customers, and the user endpoint's latency.

    ./dev bench segments [--part compute|write|endpoint|all] [--customers 100000] [--writers 20000]
                         [--requests 300]

1. compute: the nightly run's members (segment id, family, name, customer, reason) for 100k
   generated customers with varied histories and 11 custom rules (the customers of
   tests/unit/test_segments_batch_agreement.py), computed the way the nightly run did before,
   a row at a time, one customer at a time with segment_customer (the request path), and with
   segment_everyone (shared/segments/batch.py), each segment's members as columns, grouped as
   the store writes them (work the store did on the rows before), in the same run; the members
   are checked to be the same. CPU time
   (time.process_time) and wall clock of each, customers/s and the ratio. Storage is not
   included: writing members is DynamoDB's batch writes, measured by bench/ingest.py.
2. write: the nightly run's members of `--writers` of those customers written to DynamoDB Local
   by SegmentStore.write_run (pages of members, buckets of customers), against boto3 writing the
   same items (BatchWriteItem, as many threads), and against the layout before (an item per
   member and its entry in a by-customer index), written the same raw way to a table with that
   index; write units by DynamoDB's rules (bench/cost.py's item sizes), and dollars a night; and this
   process's CPU time for ours and for the raw writes (DynamoDB Local's is in its own process).
3. endpoint: GET /users/{id}/segments on DynamoDB Local, in-process as Lambda calls it, against
   the raw reads it needs (GetItem, Query, BatchGetItem) followed by a numpy computation of RFM.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

os.environ.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "bench",
                   "POWERTOOLS_METRICS_NAMESPACE": "Bench", "POWERTOOLS_METRICS_DISABLED": "true",
                   "POWERTOOLS_TRACE_DISABLED": "true"})
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3  # noqa: E402
import numpy as np  # noqa: E402

from bench.cost import PRICES  # noqa: E402
from bench.item_size import put_units  # noqa: E402
from bench.quiet import quiet_handlers  # noqa: E402
from devstack.dynamodb_local import LOCAL_CREDENTIALS, DynamoDBLocal, client, create_tables, write_items  # noqa: E402
from devstack.gateway import LambdaContext, api_event, load_handler  # noqa: E402
from devstack.local_auth import customer_context  # noqa: E402
from devstack.template import http_routes, load_template  # noqa: E402
from shared.history import HistoryEvent  # noqa: E402
from shared.history_columns import HistoryColumns  # noqa: E402
from shared.segments.batch import segment_everyone  # noqa: E402
from shared.segments.members import SegmentMembers  # noqa: E402
from shared.segments.tags import RFM_GRID, segment_customer  # noqa: E402
from shared.storage import dynamo  # noqa: E402
from shared.storage import segments as segment_storage  # noqa: E402
from shared.storage.segments import SegmentStore  # noqa: E402
from shared.users import PurchaseSummary, User, may_profile  # noqa: E402

NOW = datetime.now(timezone.utc)


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


def one_by_one(data) -> list[tuple[str, str, str, str, str]]:
    """The nightly run's members as it computed them before segment_everyone: one customer at a time."""
    rows = []
    for user_id in data.users.keys() | data.histories.keys():
        user = data.users.get(user_id)
        history = data.histories.get(user_id, []) if may_profile(user) else []
        for tag in segment_customer(user, history, data.categories, data.statistics, data.now, data.definitions)[2]:
            rows.append((tag.segment_id, tag.family, tag.name, user_id, tag.reason))
    return rows


def all_at_once(data) -> list[SegmentMembers]:
    return segment_everyone(data.users, data.histories, data.categories, data.statistics, data.now,
                            data.definitions).by_segment()


def from_columns(columns: HistoryColumns, data) -> list[SegmentMembers]:
    return segment_everyone(data.users, columns, data.categories, data.statistics, data.now,
                            data.definitions).by_segment()


def as_rows(groups: list[SegmentMembers]) -> list[tuple[str, str, str, str, str]]:
    """The members as the rows one_by_one gives (segment_id, family, name, user_id, reason)."""
    return [(group.segment_id, group.family, group.name, user_id, reason) for group in groups
            for user_id, reason in zip(group.user_ids, group.reasons)]


def timed(work, data) -> tuple[float, float, list]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    rows = work(data)
    return time.process_time() - cpu, time.perf_counter() - wall, rows


def compute_bench(n: int) -> None:
    from tests.unit.test_segments_batch_agreement import generated_customers

    data = generated_customers(n)
    customers = len(data.users.keys() | data.histories.keys())
    events = sum(map(len, data.histories.values()))
    before_cpu, before_wall, before = timed(one_by_one, data)
    # Only a fingerprint of the rows is kept, so that each way runs with the same objects alive.
    fingerprint = len(before), sum(map(hash, before))
    del before
    batch_cpu, batch_wall, batch = timed(all_at_once, data)
    batch = as_rows(batch)
    same = fingerprint == (len(batch), sum(map(hash, batch)))
    del batch
    # What the nightly read hands the segments: the histories as columns (made by the read, not timed).
    columns_cpu, columns_wall, batch = timed(partial(from_columns, HistoryColumns.of(data.histories)), data)
    batch = as_rows(batch)
    same = same and fingerprint == (len(batch), sum(map(hash, batch)))
    print(f"nightly segments compute, {customers:,} customers, {events:,} events, "
          f"{len(data.definitions)} custom rules, {len(batch):,} member rows:")
    for label, cpu, wall in (("one by one (segment_customer)", before_cpu, before_wall),
                             ("segment_everyone, lists      ", batch_cpu, batch_wall),
                             ("segment_everyone, columns    ", columns_cpu, columns_wall)):
        print(f"  {label} CPU {cpu:6.2f} s ({customers / cpu:9,.0f} customers/s)   "
              f"wall {wall:6.2f} s ({customers / wall:9,.0f} customers/s)   "
              f"ratio CPU {before_cpu / cpu:5.1f}x, wall {before_wall / wall:5.1f}x")
    print(f"  the same member rows: {'yes' if same else 'NO'}")


def scanned(db, table: str) -> list[dict]:
    return [row for page in db.get_paginator("scan").paginate(TableName=table) for row in page["Items"]]


def one_item_per_member(run: str, rows: list[tuple[str, str, str, str, str]], expires: int) -> list[dict]:
    """The layout before pages: an item per member, found by customer through a by_user index."""
    return [{"segment_id": {"S": segment_id}, "sk": {"S": f"m#{run}#{user_id}"}, "member_user_id": {"S": user_id},
             "reason": {"S": reason}, "run": {"S": run}, "expires_at": {"N": str(expires)}}
            for segment_id, _, _, user_id, reason in rows]


def write_bench(n: int, rounds: int = 2) -> None:
    from tests.unit.test_segments_batch_agreement import generated_customers

    data = generated_customers(n)
    groups = from_columns(HistoryColumns.of(data.histories), data)
    rows = as_rows(groups)
    customers = len({row[3] for row in rows})
    threads, run = segment_storage.WRITE_THREADS, "20261201T000000"
    os.environ.update(LOCAL_CREDENTIALS)
    quiet_handlers()
    dynamodb = DynamoDBLocal.start()
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb.endpoint
    before = one_item_per_member(run, rows, int(time.time()))
    ours_s = raw_s = before_s = ours_cpu = raw_cpu = math.inf
    try:
        db = client(dynamodb.endpoint)
        # The raw writes through a client configured as the service's (no parameter validation): the
        # CPU compared is the work write_run adds, not botocore's checks.
        raw = boto3.client("dynamodb", endpoint_url=dynamodb.endpoint, region_name=LOCAL_CREDENTIALS["AWS_DEFAULT_REGION"],
                           aws_access_key_id="local", aws_secret_access_key="local", config=dynamo.CLIENT_CONFIG)
        for _ in range(rounds):  # fresh tables each round; the first also warms DynamoDB Local up
            ours_table = create_tables(dynamodb.endpoint, f"bench-{uuid.uuid4().hex[:6]}")["SegmentsTable"]
            raw_table = create_tables(dynamodb.endpoint, f"bench-{uuid.uuid4().hex[:6]}")["SegmentsTable"]
            before_table = f"bench-before-{uuid.uuid4().hex[:6]}"
            db.create_table(TableName=before_table, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"} for name in ("segment_id", "sk", "member_user_id")],
                KeySchema=[{"AttributeName": "segment_id", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                GlobalSecondaryIndexes=[{"IndexName": "by_user", "Projection": {"ProjectionType": "KEYS_ONLY"},
                                         "KeySchema": [{"AttributeName": "member_user_id", "KeyType": "HASH"},
                                                       {"AttributeName": "segment_id", "KeyType": "RANGE"}]}])
            started, cpu = time.perf_counter(), time.process_time()
            SegmentStore(ours_table).write_run(run, NOW.isoformat(), groups)
            ours_s, ours_cpu = min(ours_s, time.perf_counter() - started), min(ours_cpu, time.process_time() - cpu)
            items = scanned(db, ours_table)
            started, cpu = time.perf_counter(), time.process_time()
            write_items(raw, raw_table, items, threads)
            raw_s, raw_cpu = min(raw_s, time.perf_counter() - started), min(raw_cpu, time.process_time() - cpu)
            started = time.perf_counter()
            write_items(raw, before_table, before, threads)
            before_s = min(before_s, time.perf_counter() - started)
            for table in (ours_table, raw_table, before_table):
                db.delete_table(TableName=table)
    finally:
        dynamodb.stop()
    ours_wru = sum(map(put_units, items))
    # Each item of the layout before also wrote its by_user index entry: its keys, well under 1 KB.
    before_wru = sum(map(put_units, before)) + len(before)
    dollars = PRICES["dynamodb_wru"]
    print(f"nightly segment members written, {customers:,} customers, {len(rows):,} memberships, "
          f"DynamoDB Local, {threads} threads each, best of {rounds}:")
    print(f"  write_run (pages, customer buckets)    {ours_s:6.1f} s  {len(items):9,} items  {ours_wru:9,} WRU "
          f"({ours_wru / customers:5.2f} a customer)  ${ours_wru * dollars:.4f} a night")
    pages_wru = sum(put_units(item) for item in items if item["sk"]["S"].startswith("p#"))
    buckets_wru = sum(put_units(item) for item in items if item["segment_id"]["S"].startswith("#customers#"))
    print(f"    of which pages {pages_wru / customers:.2f}, buckets of customers {buckets_wru / customers:.2f}, "
          f"the run's record and index {(ours_wru - pages_wru - buckets_wru) / customers:.2f} a customer")
    print(f"  raw BatchWriteItem, the same items     {raw_s:6.1f} s   ratio ours/raw {ours_s / raw_s:.2f}")
    # DynamoDB Local's own work is in its process: this one's CPU is what a Lambda function pays for.
    print(f"  CPU of this process: write_run {ours_cpu:.2f} s (the pages, the buckets, their wire form, the calls), "
          f"raw {raw_cpu:.2f} s (the calls of items already in wire form): ratio {ours_cpu / raw_cpu:.2f}")
    print(f"  before: an item a member + by_user     {before_s:6.1f} s  {len(before):9,} items  {before_wru:9,} WRU "
          f"({before_wru / customers:5.2f} a customer)  ${before_wru * dollars:.4f} a night")
    print(f"  pages: {before_wru / ours_wru:.1f}x fewer write units, {before_s / ours_s:.1f}x less time; "
          f"at 500,000 customers a night ${ours_wru / customers * 500_000 * dollars:.2f} "
          f"(before ${before_wru / customers * 500_000 * dollars:.2f})")


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
    parser.add_argument("--part", choices=("compute", "write", "endpoint", "all"), default="all")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=20_000, help="customers whose members the write part writes")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    if args.part in ("compute", "all"):
        compute_bench(args.customers)
    if args.part in ("write", "all"):
        write_bench(args.writers)
    if args.part in ("endpoint", "all"):
        endpoint_bench(args.requests)


if __name__ == "__main__":
    main()
