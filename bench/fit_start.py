"""What a first fit started from an earlier run's fit costs on tonight's holdout, on the two real shops.

    ./dev bench fit_start [--shop both|retail|tafeng] [--nights 14] [--gaps 1,7]

A run's first ALS fit is cold (`iterations`, 15) unless an earlier run kept a fit it may start
from (start_reuse_days, shared/training/earlier_fits.py): then it runs `warm_iterations` (3) from
that fit's item factors, its customers solved afresh. This measures what that costs. For each of
`--nights` consecutive nights ending at the day after the shop's newest purchase (the default
configuration, the whole history as window), the holdout fit (what the gate scores) is made:
- cold, as a shop's first run makes it;
- for each gap in `--gaps`: from the holdout fit kept by the run that many nights before, itself
  started the same way (a chain, as the nightly runs make it: 1, a run every night; 7, a run that
  chooses its blend, from the last one that chose).
Each is scored on that night's holdout (the same customers) with ALS alone, which the start
touches most, and with all three parts (1/1/1), as score_blends scores the validation's blends.
Seconds are the fit's (ALS, item neighbours, popularity), in this process.
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
from shared.training.earlier_fits import EarlierFit, ItemFactors  # noqa: E402
from shared.training.hybrid import Blend  # noqa: E402
from shared.training.matrix import DAY  # noqa: E402
from shared.training.pipeline import HoldoutSplit, WarmStart, fit_blend, sampled, score_blends  # noqa: E402

SCORED = (Blend(1, 0, 0), Blend(1, 1, 1))


def holdout_fit(split: HoldoutSplit, evaluated, config: TrainingConfig,
                earlier: ItemFactors | None) -> tuple[list[float], float, ItemFactors, str]:
    """The night's holdout fit, cold or from `earlier`: each blend's NDCG, seconds, the kept fit, how it started."""
    item_ids = split.interactions.item_ids
    fits = [] if earlier is None else [EarlierFit(earlier.until, earlier.began, "earlier", lambda: earlier)]
    kept: list[ItemFactors] = []
    warm = WarmStart(earlier=fits, item_ids=item_ids, keep=kept.append, keep_until=split.cutoff,
                     run_end=split.cutoff + config.holdout_days * DAY)
    started = time.perf_counter()
    fitted = fit_blend(split.earlier, config, Blend(1, 1, 1), warm)
    seconds = time.perf_counter() - started
    scored = score_blends(fitted, evaluated, SCORED, config.top_k)
    return [scored[blend].ndcg for blend in SCORED], seconds, kept[-1], warm.first_start


def run_shop(name: str, nights: int, gaps: list[int], config: TrainingConfig) -> None:
    interactions, _, _ = LOADERS[name](SHOPS[name])
    last = float(interactions.timestamps.max()) + DAY
    print(f"## {SHOPS[name].name}: {nights} nights to {time.strftime('%Y-%m-%d', time.gmtime(last))}, "
          f"holdout {config.holdout_days} days\n")
    cold: dict[int, list[float]] = {}
    cold_seconds: list[float] = []
    chained: dict[int, dict[int, tuple[list[float], float, ItemFactors]]] = {gap: {} for gap in gaps}
    for back in range(nights + max(gaps) - 1, -1, -1):  # oldest first: each chain's starts exist
        end = last - back * DAY
        split = HoldoutSplit.of(interactions.select(interactions.timestamps <= end), end, config)
        if len(split.evaluated.users) < config.min_users_to_evaluate:
            continue
        evaluated = sampled(split.evaluated, config.max_holdout_users, config.random_seed)
        ndcg, seconds, kept, _ = holdout_fit(split, evaluated, config, None)
        cold[back] = ndcg
        if back < nights:
            cold_seconds.append(seconds)
        for gap in gaps:
            before = chained[gap].get(back + gap)
            if before is None:  # the chain's first night: cold, as a shop's first run
                chained[gap][back] = (ndcg, seconds, kept)
                continue
            ndcg_warm, seconds_warm, kept_warm, how = holdout_fit(split, evaluated, config, before[2])
            assert how.startswith("from the fit of run earlier"), how  # it did start from the earlier fit
            chained[gap][back] = (ndcg_warm, seconds_warm, kept_warm)
    print("| first fit | nights | NDCG@10, ALS alone | change | worst night | NDCG@10, 1/1/1 | change | worst night "
          "| fit seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    own = np.array([cold[back] for back in range(nights) if back in cold])
    print(f"| cold ({config.iterations} iterations) | {len(own)} | {own[:, 0].mean():.4f} | | | {own[:, 1].mean():.4f} "
          f"| | | {np.mean(cold_seconds):.2f} |")
    for gap in gaps:
        backs = [back for back in range(nights) if back in cold and back + gap in chained[gap]]
        if not backs:
            continue
        base = np.array([cold[back] for back in backs])
        warm = np.array([chained[gap][back][0] for back in backs])
        change = (warm - base) / base
        mean_change = (warm.mean(axis=0) - base.mean(axis=0)) / base.mean(axis=0)
        seconds = np.mean([chained[gap][back][1] for back in backs])
        print(f"| from the fit {gap} night{'s' if gap > 1 else ''} before ({config.warm_iterations} iterations) | "
              f"{len(backs)} | {warm[:, 0].mean():.4f} | {mean_change[0]:+.1%} | {change[:, 0].min():+.1%} | "
              f"{warm[:, 1].mean():.4f} | {mean_change[1]:+.1%} | {change[:, 1].min():+.1%} | {seconds:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shop", choices=["both", *SHOPS], default="both")
    parser.add_argument("--nights", type=int, default=14)
    parser.add_argument("--gaps", default="1,7")
    args = parser.parse_args()
    config = TrainingConfig(window_days=3650)
    for name in SHOPS if args.shop == "both" else [args.shop]:
        run_shop(name, args.nights, [int(gap) for gap in args.gaps.split(",")], config)


if __name__ == "__main__":
    main()
