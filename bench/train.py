"""Training time by stage on DynamoDB Local, against implicit's own fit of the same matrix.

    ./dev bench train [--sizes 100000 1000000]

For each size, synthetic interactions (20 per user, power-law items, views, carts and
purchases over a year) are written to a fresh DynamoDB Local table (not timed), then one full
training run is timed stage by stage: load (parallel Scan), matrix, fit, evaluate, final fit,
publish. The reference is implicit's AlternatingLeastSquares.fit on the very matrix the run built,
with the same parameters, in the same process.
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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "bench"})
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from devstack.dynamodb_local import LOCAL_CREDENTIALS, DynamoDBLocal, client, create_tables, write_items  # noqa: E402
from shared.storage.blobs import LocalBlobs  # noqa: E402
from shared.storage.models import ModelStore  # noqa: E402
from shared.storage.training_data import load_training_data  # noqa: E402
from shared.training.config import TrainingConfig  # noqa: E402
from shared.training.job import run_training  # noqa: E402
from shared.training.matrix import confidence_matrix  # noqa: E402
from shared.training.pipeline import fit_als  # noqa: E402

EVENT_TYPES = np.array(["view", "add_to_cart", "purchase"])


def synthetic_items(n: int, now: datetime, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    n_users, n_items = max(n // 20, 10), max(n // 50, 100)
    item_weights = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.choice(n_items, size=n, p=item_weights / item_weights.sum())
    users = rng.integers(0, n_users, size=n)
    kinds = rng.choice(3, size=n, p=[0.6, 0.25, 0.15])
    ages = rng.uniform(0, 365 * 86_400, size=n)
    rows = []
    for index in range(n):
        moment = now - timedelta(seconds=float(ages[index]))
        rows.append({
            "user_id": {"S": f"u{users[index]}"}, "event_id": {"S": f"e{index}"},
            "item_id": {"S": f"i{items[index]}"}, "event_type": {"S": str(EVENT_TYPES[kinds[index]])},
            "quantity": {"N": "1"}, "ts": {"S": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        })
    return rows


def run(size: int, dynamodb: DynamoDBLocal) -> None:
    now = datetime.now(timezone.utc)
    tables = create_tables(dynamodb.endpoint, f"bench-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    write_items(client(dynamodb.endpoint), tables["EventsTable"], synthetic_items(size, now), threads=8)
    print(f"\n{size:,} interactions written in {time.perf_counter() - started:.0f} s (not timed)")
    config = TrainingConfig(min_gain_over_popularity=0)
    captured = {}

    def load(cfg: TrainingConfig, at: datetime):  # noqa: ANN202
        captured["data"] = load_training_data(tables["EventsTable"], tables["UsersTable"], cfg, at)
        return captured["data"]

    with tempfile.TemporaryDirectory() as models_dir:
        manifest = run_training(load, ModelStore(LocalBlobs(Path(models_dir))), config, now)
    if "data" not in captured or manifest.status == "failed":
        raise SystemExit(f"training run {manifest.status}: {manifest.reason}")
    data = captured["data"]
    shape = (len(data.interactions.user_ids), len(data.interactions.item_ids))
    matrix = confidence_matrix(data.interactions, config, data.end, shape)
    started = time.perf_counter()
    fit_als(matrix, config)
    raw_fit = time.perf_counter() - started

    # Random data has no taste to learn, so the gate is off here: this measures time, not quality.
    print(f"{shape[0]:,} users x {shape[1]:,} items, {matrix.nnz:,} pairs; run status {manifest.status}")
    print(f"  {'stage':<12} {'seconds':>8} {'x raw fit':>10}")
    for stage, seconds in manifest.timings.items():
        print(f"  {stage:<12} {seconds:8.2f} {seconds / raw_fit:10.2f}")
    total = sum(manifest.timings.values())
    print(f"  {'total':<12} {total:8.2f} {total / raw_fit:10.2f}")
    print(f"  {'raw implicit fit':<12} {raw_fit:4.2f} s (AlternatingLeastSquares.fit, same matrix and parameters)")
    raw_scan = plain_scan(dynamodb.endpoint, tables["EventsTable"])
    print(f"  {'raw boto3 scan':<12} {raw_scan:4.2f} s (one paginated Scan, items discarded): "
          f"load is {manifest.timings['load'] / raw_scan:.2f}x that")


def plain_scan(endpoint: str, table: str) -> float:
    started = time.perf_counter()
    for _ in client(endpoint).get_paginator("scan").paginate(TableName=table):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    dynamodb = DynamoDBLocal.start()
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = dynamodb.endpoint
    try:
        for size in args.sizes:
            run(size, dynamodb)
    finally:
        dynamodb.stop()


if __name__ == "__main__":
    main()
