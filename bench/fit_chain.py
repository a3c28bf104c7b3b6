"""What a run's chain of fits gives the fit the gate judges, on both real shops.

    ./dev bench fit_chain [--holdout-days 30] [--seeds 42,43,44]

A night that chooses the blend fits ALS four times, each on a few weeks more than the one before:
the two validation folds (oldest first), the holdout, everything; each after the first starts from
the one before and runs `warm_iterations` (3). The first, when cold, runs `iterations` (15) less 3
for each fit still to come up to the holdout's (WarmStart.fit, `fits_before_holdout`): 9, so the
holdout's fit has had 15 in all. This scores ALS alone on the holdout (top 10, what the customer
bought before left out, as evaluate scores a blend) after:

- the chain as a run makes it (the first fit cold with 9 iterations);
- the chain with a first fit of all 15 (as runs made it before b520c97);
- the chain with a first fit of 6 (the final fit at 15 in all);
- no chain: the holdout's fit cold, 15 iterations.

Shops as bench/quality.py reads them (../shared/data, never copied into the repo).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.quality import LOADERS, SHOPS  # noqa: E402
from shared.training.config import TrainingConfig  # noqa: E402
from shared.training.evaluation import holdout  # noqa: E402
from shared.training.hybrid import Blend  # noqa: E402
from shared.training.interactions import Interactions  # noqa: E402
from shared.training.matrix import DAY, purchase_matrix  # noqa: E402
from shared.training.pipeline import History, WarmStart, fit_blend, score_blends  # noqa: E402

ALS = Blend(als=1)
# The first fit's share: how many fits still to come it counts (2: the run's own rule).
CHAINS = {"chain, first fit 9 (as a run makes it)": 2, "chain, first fit 15 (before)": 0,
          "chain, first fit 6 (final fit at 15)": 3, "no chain: the holdout's fit cold, 15": None}


def holdout_ndcg(interactions: Interactions, holdout_days: int, seed: int, share: int | None) -> float:
    end = float(interactions.timestamps.max()) + DAY
    shape = (len(interactions.user_ids), len(interactions.item_ids))
    config = TrainingConfig(holdout_days=holdout_days, window_days=3650, random_seed=seed)
    cutoff = end - holdout_days * DAY
    warm = WarmStart()
    if share is not None:
        for fold, fold_end in enumerate((cutoff - holdout_days * DAY, cutoff)):
            rows = History.before(interactions, fold_end - holdout_days * DAY, config, shape).rows
            warm.fit(rows, config, fits_before_holdout=share if fold == 0 else 1)
    earlier = History.before(interactions, cutoff, config, shape)
    evaluated = holdout(purchase_matrix(interactions, shape, interactions.timestamps >= cutoff), earlier.bought,
                        known_users=earlier.known_users)
    return score_blends(fit_blend(earlier, config, ALS, warm), evaluated, (ALS,), config.top_k)[ALS].ndcg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holdout-days", type=int, default=30)
    parser.add_argument("--seeds", default="42,43,44")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    print(f"ALS alone, NDCG@10 on the last {args.holdout_days} days, seeds {args.seeds}: mean [each seed]")
    for name in SHOPS:
        print(f"\n{SHOPS[name].name}")
        interactions = LOADERS[name](SHOPS[name])[0]
        for label, share in CHAINS.items():
            scores = [holdout_ndcg(interactions, args.holdout_days, seed, share) for seed in seeds]
            print(f"  {label:<42} {np.mean(scores):.4f}  [{', '.join(f'{s:.4f}' for s in scores)}]")


if __name__ == "__main__":
    main()
