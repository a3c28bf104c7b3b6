"""CLV validated on a time split of real purchase history: BG/NBD's predicted orders in the next
90 days against the orders the customers actually placed, and against a naive baseline.

    .venv/bin/python bench/clv.py [--retail PATH] [--ta-feng PATH] [--horizon 90]

Online Retail goes through the service's own path: the importer's events
(devstack.retail_csv), folded into purchase summaries (shared.users.fold_purchases), the nightly
statistics and fits (shared.training.customers.customer_statistics) as of a cutoff `horizon`
days before the last event, and each customer's prediction as the tags compute it
(shared.segments.tags.predict_clv). Ta-Feng has no importer preset: its rows are read here, a
basket being a customer's day, into the same summaries. Actual orders are the distinct orders
(order_id; without one, the day) each customer placed after the cutoff.

Reported, over the customers who bought before the cutoff:
- Spearman rank correlation of predicted and actual orders (and of predicted and actual spend);
- calibration by decile of prediction: mean predicted and mean actual orders in each tenth of
  the customers, sorted by prediction;
- the same for a naive baseline: orders per day since the first purchase (at least 30 days) x
  the horizon.
The data stays in ../shared/data; nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import os
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

os.environ.update({"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_SERVICE_NAME": "bench",
                   "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true"})
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from devstack.retail_csv import read_retail_csv  # noqa: E402
from shared.events import Event, EventType  # noqa: E402
from shared.purchases import order_key  # noqa: E402
from shared.segments import clv  # noqa: E402
from shared.segments.features import customer_features  # noqa: E402
from shared.training.customers import customer_statistics  # noqa: E402
from shared.users import PurchaseSummary, User, fold_purchases  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RETAIL = DATA / "online_retail_2010-12_2011-08.csv.gz"
TA_FENG = DATA / "ta_feng_2000-11_2001-02.csv.gz"


def online_retail(path: Path, horizon: int):
    """(summaries at the cutoff, actual orders and spend after it, cutoff) through the service's path."""
    imported = read_retail_csv(path)
    stamps = [e["timestamp"] for e in imported.all_events()]
    end = datetime.fromisoformat(max(stamps).replace("Z", "+00:00"))
    cutoff = end - timedelta(days=horizon)
    context = {"now": end + timedelta(days=1), "max_future_seconds": 86_400}
    before: dict[str, list[Event]] = defaultdict(list)
    after_orders: dict[str, set[bytes]] = defaultdict(set)
    after_spend: dict[str, float] = defaultdict(float)
    for raw in imported.all_events():
        if "order_id" not in raw:  # an importer without order ids: the invoice is in the event id
            raw = {**raw, "order_id": raw["event_id"].rsplit("-", 1)[0]}
        event = Event.model_validate(raw, context=context)
        if event.timestamp <= cutoff:
            before[event.user_id].append(event)
        elif event.event_type is EventType.PURCHASE:
            after_orders[event.user_id].add(order_key(event.order_id, event.timestamp))
            after_spend[event.user_id] += float(event.line_total)
        elif event.event_type is EventType.RETURN:
            after_spend[event.user_id] -= float(event.line_total)
    summaries = {user: fold_purchases(PurchaseSummary(), events) for user, events in before.items()}
    summaries = {user: s for user, s in summaries.items() if s.orders}
    actual = {user: len(after_orders.get(user, ())) for user in summaries}
    spend = {user: after_spend.get(user, 0.0) for user in summaries}
    return summaries, actual, spend, cutoff


