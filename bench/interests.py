"""Declared interests for newcomers: what a customer without history is shown, measured on demo shops.

    .venv/bin/python bench/interests.py [--seeds 1,2,3] [--users 6000] [--items 600] [--cut-days 28]

For each seed, a generated shop (devstack/demo_data.py, a year up to a fixed end) is trained in
process as of a cut date (`cut-days` before the end: `as_of`, the pipeline's own train_model on
the events before it). The newcomers are the customers whose first event is after the cut and at
least a week before the end, who declare interests and may be personalized, and who buy something
in their first week (from their first event). Each is asked for 10 recommendations by the real
serving code (shared/serving/recommender.py, in-memory Sources) as at their first event, when
they have no history yet:

- interests: their profile as it is: the answer is `cold_start:interests` (their interests'
  lists, popular to fill);
- popular: the same profile without its interests: `cold_start:popular_country`, the country's
  bestsellers, what every newcomer got before.

Hit rate@10: the share of newcomers who bought, in that first week, at least one item of the
answer. Interests in the demo shop follow the favourite categories 70% of the time
(DECLARED_FROM_FAVOURITES): the figure says how much of that the serving code turns into hits,
not what a real shop's declared interests are worth.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.demo_data import ShopData, generate_shop  # noqa: E402
from shared.catalog import Item  # noqa: E402
from shared.events import EventType  # noqa: E402
from shared.serving.model import ServingModel  # noqa: E402
from shared.serving.recommender import Recommender, Sources  # noqa: E402
from shared.training.config import TrainingConfig  # noqa: E402
from shared.training.interactions import InteractionLog  # noqa: E402
from shared.training.interests import declared  # noqa: E402
from shared.training.pipeline import TrainingData, train_model  # noqa: E402
from shared.users import User, may_personalize  # noqa: E402

END = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
WEEK = timedelta(days=7)
TOP = 10


class Catalog:
    def __init__(self, shop: ShopData) -> None:
        self.items = {i["item_id"]: Item.model_validate(i) for i in shop.items}

    def details(self, item_ids):
        return {i: self.items[i] for i in item_ids if i in self.items}

    def newest(self, category, limit):
        return []


def stamp(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def train(shop: ShopData, users: dict[str, User], cut: datetime, seed: int) -> tuple[ServingModel, str, float]:
    """What the nightly run would publish as of `cut`: the loader's choices (consenting customers,
    their countries and normalised interests, the items' categories and titles), then train_model."""
    started = time.perf_counter()
    trained = {u for u, user in users.items() if may_personalize(user)}
    log = InteractionLog(limit=10_000_000)
    before = [e for e in shop.events if e["user_id"] in trained and stamp(e) <= cut.timestamp()]
    log.add_page([e["user_id"] for e in before], [e["item_id"] for e in before],
                 [EventType(e["event_type"]) for e in before], [e.get("quantity", 1) for e in before],
                 [stamp(e) for e in before], [e.get("order_id") for e in before])
    config = TrainingConfig(as_of=cut, random_seed=seed)
    data = TrainingData(
        log.finish(), cut.timestamp(),
        countries={u: users[u].country for u in trained if users[u].country},
        categories={i["item_id"]: i["category"] for i in shop.items},
        titles={i["item_id"]: i["title"] for i in shop.items},
        interests={u: [key for key, _ in found] for u in trained if (found := declared(users[u].attributes))},
    )
    outcome = train_model(data, config)
    assert outcome.artifact is not None, outcome.reason
    return ServingModel(f"as-of-{cut:%Y%m%d}", outcome.artifact), outcome.strategy, time.perf_counter() - started


def newcomers(shop: ShopData, users: dict[str, User], cut: datetime) -> dict[str, tuple[float, set[str]]]:
    """user_id -> (first event, items bought in the first week), for those measured (see the top)."""
    first: dict[str, float] = {}
    for event in shop.events:  # sorted by time
        first.setdefault(event["user_id"], stamp(event))
    bought: dict[str, set[str]] = defaultdict(set)
    for event in shop.events:
        user = event["user_id"]
        if event["event_type"] == "purchase" and stamp(event) < first[user] + WEEK.total_seconds():
            bought[user].add(event["item_id"])
    last_start = (END - WEEK).timestamp()
    return {u: (first[u], bought[u]) for u in first
            if cut.timestamp() < first[u] <= last_start and bought[u]
            and declared(users[u].attributes) and may_personalize(users[u])}


