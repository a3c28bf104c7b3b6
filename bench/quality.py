"""Recommendation quality on real purchase history: popularity vs implicit's defaults vs this pipeline.

    ./dev bench quality [--file ../shared/data/online_retail_2010-12_2011-08.csv.gz] [--holdout-days 14]

Time split: the last --holdout-days are held out. All three are scored by the same code
(shared.training.evaluation): top 10 per customer who bought something new in the holdout,
leaving out what they bought before, as serving does.
- popularity: distinct buyers per item over the 30 days before the cutoff;
- implicit defaults: AlternatingLeastSquares() with its default parameters on raw purchase counts;
- pipeline: this project's confidence matrix (event weights, log quantity, recency decay) and
  parameters (shared/training/config.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.sparse import coo_matrix  # noqa: E402

from devstack.retail_csv import read_retail_csv  # noqa: E402
from shared.events import EventType  # noqa: E402
from shared.training.config import TrainingConfig  # noqa: E402
from shared.training.evaluation import holdout, ranking_metrics, top_items  # noqa: E402
from shared.training.interactions import InteractionLog  # noqa: E402
from shared.training.matrix import DAY, purchase_matrix  # noqa: E402
from shared.training.pipeline import TrainingData, train_model  # noqa: E402

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "online_retail_2010-12_2011-08.csv.gz"


def load(path: Path):
    data = read_retail_csv(path)
    log = InteractionLog(limit=10_000_000)
    for event in data.events:
        log.add(event["user_id"], event["item_id"], EventType.PURCHASE, event["quantity"],
                datetime.fromisoformat(event["timestamp"]).timestamp())
    return log.finish(), {u["user_id"]: u["country"] for u in data.users if u.get("country")}


def implicit_defaults(interactions, end: float, config: TrainingConfig):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    shape = (len(interactions.user_ids), len(interactions.item_ids))
    cutoff = end - config.holdout_days * DAY
    before = interactions.select(interactions.timestamps < cutoff)
    after = interactions.select(interactions.timestamps >= cutoff)
    counts = coo_matrix((np.ones(len(before), dtype=np.float32), (before.users, before.items)), shape=shape).tocsr()
    counts.sum_duplicates()
    evaluated = holdout(purchase_matrix(after, shape), purchase_matrix(before, shape),
                        known_users=np.diff(counts.indptr) > 0)
    model = AlternatingLeastSquares(random_state=config.random_seed)
    with threadpool_limits(1, "blas"):
        model.fit(counts, show_progress=False)
    ranked = top_items(lambda users: model.user_factors[users] @ model.item_factors.T,
                       evaluated.users, purchase_matrix(before, shape), config.top_k)
    return ranking_metrics(ranked, evaluated.relevant, shape[1]).as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--holdout-days", type=int, default=TrainingConfig().holdout_days)
    args = parser.parse_args()
    config = TrainingConfig(holdout_days=args.holdout_days, window_days=3650)

    interactions, countries = load(args.file)
    end = float(interactions.timestamps.max()) + 1
    print(f"{args.file.name}: {len(interactions):,} purchases, {len(interactions.user_ids):,} customers, "
          f"{len(interactions.item_ids):,} products; holdout: the last {args.holdout_days} days")
    started = time.perf_counter()
    outcome = train_model(TrainingData(interactions, end, countries), config)
    pipeline_seconds = time.perf_counter() - started
    defaults = implicit_defaults(interactions, end, config)
    rows = [("popularity (30 days)", outcome.metrics["popularity"]),
            ("implicit ALS defaults, raw counts", defaults), ("this pipeline", outcome.metrics["model"])]
    print(f"evaluated customers: {outcome.counts['evaluated_users']:,}\n")
    print(f"| {'method':<34} | precision@10 | MAP@10 | NDCG@10 | coverage |")
    print(f"|{'-' * 36}|-------------:|-------:|--------:|---------:|")
    for name, m in rows:
        print(f"| {name:<34} | {m['precision']:12.4f} | {m['map']:6.4f} | {m['ndcg']:7.4f} | {m['coverage']:8.3f} |")
    popularity_ndcg = outcome.metrics["popularity"]["ndcg"]
    print(f"\npipeline NDCG / popularity: {outcome.metrics['model']['ndcg'] / popularity_ndcg:.2f} (target >= 1.5); "
          f"/ implicit defaults: {outcome.metrics['model']['ndcg'] / defaults['ndcg']:.2f} (target > 1)")
    print(f"gate: {outcome.status}: {outcome.reason}; pipeline run {pipeline_seconds:.1f} s")


if __name__ == "__main__":
    main()
