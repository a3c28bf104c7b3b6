"""Ingest throughput: the ingest handler versus a plain boto3 batch writer, same events, same run.

    ./dev bench ingest [--events 20000] [--rounds 2] [--part handler|emulator]

Both store the same demo-shop events in DynamoDB Local (fresh tables each round). The raw
writer is boto3's ``Table.batch_writer``: puts only, no validation, no idempotency, no summary.
The handler is called in-process exactly as Lambda calls it (API Gateway v2 events of 1,000
events each) and does everything production does: JSON parsing, per-event validation,
conditional puts, the purchase summaries and the recent-activity items, in transactions.

Beside each rate: the DynamoDB write request units per event of what was sent, by DynamoDB's
documented rules (`WriteUnits`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.item_size import put_units  # noqa: E402
from bench.quiet import quiet_handlers  # noqa: E402
from devstack.demo_data import generate_shop  # noqa: E402
from devstack.dynamodb_local import DynamoDBLocal, create_tables, delete_tables  # noqa: E402
from devstack.gateway import LambdaContext, api_event, load_handler  # noqa: E402
from devstack.local_auth import trusted_context  # noqa: E402
from devstack.dynamodb_local import LOCAL_CREDENTIALS  # noqa: E402
from devstack.template import http_routes, load_template  # noqa: E402

BATCH = 1000


@dataclass
class WriteUnits:
    """The write request units of the writes a client sends, by DynamoDB's documented rules:
    a put costs 1 per KB of the item (rounded up), and an event's by_time index entry
    (projection ALL) as much again; in a transaction every action costs 2 per KB (the index entry
    1, as bench/cost.py counts it). Updates and condition checks are counted at their 1 KB minimum:
    the bench's profile rows and purchase keys stay under 1 KB. DynamoDB Local's own report is not
    used: it rounds a transaction's items up together, which DynamoDB does not."""

    events_table: str
    units: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, client: Any) -> None:
        """Count the transactions this (low-level) client sends."""
        client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems", self.transaction)

    def transaction(self, params: dict[str, Any], **_: Any) -> None:
        self.add(sum(self.put(spec["TableName"], spec["Item"], 2) if kind == "Put" else 2
                     for action in params["TransactItems"] for kind, spec in action.items()))

    def put(self, table: str, item: dict[str, Any], factor: int) -> int:
        kb = put_units(item)
        return factor * kb + (kb if table == self.events_table else 0)

    def add(self, units: int) -> None:
        with self.lock:  # the handler writes from several threads
            self.units += units


def raw_batch_writer(endpoint: str, table: str, events: list[dict], units: WriteUnits) -> float:
    import boto3

    from shared.events import Event
    from shared.storage.dynamo import serialize
    from shared.storage.events import event_item

    now = datetime.now(timezone.utc)
    # The stored shape is the same as the handler's; building it is not timed.
    items = [event_item(Event.model_validate(e, context={"now": now}), "x") for e in events]
    # Each item is put once: its units are counted here, from its wire form.
    units.add(sum(units.put(table, serialize(item), 1) for item in items))
    resource = boto3.resource("dynamodb", endpoint_url=endpoint)
    started = time.perf_counter()
    with resource.Table(table).batch_writer(overwrite_by_pkeys=["user_id", "event_id"]) as writer:
        for item in items:
            writer.put_item(Item=item)
    return time.perf_counter() - started


def through_handler(events: list[dict], units: WriteUnits | None = None) -> float:
    from shared.storage import dynamo

    if units is not None:
        units.watch(dynamo.client())
    template = load_template()
    route = next(r for r in http_routes(template) if r.route_key == "POST /events")
    handler = load_handler(route)  # cold start outside the timing, as on a warm Lambda
    requests = [
        api_event(route, "POST", "/events", "", {"content-type": "application/json"},
                  json.dumps({"events": events[start:start + BATCH]}).encode(), {}, "127.0.0.1",
                  trusted_context())
        for start in range(0, len(events), BATCH)
    ]
    started = time.perf_counter()
    for request in requests:
        response = handler(request, LambdaContext(function_name=route.function))
        if response["statusCode"] != 200:
            raise SystemExit(f"handler answered {response['statusCode']}: {response['body'][:300]}")
    return time.perf_counter() - started


