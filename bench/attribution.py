"""Ingest with attribution on, against the plain ingest path, and the nightly attribution's own pace.

    ./dev bench attribution [--events 20000] [--rounds 2] [--nightly-only]

Attribution costs ingest nothing but bigger events: purchases are credited by the nightly run
(shared/experiments/), not when they arrive. So the comparison is the ingest handler, in-process as
Lambda calls it on DynamoDB Local, storing:
1. plain: a demo shop's events (views, carts, clicks, purchases);
2. with attribution: the same stream as a shop with the web kit sends it: every click carries the
   signed recommendation_id of the answer it came from, and one event in ten is an impression of
   five items with its id (the count of events is the same).
Then the nightly side: the impressions, clicks and purchases of stream 2 through OutcomePages (the
page handler the nightly read feeds) and record_results (exposures, tallies, credits, the report),
in events per second, beside the plain nightly page handlers (training's, and the ids with events)
on the same pages. --nightly-only measures that side alone (no DynamoDB Local), for streams too
long to ingest here: its cost grows with the experiment's days and the outcomes read.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import point_functions_at, through_handler  # noqa: E402
from bench.quiet import quiet_handlers  # noqa: E402
from devstack.demo_data import generate_shop  # noqa: E402
from devstack.dynamodb_local import LOCAL_CREDENTIALS, DynamoDBLocal, create_tables, delete_tables  # noqa: E402

KEY = b"bench-key-" * 4


def with_attribution(events: list[dict], experiment_id: str) -> list[dict]:
    from shared.experiments.assignment import Share, assign
    from shared.experiments.attribution import Served, recommendation_id

    shares = [Share("model", 0.5, True), Share("popular", 0.5, False)]
    out = []
    for n, event in enumerate(events):
        at = datetime.fromisoformat(event["timestamp"])
        variant = assign(experiment_id, event["user_id"], shares, True)
        rid = recommendation_id(Served("recommendations", "als" if variant == "model" else "popular", "v-bench",
                                       experiment_id, variant, int(at.timestamp())), KEY, str(n))
        if n % 10 == 5 and event["event_type"] not in ("purchase", "return"):
            shown = [event["item_id"], *(events[(n + k) % len(events)]["item_id"] for k in range(1, 5))]
            out.append({k: v for k, v in event.items() if k not in ("item_id", "quantity", "price", "currency")}
                       | {"event_type": "impression", "recommendation_id": rid, "items": list(dict.fromkeys(shown))})
        elif event["event_type"] in ("view", "click"):
            out.append({**event, "event_type": "click", "recommendation_id": rid})
        else:
            out.append(event)
    return out


def nightly(events: list[dict], experiment_id: str) -> tuple[float, float]:
    """Seconds for the outcomes' page handler and results, and for the plain page handlers, on the same pages."""
    from shared.events import Event
    from shared.experiments.spec import Experiment, ExperimentSpec
    from shared.experiments.service import record_results
    from shared.storage import dynamo
    from shared.storage.blobs import LocalBlobs
    from shared.storage.customers import EventIds
    from shared.storage.events import event_item
    from shared.storage.experiments import ExperimentStore
    from shared.storage.outcomes import OutcomePages
    from shared.storage.training_data import _TrainingPages
    from shared.training.config import TrainingConfig

    now = datetime.now(timezone.utc)
    pages = [[dynamo.serialize(event_item(Event.model_validate(e, context={"now": now}), "x"))
              for e in events[start:start + 1000]] for start in range(0, len(events), 1000)]
    started = time.perf_counter()
    training, with_events = _TrainingPages(TrainingConfig(), now, set()), EventIds()
    for page in pages:
        training.add_page(page)
        with_events.add_page(page)
    plain = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        store = ExperimentStore(LocalBlobs(Path(folder)))
        spec = ExperimentSpec(name="bench", variants=[{"name": "model", "serves": "active", "traffic": 0.5},
                                                      {"name": "popular", "serves": "popular", "traffic": 0.5}])
        store.save(Experiment(experiment_id=experiment_id, spec=spec, started_at=now - timedelta(days=30)))
        started = time.perf_counter()
        outcomes = OutcomePages("2000-01-01")
        for page in pages:
            outcomes.add_page(page)
        record_results(store, outcomes.outcomes, KEY, now)
        attribution = time.perf_counter() - started
    return attribution, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nightly-only", action="store_true", help="only the nightly side, without DynamoDB Local")
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    quiet_handlers()
    shop = generate_shop(seed=11, n_users=max(100, args.events // 25), n_items=2000)
    plain = shop.events[: args.events]
    attributed = with_attribution(plain, "exp-bench")
    kinds = {kind: sum(e["event_type"] == kind for e in attributed) for kind in ("impression", "click", "purchase")}
    if args.nightly_only:
        print(f"{len(plain):,} events, the nightly side only, a 30-day experiment; with attribution: {kinds}")
        print_nightly(attributed)
        return
    print(f"{len(plain):,} events, DynamoDB Local, {args.rounds} rounds, best of each; with attribution: {kinds}")

    dynamodb = DynamoDBLocal.start()
    times: dict[str, list[float]] = {"plain": [], "attribution": []}
    try:
        for _ in range(args.rounds):
            for name, stream in (("plain", plain), ("attribution", attributed)):
                tables = create_tables(dynamodb.endpoint, f"bench-{uuid.uuid4().hex[:6]}")
                point_functions_at(tables, dynamodb.endpoint)
                times[name].append(through_handler(stream))
                delete_tables(dynamodb.endpoint, tables)
    finally:
        dynamodb.stop()
    plain_rate, attributed_rate = len(plain) / min(times["plain"]), len(attributed) / min(times["attribution"])
    print(f"  ingest, plain events            : {plain_rate:9,.0f} events/s")
    print(f"  ingest, with attribution events : {attributed_rate:9,.0f} events/s")
    print(f"  ratio with/without              : {attributed_rate / plain_rate:9.2f}  (target >= 0.80)")
    print_nightly(attributed)


def print_nightly(attributed: list[dict]) -> None:
    attribution, plain_nightly = nightly(attributed, "exp-bench")
    print(f"  nightly attribution and results : {len(attributed) / attribution:9,.0f} events/s "
          f"(the plain nightly page handlers: {len(attributed) / plain_nightly:,.0f} events/s on the same pages)")


if __name__ == "__main__":
    main()