def run_seed(seed: int, n_users: int, n_items: int, cut_days: int) -> dict[str, float]:
    started = time.perf_counter()
    shop = generate_shop(seed=seed, n_users=n_users, n_items=n_items, end=END)
    generated = time.perf_counter() - started
    users = {u["user_id"]: User.model_validate(u) for u in shop.users}
    cut = END - timedelta(days=cut_days)
    model, strategy, trained = train(shop, users, cut, seed)
    measured = newcomers(shop, users, cut)
    catalog = Catalog(shop)
    profiles: dict[str, User] = {}
    recommender = Recommender(Sources(model=lambda: model, catalog=catalog, history=lambda user_ids: [],
                                      profile=lambda user_id: profiles.get(user_id)))
    hits: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    for user_id, (first, bought) in measured.items():
        now = datetime.fromtimestamp(first, timezone.utc)
        with_interests = users[user_id]
        without = with_interests.model_copy(update={"attributes": {
            k: v for k, v in with_interests.attributes.items() if k != "interests"}})
        hit = {}
        for label, profile in (("interests", with_interests), ("popular", without)):
            profiles[user_id] = profile
            answer = recommender.recommend(user_id, TOP, now=now)
            strategies[f"{label}: {answer.strategy}"] += 1
            hit[label] = bool(bought & {i.item_id for i in answer.items})
            hits[label] += hit[label]
        hits["only_interests"] += hit["interests"] and not hit["popular"]
        hits["only_popular"] += hit["popular"] and not hit["interests"]
    n = len(measured)
    rates = {label: hits[label] / n if n else 0.0 for label in ("interests", "popular")}
    print(f"seed {seed}: {len(shop.users):,} customers, {len(shop.events):,} events (generated in {generated:.0f} s); "
          f"trained as of {cut:%Y-%m-%d} ({strategy}, {trained:.0f} s, "
          f"{len(model.artifact.popular_by_interest)} interest lists: "
          f"{', '.join(sorted(model.artifact.popular_by_interest))}); {n} newcomers measured; answers: "
          + ", ".join(f"{k} x{v}" for k, v in sorted(strategies.items())))
    return {"newcomers": n, **rates, **{f"hits_{label}": count for label, count in hits.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--cut-days", type=int, default=28)
    args = parser.parse_args()
    rows = {int(seed): run_seed(int(seed), args.users, args.items, args.cut_days) for seed in args.seeds.split(",")}
    print(f"\n| seed | newcomers | hit rate@{TOP}, interests | hit rate@{TOP}, country popular | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for seed, row in rows.items():
        ratio = row["interests"] / row["popular"] if row["popular"] else float("inf")
        print(f"| {seed} | {row['newcomers']} | {row['interests']:.3f} | {row['popular']:.3f} | {ratio:.2f} |")
    n = sum(r["newcomers"] for r in rows.values())
    interests = sum(r["hits_interests"] for r in rows.values()) / n if n else 0.0
    popular = sum(r["hits_popular"] for r in rows.values()) / n if n else 0.0
    print(f"| all | {n} | {interests:.3f} | {popular:.3f} | "
          f"{interests / popular if popular else float('inf'):.2f} |")
    only = [sum(r.get(f"hits_only_{label}", 0) for r in rows.values()) for label in ("interests", "popular")]
    if sum(only):
        from scipy.stats import binomtest

        print(f"\nnewcomers with a hit only with interests: {only[0]}, only with popular: {only[1]} "
              f"(McNemar's exact test, two-sided: p = {binomtest(only[1], sum(only), 0.5).pvalue:.3f})")


if __name__ == "__main__":
    main()
