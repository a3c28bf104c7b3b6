"""A customer with 100k events: export and erasure stay inside Lambda's limits.

    ./dev bench privacy [--events 100000]

One customer's events go straight into DynamoDB Local. Then, through the privacy handler called
in-process as Lambda calls it (API Gateway v2 events, a 29 s Lambda context):
- GET /users/{id}/export, page after page: the largest response against Lambda's 6 MB limit;
- DELETE /users/{id}, repeated while it answers 202: each call's time against the 29 s timeout.
The raw work for comparison, in the same run on a second copy of the events: one paginated Query
of the customer's keys and boto3 BatchWriteItem deletes, 25 a call, one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quiet import quiet_handlers  # noqa: E402
from devstack.dynamodb_local import LOCAL_CREDENTIALS, DynamoDBLocal, client, create_tables, write_items  # noqa: E402
from devstack.gateway import LambdaContext, api_event, load_handler  # noqa: E402
from devstack.local_auth import trusted_context  # noqa: E402
from devstack.template import http_routes, load_template  # noqa: E402

USER = "u-heavy"
LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024


def seed(dynamodb, table: str, n: int) -> None:  # noqa: ANN001
    start = datetime.now(timezone.utc) - timedelta(days=365)
    items = [{"user_id": {"S": USER}, "event_id": {"S": f"e-{i:07}"}, "item_id": {"S": f"sku-{i % 5000}"},
              "event_type": {"S": "view"}, "channel": {"S": "web"}, "quantity": {"N": "1"},
              "ts": {"S": (start + timedelta(seconds=300 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
              "ingested_at": {"S": "bench"}} for i in range(n)]
    write_items(dynamodb, table, items, threads=8)


def raw_erase(dynamodb, table: str) -> float:  # noqa: ANN001
    started = time.perf_counter()
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table, KeyConditionExpression="user_id = :u", ProjectionExpression="user_id, event_id",
        ExpressionAttributeValues={":u": {"S": USER}}, ConsistentRead=True)
    keys = [row for page in pages for row in page["Items"]]
    for start in range(0, len(keys), 25):
        request = {table: [{"DeleteRequest": {"Key": key}} for key in keys[start:start + 25]]}
        while request:
            request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems")
    return time.perf_counter() - started


def call(handler, route, method: str, path: str, query: str = "") -> tuple[int, bytes, float]:  # noqa: ANN001
    event = api_event(route, method, path, query, {}, b"", {"user_id": USER}, "127.0.0.1", trusted_context())
    started = time.perf_counter()
    result = handler(event, LambdaContext(function_name=route.function))
    return result["statusCode"], result["body"].encode(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    quiet_handlers()
    dynamodb_local = DynamoDBLocal.start()
    try:
        dynamodb = client(dynamodb_local.endpoint)
        tables = create_tables(dynamodb_local.endpoint, f"bench-{uuid.uuid4().hex[:6]}")
        raw_tables = create_tables(dynamodb_local.endpoint, f"bench-{uuid.uuid4().hex[:6]}")
        os.environ.update({"EVENTS_TABLE": tables["EventsTable"], "ITEMS_TABLE": tables["ItemsTable"],
                           "USERS_TABLE": tables["UsersTable"], "SEGMENTS_TABLE": tables["SegmentsTable"],
                           "MODEL_BUCKET": "bench", "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local.endpoint})
        started = time.perf_counter()
        seed(dynamodb, tables["EventsTable"], args.events)
        seed(dynamodb, raw_tables["EventsTable"], args.events)
        print(f"one customer with {args.events:,} events (seeded twice in {time.perf_counter() - started:.0f} s), "
              "DynamoDB Local, the privacy handler in-process with a 29 s Lambda context")

        routes = {r.route_key: r for r in http_routes(load_template())}
        export_route, erase_route = routes["GET /users/{user_id}/export"], routes["DELETE /users/{user_id}"]
        handler = load_handler(export_route)
        path = f"/users/{quote(USER)}"

        pages, largest, seen, seconds, cursor = 0, 0, 0, 0.0, None
        while True:
            status, body, took = call(handler, export_route, "GET", path + "/export",
                                      f"cursor={cursor}" if cursor else "")
            assert status == 200, body[:300]
            page = json.loads(body)
            pages, largest, seen, seconds = pages + 1, max(largest, len(body)), seen + len(page["events"]), seconds + took
            cursor = page["next_cursor"]
            if not cursor:
                break
        print(f"  export : {pages} pages, {seen:,} events, largest response {largest / 1e6:.2f} MB "
              f"({largest / LAMBDA_RESPONSE_LIMIT:.0%} of Lambda's 6 MB), {seconds / pages:.2f} s a page")

        calls = []
        while True:
            status, body, took = call(handler, erase_route, "DELETE", path)
            calls.append((status, took, json.loads(body)["erased"]["events"]))
            if status == 200:
                break
        handler_total = sum(took for _, took, _ in calls)
        print(f"  erase  : {len(calls)} call(s): " + ", ".join(f"{s} in {t:.1f} s ({n:,} events)" for s, t, n in calls)
              + f"; longest call {max(t for _, t, _ in calls) / 29:.0%} of the 29 s timeout")
        raw = raw_erase(dynamodb, raw_tables["EventsTable"])
        print(f"  raw query + sequential BatchWriteItem deletes: {raw:.1f} s; "
              f"handler/raw time {handler_total / raw:.2f}")
    finally:
        dynamodb_local.stop()


if __name__ == "__main__":
    main()
