"""A bounded load on the local stack: several clients ingesting and asking for recommendations.

    ./dev bench load [--clients 6] [--seconds 20]

Starts its own local stack (loopback only, a free port, its own state folder), loads a small
demo shop and trains a model (not timed), then runs --clients threads for --seconds. Each client
alternates between sending a batch of 50 new events and asking for a random customer's
recommendations. It prints throughput, p50/p99 per kind and the errors. Afterwards it counts
the load's events in DynamoDB and checks that every accepted event is stored exactly once.

The local gateway answers one request at a time, all functions together (they share one process
and Powertools' resolver keeps the current request in class state: devstack/gateway.py), so
concurrent clients queue: the latencies here are about queueing, not per-request cost
(bench/serve.py measures that).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from devstack import stack  # noqa: E402
from devstack.api_client import ApiClient  # noqa: E402
from devstack.demo_data import generate_shop  # noqa: E402
from devstack.dynamodb_local import client, free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    state_dir = Path(tempfile.mkdtemp(prefix="shop-recs-load-"))
    state, _ = stack.up(free_port(), state_dir)
    try:
        run(state, state_dir, args.clients, args.seconds)
    finally:
        stack.down(state_dir)


def run(state: stack.StackState, state_dir: Path, clients: int, seconds: float) -> None:
    api = ApiClient.for_stack(state_dir)  # the shop's backend ingests, signed

    shop = generate_shop(seed=9, n_users=400, n_items=150)
    api.put_items(shop.items)
    api.send_events(shop.events)
    api.train_and_wait({"min_gain_over_popularity": 0})
    users = [u["user_id"] for u in shop.users]
    customers = {user: api.as_customer(user) for user in users}  # each signed in with a token
    items = [i["item_id"] for i in shop.items]
    print(f"local stack at {state.url}: {len(shop.events):,} events loaded, model trained; "
          f"{clients} clients for {seconds:.0f} s")

    latencies: dict[str, list[float]] = {"ingest": [], "recommend": []}
    errors: list[str] = []
    accepted = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client_loop(number: int) -> None:
        rng = random.Random(number)
        batch_number = 0
        while time.monotonic() < deadline:
            if batch_number % 2 == 0:
                now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                events = [{"event_id": f"load-{number}-{batch_number}-{k}", "user_id": rng.choice(users),
                           "item_id": rng.choice(items), "event_type": "view", "timestamp": now, "channel": "web"}
                          for k in range(50)]
                kind, started = "ingest", time.perf_counter()
                response = api.request("POST", "/events", {"events": events})
                ok = response.status == 200
                if ok:
                    with lock:
                        accepted[0] += response.body["accepted"]
            else:
                kind, started = "recommend", time.perf_counter()
                user = rng.choice(users)
                response = customers[user].request("GET", f"/users/{user}/recommendations", query={"limit": 10})
                ok = response.status == 200
            elapsed = time.perf_counter() - started
            with lock:
                latencies[kind].append(elapsed)
                if not ok:
                    errors.append(f"{kind}: HTTP {response.status}")
            batch_number += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started

    for kind, samples in latencies.items():
        p50, p99 = np.percentile(samples, [50, 99]) * 1000
        print(f"  {kind:<9} {len(samples):6,} requests  {len(samples) / wall:7.1f}/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    print(f"  errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    stored = count_load_events(state)
    verdict = "every accepted event stored exactly once" if stored == accepted[0] else "MISMATCH"
    print(f"  accepted {accepted[0]:,} load events; stored {stored:,}: {verdict}")
    if stored != accepted[0] or errors:
        raise SystemExit(1)


def count_load_events(state: stack.StackState) -> int:
    dynamodb = client(state.dynamodb_endpoint)
    total, request = 0, {"TableName": state.tables["EventsTable"], "Select": "COUNT",
                         "FilterExpression": "begins_with(event_id, :p)", "ExpressionAttributeValues": {":p": {"S": "load-"}}}
    while True:
        page = dynamodb.scan(**request)
        total += page["Count"]
        if "LastEvaluatedKey" not in page:
            return total
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


if __name__ == "__main__":
    main()