def emulator_transactions(endpoint: str, count: int) -> None:
    """What DynamoDB Local itself charges for transactions, without the handler: the same `count`
    small event puts as BatchWriteItem calls of 25, and as transactions of 100 conditional puts
    sent from 16 threads and from one. On AWS transactions on different items run side by side;
    DynamoDB Local's take about as long from 16 threads as from one: it runs them mostly one at a
    time, which (not the handler's Python) bounds the handler's ratio to the raw writer."""
    import boto3
    from botocore.config import Config

    client = boto3.client("dynamodb", endpoint_url=endpoint, config=Config(max_pool_connections=32))

    def item(i: int, run: str) -> dict[str, Any]:
        return {"user_id": {"S": f"u{i % 700}"}, "event_id": {"S": f"{run}-{i}"}, "event_type": {"S": "view"},
                "ts": {"S": f"2026-11-01T03:00:{i % 60:02d}.000000Z"}, "item_id": {"S": f"i{i % 2000}"},
                "channel": {"S": "web"}, "ingested_at": {"S": "2026-11-01T03:00:00.000000Z"}}

    def batches(table: str, run: str, threads: int) -> None:
        calls = [{table: [{"PutRequest": {"Item": item(i, run)}} for i in range(start, min(start + 25, count))]}
                 for start in range(0, count, 25)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda request: client.batch_write_item(RequestItems=request), calls))

    def transactions(table: str, run: str, threads: int) -> None:
        calls = [[{"Put": {"TableName": table, "Item": item(i, run),
                           "ConditionExpression": "attribute_not_exists(event_id)"}}
                  for i in range(start, min(start + 100, count))] for start in range(0, count, 100)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda actions: client.transact_write_items(TransactItems=actions), calls))

    print(f"DynamoDB Local alone, {count:,} event puts, best of 2:")
    best: dict[str, float] = {}
    for _ in range(2):
        for label, write, threads in (("BatchWriteItem of 25, 16 threads", batches, 16),
                                      ("transactions of 100, 16 threads", transactions, 16),
                                      ("transactions of 100, one thread ", transactions, 1)):
            tables = create_tables(endpoint, f"bench-{uuid.uuid4().hex[:6]}")
            started = time.perf_counter()
            write(tables["EventsTable"], uuid.uuid4().hex[:6], threads)
            best[label] = min(best.get(label, float("inf")), time.perf_counter() - started)
            delete_tables(endpoint, tables)
    base = best["BatchWriteItem of 25, 16 threads"]
    for label, seconds in best.items():
        print(f"  {label} : {seconds:6.2f} s   x{seconds / base:.2f}")


def point_functions_at(tables: dict[str, str], endpoint: str) -> None:
    from shared.config import get_settings
    from shared.storage import dynamo

    os.environ.update({"EVENTS_TABLE": tables["EventsTable"], "ITEMS_TABLE": tables["ItemsTable"],
                       "USERS_TABLE": tables["UsersTable"], "SEGMENTS_TABLE": tables["SegmentsTable"],
                       "MODEL_BUCKET": "bench", "AWS_ENDPOINT_URL_DYNAMODB": endpoint})
    get_settings.cache_clear()
    dynamo.client.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--part", choices=("handler", "emulator"), default="handler",
                        help="emulator: what DynamoDB Local charges for transactions, without the handler")
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    quiet_handlers()
    if args.part == "emulator":
        dynamodb = DynamoDBLocal.start()
        try:
            emulator_transactions(dynamodb.endpoint, args.events)
        finally:
            dynamodb.stop()
        return

    users = max(100, args.events // 25)
    shop = generate_shop(seed=11, n_users=users, n_items=2000)
    events = shop.events[: args.events]
    purchases = sum(e["event_type"] == "purchase" for e in events)
    print(f"{len(events):,} events of {len({e['user_id'] for e in events}):,} users "
          f"({purchases:,} purchases), DynamoDB Local, {args.rounds} rounds, best of each")

    dynamodb = DynamoDBLocal.start()
    raw_times, handler_times = [], []
    units: dict[str, int] = {}
    try:
        for _ in range(args.rounds):
            for timings, run in ((raw_times, "raw"), (handler_times, "handler")):
                tables = create_tables(dynamodb.endpoint, f"bench-{uuid.uuid4().hex[:6]}")
                point_functions_at(tables, dynamodb.endpoint)
                counted = WriteUnits(tables["EventsTable"])
                if run == "raw":
                    timings.append(raw_batch_writer(dynamodb.endpoint, tables["EventsTable"], events, counted))
                else:
                    timings.append(through_handler(events, counted))
                units[run] = counted.units  # the same writes every round
                delete_tables(dynamodb.endpoint, tables)
    finally:
        dynamodb.stop()

    raw_rate, handler_rate = len(events) / min(raw_times), len(events) / min(handler_times)
    raw_wru, handler_wru = units["raw"] / len(events), units["handler"] / len(events)
    print(f"  raw boto3 batch_writer : {raw_rate:8,.0f} events/s {raw_wru:6.2f} WRU/event")
    print(f"  ingest handler         : {handler_rate:8,.0f} events/s {handler_wru:6.2f} WRU/event "
          "(validation + idempotent transactions + summaries + recent activity)")
    print(f"  ratio handler/raw      : {handler_rate / raw_rate:8.2f}  (target >= 0.50); "
          f"write units x{handler_wru / raw_wru:.2f}")
    print("  WRU by DynamoDB's rules: 1 per KB a put, plus its by_time index entry; 2 per KB each action of a "
          "transaction,\n  the customer's recent-activity item and summary included.")
    print("  Transactions cost twice. Worth it where a write must never be counted twice or lost: purchases, "
          "returns\n  and sends (summaries, orders, the contact ledger), and the recent activity that serving "
          "reads, current\n  with the events. A store of views alone, read nowhere at once, would need only "
          "conditional puts.")


if __name__ == "__main__":
    main()
