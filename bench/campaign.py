"""A campaign export's recommendations for 100k customers, against implicit doing the same top-N.

    ./dev bench campaign [--customers 100000] [--items 5000] [--results 10]

A synthetic shop with taste (each customer favours two of 50 categories; 20 events each: views,
carts and purchases, power-law items) is built in memory, and a model is fitted on it with the
served blend (ALS, item neighbours and popularity). Then, in the same process:

1. ours: the campaign job's work after the shop is read: the contact check of every customer
   (`contact_block`), `BatchRecommender` (confidence rows, the blend's scores, stock and bought
   filters, the seen-items share, popular filling, reasons with titles) and both output files
   (JSON Lines and CSV) written to a temporary folder;
2. raw: implicit's `recommend` for the same customers, N items each, with the fold-in
   (`recalculate_user=True`) and `filter_already_liked_items`, on the confidence rows, which are
   handed to it for free.
Each part runs in a process of its own that builds the same shop (same seeds), so its peak memory
(ru_maxrss) is its own; the size before the part runs (the shop and the model) is printed beside it. Reading the shop from DynamoDB is
not included: it is the nightly segments' parallel Scan, measured by `./dev bench segments`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "bench",
                   "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true"})
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from shared.campaigns import output  # noqa: E402
from shared.campaigns.batch import BatchRecommender, Shop, SnapshotCatalog  # noqa: E402
from shared.catalog import Item  # noqa: E402
from shared.contact import ContactCaps, contact_block  # noqa: E402
from shared.history import HistoryEvent  # noqa: E402
from shared.serving.model import ServingModel  # noqa: E402
from shared.training.artifact import ModelArtifact  # noqa: E402
from shared.training.config import TrainingConfig  # noqa: E402
from shared.training.hybrid import Blend, item_neighbours  # noqa: E402
from shared.training.interactions import EVENT_CODES, Interactions  # noqa: E402
from shared.training.matrix import confidence_matrix, purchase_matrix  # noqa: E402
from shared.training.pipeline import fit_als  # noqa: E402
from shared.users import User  # noqa: E402

NOW = datetime.now(timezone.utc)
CATEGORIES = 50
EVENTS_PER_CUSTOMER = 20
TYPES = np.array(["view", "add_to_cart", "purchase"])
BLEND = Blend(als=1, knn=1, popularity=0.5)


def synthetic_shop(n_customers: int, n_items: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    item_category = rng.integers(0, CATEGORIES, n_items)
    by_category = [np.flatnonzero(item_category == c) for c in range(CATEGORIES)]
    favourites = rng.integers(0, CATEGORIES, (n_customers, 2))
    n = n_customers * EVENTS_PER_CUSTOMER
    users = np.repeat(np.arange(n_customers, dtype=np.int32), EVENTS_PER_CUSTOMER)
    in_favourite = rng.random(n) < 0.8
    chosen = np.where(rng.random(n) < 0.5, favourites[users, 0], favourites[users, 1])
    category = np.where(in_favourite, chosen, rng.integers(0, CATEGORIES, n))
    rank = np.minimum(rng.zipf(1.6, n) - 1, 10_000)
    items = np.array([by_category[c][r % len(by_category[c])] for c, r in zip(category, rank)], dtype=np.int32)
    codes = rng.choice(3, n, p=[0.7, 0.1, 0.2])
    stamps = NOW.timestamp() - rng.uniform(0, 180, n) * 86_400
    item_ids = [f"sku-{i}" for i in range(n_items)]
    interactions = Interactions(
        user_ids=[f"u-{u}" for u in range(n_customers)], item_ids=item_ids, users=users, items=items,
        event_codes=np.array([EVENT_CODES[TYPES[c]] for c in range(3)], dtype=np.int8)[codes],
        quantities=np.ones(n, dtype=np.float32), timestamps=stamps)
    catalog = {item_id: Item(item_id=item_id, title=f"Product {i}", category=f"category-{item_category[i]}",
                             price=10 + i % 90, currency="EUR", in_stock=bool(i % 20), created_at=NOW - timedelta(days=400),
                             url=f"https://shop.example/p/{i}", image_url=f"https://cdn.shop.example/{i}.jpg")
               for i, item_id in enumerate(item_ids)}
    return interactions, catalog


def fitted_model(interactions: Interactions, n_items: int) -> ServingModel:
    config = TrainingConfig()
    shape = (len(interactions.user_ids), n_items)
    matrix = confidence_matrix(interactions, config, NOW.timestamp(), shape)
    _, item_factors = fit_als(matrix, config)
    popularity = np.asarray(purchase_matrix(interactions, shape).sum(axis=0)).ravel().astype(np.float32)
    artifact = ModelArtifact(
        item_ids=interactions.item_ids, item_factors=np.asarray(item_factors, dtype=np.float32),
        popular_items=[interactions.item_ids[i] for i in np.argsort(-popularity)[:200]],
        parameters={**config.model_dump(mode="json"), "blend": BLEND.as_dict()}, strategy=BLEND.strategy,
        item_popularity=popularity, neighbours=item_neighbours(purchase_matrix(interactions, shape), config.neighbours))
    return ServingModel("bench", artifact)


def histories_of(interactions: Interactions) -> dict[str, list[HistoryEvent]]:
    names = {code: name for name, code in EVENT_CODES.items()}
    found: dict[str, list[HistoryEvent]] = {}
    for u, i, c, t in zip(interactions.users.tolist(), interactions.items.tolist(),
                          interactions.event_codes.tolist(), interactions.timestamps.tolist()):
        found.setdefault(interactions.user_ids[u], []).append(
            HistoryEvent(interactions.item_ids[i], str(names[c]), 1, t))
    return {user: sorted(events, key=lambda e: -e.timestamp) for user, events in found.items()}


def ours(model: ServingModel, shop: Shop, customers: list[str], results: int) -> int:
    caps = ContactCaps.parse("email:2/7")
    reachable = [u for u in customers if contact_block(shop.profiles.get(u), "email", caps, NOW) is None]
    batch = BatchRecommender(model, shop)
    written = 0
    with tempfile.TemporaryDirectory() as folder:
        with open(Path(folder) / "lines.jsonl", "w") as jsonl, open(Path(folder) / "lines.csv", "w") as table:
            table.write(output.recommendation_header(results))
            for line in batch.recommend(reachable, results, NOW):
                jsonl.write(output.recommendation_line(line, "email"))
                table.write(output.recommendation_row(line, "email", results))
                written += 1
    return written


def raw(model: ServingModel, rows, results: int) -> int:
    ids, _ = model.scorer.als.recommend(np.arange(rows.shape[0]), rows, N=results, recalculate_user=True,
                                        filter_already_liked_items=True)
    return len(ids)


def measure(part: str, customers: int, items: int, results: int) -> dict:
    """Build the shop, then time one part: in its own process, so ru_maxrss is this part's peak."""
    interactions, catalog = synthetic_shop(customers, items)
    model = fitted_model(interactions, items)
    histories = histories_of(interactions)
    granted = {"email": {"granted": True, "at": NOW.isoformat(), "source": "bench"}}
    profiles = {user: User.model_validate({"user_id": user, "country": "DE", "consent": granted})
                for user in interactions.user_ids}
    shop = Shop(profiles, histories, SnapshotCatalog(catalog))
    users = list(interactions.user_ids)
    rows = BatchRecommender(model, shop).rows([histories[u] for u in users], NOW.timestamp())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    count = raw(model, rows, results) if part == "raw" else ours(model, shop, users, results)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "count": count, "events": len(interactions), "before_mib": before,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def in_process_of_its_own(part: str, args: argparse.Namespace) -> dict:
    # A fresh interpreter, not a fork: implicit's OpenMP threads do not survive a fork.
    found = subprocess.run([sys.executable, __file__, "--part", part, "--customers", str(args.customers),
                            "--items", str(args.items), "--results", str(args.results)],
                           check=True, capture_output=True, text=True)
    return json.loads(found.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--results", type=int, default=10)
    parser.add_argument("--part", choices=["raw", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(measure(args.part, args.customers, args.items, args.results)))
        return

    raw_run = in_process_of_its_own("raw", args)
    our_run = in_process_of_its_own("ours", args)
    assert raw_run["count"] == our_run["count"] == args.customers, (raw_run["count"], our_run["count"])
    raw_rate, ours_rate = raw_run["count"] / raw_run["seconds"], our_run["count"] / our_run["seconds"]
    print(f"shop: {args.customers:,} customers, {args.items:,} items, {raw_run['events']:,} events, "
          f"blend {BLEND.as_dict()}; each part in a process of its own, {raw_run['before_mib']:,.0f} MiB "
          "before it runs (the shop and the model in memory)")
    for name, run in (("raw implicit recommend (fold-in, N=%d)" % args.results, raw_run),
                      ("campaign job (blend, filters, reasons, files)", our_run)):
        print(f"{name:48s} {run['seconds']:7.1f} s {run['count'] / run['seconds']:9,.0f} customers/s  "
              f"peak {run['peak_mib']:,.0f} MiB (+{run['peak_mib'] - run['before_mib']:,.0f} while it runs)")
    print(f"ratio ours/raw: {ours_rate / raw_rate:.2f} customers/s (target >= 0.5); "
          f"peak memory ours/raw: {our_run['peak_mib'] / raw_run['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