def ta_feng(path: Path, horizon: int):
    """The same from Ta-Feng's rows: a basket is a customer's day; SALES_PRICE is the line total."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
        rows = [(r["CUSTOMER_ID"].strip(), datetime.strptime(r["TRANSACTION_DT"].strip(), "%m/%d/%Y"),
                 float(r["SALES_PRICE"]), int(float(r["AMOUNT"])))
                for r in csv.DictReader(io.TextIOWrapper(text.buffer, encoding="utf-8-sig", newline=""))
                if r["CUSTOMER_ID"].strip()]
    end = max(day for _, day, _, _ in rows)
    cutoff = end - timedelta(days=horizon) + timedelta(days=1)  # the last `horizon` days are held out
    days: dict[str, set[datetime]] = defaultdict(set)
    lines: dict[str, int] = defaultdict(int)
    units: dict[str, int] = defaultdict(int)
    spent: dict[str, float] = defaultdict(float)
    after_days: dict[str, set[datetime]] = defaultdict(set)
    after_spend: dict[str, float] = defaultdict(float)
    for customer, day, price, amount in rows:
        if day < cutoff:
            days[customer].add(day)
            lines[customer] += 1
            units[customer] += amount
            spent[customer] += price
        else:
            after_days[customer].add(day)
            after_spend[customer] += price
    summaries = {}
    for customer, bought in days.items():
        # a day's basket is stamped at noon (Taipei), as if one order
        first, last = (d.replace(hour=4, tzinfo=timezone.utc) for d in (min(bought), max(bought)))
        summaries[customer] = PurchaseSummary(
            orders=len(bought), lines=lines[customer], units=units[customer],
            spend={"TWD": Decimal(str(round(spent[customer], 2)))},
            first_purchase_at=first.isoformat(), last_purchase_at=last.isoformat())
    actual = {c: len(after_days.get(c, ())) for c in summaries}
    spend = {c: after_spend.get(c, 0.0) for c in summaries}
    return summaries, actual, spend, cutoff.replace(tzinfo=timezone.utc)


def evaluate(name: str, summaries, actual, actual_spend, cutoff, horizon: int) -> dict:
    started = time.perf_counter()
    statistics = customer_statistics(list(summaries.values()), cutoff)
    fit_seconds = time.perf_counter() - started
    bg_nbd = clv.bg_nbd_from(statistics)
    if bg_nbd is None:
        print(f"{name}: BG/NBD not fitted: {statistics['clv']['bg_nbd']}")
        return {}
    users = sorted(summaries)
    predicted, baseline, value, actual_orders, actual_value = [], [], [], [], []
    for user in users:
        f = customer_features(User(user_id=user, summary=summaries[user]), [], {}, cutoff)
        gamma_gamma = clv.gamma_gamma_from(statistics, f.currency)
        p = clv.predict(bg_nbd, gamma_gamma, f.orders_total, f.recency_days, f.tenure_days, f.monetary, horizon)
        predicted.append(p.orders)
        value.append(p.value if p.value is not None else 0.0)
        baseline.append(f.orders_total / max(f.tenure_days, 30.0) * horizon)
        actual_orders.append(actual[user])
        actual_value.append(actual_spend[user])
    predicted, baseline, actual_orders = np.array(predicted), np.array(baseline), np.array(actual_orders)
    fitted = statistics["clv"]
    print(f"\n## {name}: {len(users):,} customers who bought before {cutoff.date()}, next {horizon} days")
    params = {k: round(v, 4) for k, v in fitted["bg_nbd"].items() if k in ("r", "alpha", "a", "b")}
    gg = next(iter(fitted.get("gamma_gamma", {}).values()), {})
    print(f"BG/NBD {params} (alpha in days); Gamma-Gamma "
          f"{ {k: round(v, 4) for k, v in gg.items() if k in ('p', 'q', 'v')} or gg}; fitted in {fit_seconds:.1f} s")
    print(f"actual orders: {actual_orders.sum():,} in total, {np.mean(actual_orders > 0):.1%} of customers ordered")
    rows = {}
    for label, prediction in (("BG/NBD", predicted), ("naive", baseline)):
        rho = spearmanr(prediction, actual_orders).statistic
        mae = np.mean(np.abs(prediction - actual_orders))
        rows[label] = (rho, mae, prediction.sum())
        print(f"{label:>7}: Spearman {rho:.3f}, mean absolute error {mae:.2f} orders, "
              f"total predicted {prediction.sum():,.0f}")
    print(f"CLV value: Spearman of predicted and actual spend {spearmanr(value, actual_value).statistic:.3f}")
    print("calibration by decile of prediction (mean predicted / mean actual orders):")
    print("| decile | BG/NBD predicted | actual | naive predicted | actual |")
    print("|---|---|---|---|---|")
    by_model = {label: np.array_split(np.argsort(p, kind="stable"), 10)
                for label, p in (("BG/NBD", predicted), ("naive", baseline))}
    for decile in range(10):
        ours, naive = by_model["BG/NBD"][decile], by_model["naive"][decile]
        print(f"| {decile + 1} | {predicted[ours].mean():.2f} | {actual_orders[ours].mean():.2f} "
              f"| {baseline[naive].mean():.2f} | {actual_orders[naive].mean():.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retail", type=Path, default=RETAIL)
    parser.add_argument("--ta-feng", type=Path, default=TA_FENG)
    parser.add_argument("--horizon", type=int, default=clv.HORIZON_DAYS)
    parser.add_argument("--ta-feng-horizon", type=int, default=60,
                        help="Ta-Feng holds 4 months: 90 days held out would leave one to calibrate on")
    args = parser.parse_args()
    if args.retail.exists():
        evaluate("Online Retail", *online_retail(args.retail, args.horizon), args.horizon)
    else:
        print(f"{args.retail} is absent: Online Retail skipped")
    if args.ta_feng.exists():
        evaluate("Ta-Feng", *ta_feng(args.ta_feng, args.ta_feng_horizon), args.ta_feng_horizon)
    else:
        print(f"{args.ta_feng} is absent: Ta-Feng skipped")


if __name__ == "__main__":
    main()
