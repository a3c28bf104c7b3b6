"""What a blend chosen some nights ago costs on tonight's holdout, on the two real shops.

    ./dev bench blend_age [--shop both|retail|tafeng] [--nights 14] [--ages 1,3,6] [--holdout-days 14]

A training run spends most of its time choosing the blend (shared/training/pipeline.py
`choose_blend`: two validation folds, each fitted and scored on 16 blends). `blend_reuse_days`
lets a run take the blend the last run chose instead, when that choice is at most that many days
old. This measures what that costs. For each of `--nights` consecutive nights ending at the day
after the shop's newest purchase, as the pipeline would run it (the default configuration, the
whole history as window):
- the blend that night's own validation folds choose (before its holdout, as always);
- every blend of the grid fitted and scored on that night's holdout, as `evaluate` scores the
  chosen one (one fit of all three parts: a blend only weighs them).
Then, for each age in `--ages`, every night is scored with the blend chosen that many nights
before it (a run only takes an older choice, never a later one: a later night's folds cover this
night's holdout), against its own. Served NDCG is what the gate would serve: the blend when it
beats recency-weighted popularity, else popularity.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.quality import LOADERS, SHOPS  # noqa: E402
from shared.training.config import TrainingConfig  # noqa: E402
from shared.training.evaluation import ranking_metrics, top_items_of_one_row  # noqa: E402
from shared.training.hybrid import BLENDS, Blend  # noqa: E402
from shared.training.matrix import DAY  # noqa: E402
from shared.training.pipeline import (HoldoutSplit, WarmStart, choose_blend, fit_blend, sampled,  # noqa: E402
                                      score_blends)


def night(interactions, end: float, config: TrainingConfig) -> tuple[Blend, dict[Blend, float], float] | None:
    """The blend this night chooses, every blend's holdout NDCG, and popularity's; None when the
    holdout has too few customers to evaluate."""
    split = HoldoutSplit.of(interactions.select(interactions.timestamps <= end), end, config)
    if len(split.evaluated.users) < config.min_users_to_evaluate:
        return None
    evaluated = sampled(split.evaluated, config.max_holdout_users, config.random_seed)
    warm = WarmStart()
    chosen = choose_blend(split.interactions, split.cutoff, config, split.shape, warm).blend
    fitted = fit_blend(split.earlier, config, Blend(1, 1, 1), warm)
    scored = {blend: metrics.ndcg for blend, metrics in score_blends(fitted, evaluated, BLENDS, config.top_k).items()}
    popular = ranking_metrics(top_items_of_one_row(fitted.popularity, evaluated.users, fitted.bought, config.top_k),
                              evaluated.relevant, split.shape[1]).ndcg
    return chosen, scored, popular


def served(ndcg: float, popular: float, config: TrainingConfig) -> float:
    return ndcg if ndcg > popular * config.min_gain_over_popularity else popular


def run_shop(name: str, nights: int, ages: list[int], config: TrainingConfig) -> None:
    interactions, _, _ = LOADERS[name](SHOPS[name])
    last = float(interactions.timestamps.max()) + DAY
    print(f"## {SHOPS[name].name}: {nights} nights to {time.strftime('%Y-%m-%d', time.gmtime(last))}, "
          f"holdout {config.holdout_days} days\n")
    print("| night | chose | its NDCG | popularity | best of the grid | seconds |\n|---|---|---:|---:|---:|---:|")
    found: dict[int, tuple[Blend, dict[Blend, float], float]] = {}
    for back in range(nights + max(ages) - 1, -1, -1):  # oldest first: what each age needs exists
        started = time.perf_counter()
        result = night(interactions, last - back * DAY, config)
        if result is None:
            continue
        found[back] = result
        chosen, scored, popular = result
        print(f"| -{back} | {_name(chosen)} | {scored[chosen]:.4f} | {popular:.4f} | {max(scored.values()):.4f} | "
              f"{time.perf_counter() - started:.0f} |")
    print("\n| blend chosen | nights | changed | served NDCG, own | served NDCG, reused | mean change | worst night |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for age in ages:
        pairs = [(found[back], found[back + age][0]) for back in range(nights) if back in found and back + age in found]
        if not pairs:
            continue
        own = np.array([served(scored[chosen], popular, config) for (chosen, scored, popular), _ in pairs])
        reused = np.array([served(scored[older], popular, config) for (_, scored, popular), older in pairs])
        changed = sum(older != chosen for (chosen, _, _), older in pairs)
        change = reused - own
        print(f"| {age} night{'s' if age > 1 else ''} before | {len(pairs)} | {changed} | {own.mean():.4f} | "
              f"{reused.mean():.4f} | {change.mean() / own.mean():+.1%} | {(change / own).min():+.1%} |")
    print()


def _name(blend: Blend) -> str:
    return "/".join(f"{weight:g}" for weight in (blend.als, blend.knn, blend.popularity)) + " (als/knn/pop)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shop", choices=["both", *SHOPS], default="both")
    parser.add_argument("--nights", type=int, default=14)
    parser.add_argument("--ages", default="1,3,6")
    parser.add_argument("--holdout-days", type=int, default=TrainingConfig().holdout_days)
    args = parser.parse_args()
    config = TrainingConfig(holdout_days=args.holdout_days, window_days=3650)
    for name in SHOPS if args.shop == "both" else [args.shop]:
        run_shop(name, args.nights, [int(age) for age in args.ages.split(",")], config)


if __name__ == "__main__":
    main()
