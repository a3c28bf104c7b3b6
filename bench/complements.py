"""Complements vs substitutes vs popular: which predicts the rest of a customer's next order?

    .venv/bin/python bench/complements.py [--shop retail|ta_feng|both] [--holdout-days 28] [--seeds first|each]

Time split: the last --holdout-days are held out; everything is computed on what came before.
A basket is an order (Online Retail: the invoice, the event id before its last "-" when the
import carries no order_id) or a customer's day (Ta-Feng, which has no order id). Evaluated: every
holdout basket with at least 2 distinct items whose customer had a basket before the cutoff.
Seed: the order's first line (--seeds first), or each of its items in turn (--seeds each).
The targets are the basket's other distinct items; a method gives 10 items for the seed (never
the seed itself; nothing else left out) and scores
- hit rate@10: share of (basket, seed) with at least one target among the 10;
- recall@10: mean share of the targets among the 10.

Methods:
- popular: distinct buyers over the 30 days before the cutoff;
- substitutes, ALS: this pipeline's ALS (shared/training, default settings) item factors, cosine
  (what GET /items/{id}/similar serves);
- substitutes, item cosine: cosine of the items' binary customer columns;
- complements (shared/training/complements.py) ranked by G^2 or lift, >= 3 customers, with and
  without the variant rule (titles; Ta-Feng has none); "+ popular" fills the slots a seed
  without enough complements leaves with popular items, as the route does (it uses the item's
  category; here the overall list).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402

from devstack.retail_csv import read_retail_csv  # noqa: E402
from shared.events import EventType  # noqa: E402
from shared.training.complements import compute_complements, titles_by_index  # noqa: E402
from shared.training.config import TrainingConfig  # noqa: E402
from shared.training.interactions import EVENT_CODES, Interactions  # noqa: E402
from shared.training.matrix import DAY, confidence_matrix  # noqa: E402
from shared.training.pipeline import fit_als  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RETAIL = DATA / "online_retail_2010-12_2011-08.csv.gz"
TA_FENG = DATA / "ta_feng_2000-11_2001-02.csv.gz"
K = 10


@dataclass
class Lines:
    """Purchase lines in file order: integer users, items and baskets, seconds since the epoch."""

    name: str
    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray
    items: np.ndarray
    baskets: np.ndarray
    timestamps: np.ndarray
    titles: list[str] | None


def _index(values: list[str]) -> tuple[list[str], np.ndarray]:
    ids: dict[str, int] = {}
    codes = np.fromiter((ids.setdefault(v, len(ids)) for v in values), np.int64, len(values))
    return list(ids), codes


def load_retail(path: Path) -> Lines:
    data = read_retail_csv(path)
    events = data.events
    orders = [e.get("order_id") or e["event_id"].rsplit("-", 1)[0] for e in events]
    user_ids, users = _index([e["user_id"] for e in events])
    item_ids, items = _index([e["item_id"] for e in events])
    _, baskets = _index(orders)
    stamps = np.array([datetime.fromisoformat(e["timestamp"]).timestamp() for e in events])
    titles = {i["item_id"]: i["title"] for i in data.items}
    return Lines(path.name, user_ids, item_ids, users, items, baskets, stamps, titles_by_index(item_ids, titles))


def load_ta_feng(path: Path) -> Lines:
    customers, products, days = [], [], []
    with gzip.open(path, "rt", newline="") as text:
        for row in csv.DictReader(text):
            customers.append(row["CUSTOMER_ID"].strip())
            products.append(row["PRODUCT_ID"].strip())
            days.append(row["TRANSACTION_DT"].strip())
    user_ids, users = _index(customers)
    item_ids, items = _index(products)
    day_ids, day_codes = _index(days)
    seconds = np.array([datetime.strptime(d, "%m/%d/%Y").replace(tzinfo=timezone.utc).timestamp() for d in day_ids])
    _, baskets = _index([f"{u}:{d}" for u, d in zip(users.tolist(), day_codes.tolist())])
    return Lines(path.name, user_ids, item_ids, users, items, baskets, seconds[day_codes], None)


def evaluation_cases(lines: Lines, cutoff: float, seeds: str) -> list[tuple[int, set[int]]]:
    before = lines.timestamps < cutoff
    known = set(lines.users[before].tolist())
    cases = []
    order = np.argsort(lines.baskets[~before], kind="stable")  # file order within each basket
    held_baskets, held_items, held_users = (lines.baskets[~before][order], lines.items[~before][order],
                                            lines.users[~before][order])
    starts = np.flatnonzero(np.r_[True, held_baskets[1:] != held_baskets[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(held_baskets)]):
        if held_users[start] not in known:
            continue
        basket = list(dict.fromkeys(held_items[start:end].tolist()))
        if len(basket) < 2:
            continue
        for seed in basket if seeds == "each" else basket[:1]:
            cases.append((seed, set(basket) - {seed}))
    return cases


def score(cases: list[tuple[int, set[int]]], top: Callable[[list[int]], dict[int, list[int]]]) -> tuple[float, float]:
    answers = top(sorted({seed for seed, _ in cases}))
    hits, recall = [], []
    for seed, targets in cases:
        found = len(set(answers.get(seed, [])[:K]) & targets)
        hits.append(found > 0)
        recall.append(found / len(targets))
    return float(np.mean(hits)), float(np.mean(recall))


def top_rows(scores: np.ndarray, seeds: list[int]) -> dict[int, list[int]]:
    """Top K of each row of a (seeds x items) score block, the seed itself left out."""
    scores = scores.copy()
    scores[np.arange(len(seeds)), seeds] = -np.inf
    part = np.argpartition(-scores, K, axis=1)[:, :K]
    ranked = np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1), 1)
    return {seed: [i for i, s in zip(row, scores[r, row]) if np.isfinite(s) and s > 0]
            for r, (seed, row) in enumerate(zip(seeds, ranked.tolist()))}


def cosine_top(vectors: np.ndarray | csr_matrix, seeds: list[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for start in range(0, len(seeds), 500):
        batch = seeds[start:start + 500]
        block = vectors[batch] @ vectors.T
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        found |= top_rows(block.astype(np.float64), batch)
    return found


def normalized(matrix: np.ndarray | csr_matrix) -> np.ndarray | csr_matrix:
    if isinstance(matrix, np.ndarray):
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return csr_matrix(matrix.multiply(1 / np.maximum(norms, 1e-12)[:, None]))


def run(lines: Lines, holdout_days: int, seeds: str) -> None:
    started = time.perf_counter()
    end = float(lines.timestamps.max()) + 1
    cutoff = end - holdout_days * DAY
    before = lines.timestamps < cutoff
    n_users, n_items = len(lines.user_ids), len(lines.item_ids)
    cases = evaluation_cases(lines, cutoff, seeds)
    print(f"{lines.name}: {len(lines.items):,} purchase lines, {n_users:,} customers, {n_items:,} products, "
          f"{len(np.unique(lines.baskets)):,} baskets; holdout: the last {holdout_days} days")
    print(f"evaluated: {len(cases):,} (basket, seed) cases, seed = {seeds}; "
          f"mean targets per case {np.mean([len(t) for _, t in cases]):.1f}")

    users, items = lines.users[before], lines.items[before]
    recent = before & (lines.timestamps >= cutoff - 30 * DAY)
    buyers = csr_matrix((np.ones(recent.sum()), (lines.users[recent], lines.items[recent])), shape=(n_users, n_items))
    popular_scores = np.asarray((buyers > 0).sum(axis=0)).ravel() + np.bincount(items, minlength=n_items) * 1e-6
    popular = [int(i) for i in np.argsort(-popular_scores, kind="stable")[:K + 1]]

    def popular_top(seed_list: list[int]) -> dict[int, list[int]]:
        return {s: [i for i in popular if i != s][:K] for s in seed_list}

    rows: list[tuple[str, float, float, str]] = []

    def measure(name: str, top: Callable[[list[int]], dict[int, list[int]]], note: str = "") -> None:
        t = time.perf_counter()
        hit, rec = score(cases, top)
        rows.append((name, hit, rec, note or f"{time.perf_counter() - t:.1f} s"))

    measure("popular (30 days)", popular_top)

    config = TrainingConfig()
    interactions = Interactions(lines.user_ids, lines.item_ids, users.astype(np.int32), items.astype(np.int32),
                                np.full(len(users), EVENT_CODES[EventType.PURCHASE], np.int8),
                                np.ones(len(users), np.float32), lines.timestamps[before])
    t = time.perf_counter()
    _, item_factors = fit_als(confidence_matrix(interactions, config, cutoff, (n_users, n_items)), config)
    fit_seconds = time.perf_counter() - t
    measure("substitutes: ALS similar items", lambda s: cosine_top(normalized(item_factors), s),
            f"fit {fit_seconds:.1f} s")
    binary = csr_matrix((np.ones(len(users)), (items, users)), shape=(n_items, n_users))
    binary.data[:] = 1.0
    measure("substitutes: item cosine", lambda s: cosine_top(normalized(binary), s))

    def complements_top(rank_by: str, titles: list[str] | None, fill: bool,
                        penalty: float = 0.0) -> Callable[[list[int]], dict]:
        t = time.perf_counter()
        found = compute_complements(users, items, lines.baskets[before], n_items, titles, rank_by=rank_by,
                                    variant_penalty=penalty)
        took = time.perf_counter() - t

        def top(seed_list: list[int]) -> dict[int, list[int]]:
            answers = {}
            for s in seed_list:
                picked = [c.item for c in found.of(s, K)]
                if fill:
                    picked += [i for i in popular if i != s and i not in picked][:K - len(picked)]
                answers[s] = picked
            return answers
        top.took, top.found = took, found  # type: ignore[attr-defined]
        return top

    variants = [(True, lines.titles)] + ([(False, None)] if lines.titles else [])
    for rank_by in ("llr", "lift"):
        for demoted, titles in variants:
            label = f"complements: {'G^2' if rank_by == 'llr' else 'lift'}"
            label += ", variants demoted" if demoted and titles else ("" if not lines.titles else ", no variant rule")
            for fill in (False, True):
                top = complements_top(rank_by, titles, fill)
                measure(label + (" + popular" if fill else ""), top, f"computed in {top.took:.1f} s")
    if lines.titles:
        for penalty in (0.25, 0.5):
            top = complements_top("llr", lines.titles, True, penalty)
            measure(f"complements: G^2, variants x{penalty:g} + popular", top, f"computed in {top.took:.1f} s")
        unranked = complements_top("llr", lines.titles, False, 1.0).found  # flagged, not demoted
        shown = [c.variant for s, _ in cases for c in unranked.of(s, K)]
        variant_note = f"variants among the top {K} complements when not demoted: {np.mean(shown):.0%}"
    else:
        variant_note = "no titles: no variant rule"
    with_any = complements_top("llr", lines.titles, False)
    covered = np.mean([len(with_any([s])[s]) > 0 for s, _ in cases])

    print(f"\n| method | hit rate@{K} | recall@{K} | note |\n|---|---:|---:|---|")
    for name, hit, rec, note in rows:
        print(f"| {name} | {hit:.3f} | {rec:.3f} | {note} |")
    print(f"\nseeds with at least one complement (>= 3 customers): {covered:.1%}; "
          f"{variant_note}; run {time.perf_counter() - started:.0f} s\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shop", choices=("retail", "ta_feng", "both"), default="retail")
    parser.add_argument("--holdout-days", type=int, default=28)
    parser.add_argument("--seeds", choices=("first", "each"), default="first")
    args = parser.parse_args()
    if args.shop in ("retail", "both"):
        run(load_retail(RETAIL), args.holdout_days, args.seeds)
    if args.shop in ("ta_feng", "both"):
        run(load_ta_feng(TA_FENG), args.holdout_days, args.seeds)


if __name__ == "__main__":
    main()
