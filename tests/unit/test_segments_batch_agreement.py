"""The nightly batch (shared/segments/batch.py) against the request path, on 100k generated
customers with varied histories: every customer's tags, in order, with their reasons, the same.

The customers are generated with numpy (`generated_customers`, which bench/segments.py times
too): buyers in one or two currencies, prospects, customers with only returns or nothing left
after them, objectors, erased customers, customers known only by their events, declared data,
contact ledgers, and custom rules over every field; the statistics are taken from the same base
(quintiles, percentiles, and CLV parameters with the tiers' percentiles of predicted value).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np

from shared.bulk import cycle_collection_paused
from shared.consent import Consent, PurposeConsent
from shared.contact import ChannelLedger, ContactLedger
from shared.events import format_timestamp
from shared.history import HistoryEvent
from shared.history_columns import HistoryColumns
from shared.segments import batch, clv
from shared.segments.batch import segment_everyone
from shared.segments.families import FAMILIES
from shared.segments.rules import CustomSegment
from shared.segments.tags import segment_customer
from shared.users import PurchaseSummary, User
from tests.factories import members_by_segment

NOW = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)
DAY = 86_400.0
CATEGORIES = ("kitchen", "garden", "toys", "books", "shoes", "beauty", "sports", "music")
ITEMS = 600  # i0..i599; the last 50 are in no category
TYPES = np.array(["view", "add_to_cart", "purchase", "return", "message_sent", "click", "remove_from_cart"])
TYPE_SHARE = [0.42, 0.12, 0.28, 0.04, 0.06, 0.05, 0.03]
CHANNELS = np.array(["web", "ios", "android", "store", "email", "", "push"], dtype=object)
CHANNEL_SHARE = [0.45, 0.2, 0.12, 0.08, 0.05, 0.08, 0.02]
PRICES = np.round(np.concatenate([[0.0, 9.99, 10.0, 12.5], np.exp(np.linspace(0.5, 6, 60))]), 2)


@dataclass(frozen=True)
class Generated:
    users: dict[str, User]
    histories: dict[str, list[HistoryEvent]]
    categories: dict[str, str]
    statistics: dict[str, Any]
    definitions: list[CustomSegment]
    now: datetime = NOW


def _stamps(seconds: np.ndarray) -> list[str]:
    """Times (seconds since the epoch, whole microseconds) as ingest stores them."""
    us = np.round(seconds * 1e6).astype("int64").astype("datetime64[us]")
    return [s + "Z" for s in np.datetime_as_string(us, unit="us").tolist()]


def _ledgers(rng: np.random.Generator, count: int) -> list[ContactLedger]:
    """A pool of contact ledgers: few sends, enough for a rate, fatigue, answered or not."""
    pool = [ContactLedger()]
    for _ in range(count):
        channels = {}
        for channel in ("email", "sms", "push"):
            sends = int(rng.choice([0, 0, 1, 2, 3, 5, 8, 12]))
            if not sends:
                continue
            responses = int(rng.integers(0, sends + 1)) if rng.random() < 0.6 else 0
            kept = min(sends, 20)
            ages = np.sort(rng.uniform(0, 70, kept))
            recent = [format_timestamp(NOW - timedelta(days=float(a))) for a in ages]
            answered = (format_timestamp(NOW - timedelta(days=float(rng.uniform(0, 80))))
                        if responses else None)
            channels[channel] = ChannelLedger(sends=sends, responses=responses, recent_sends=recent,
                                              recent_campaigns=[f"c{k}" for k in range(kept)],
                                              last_sent_at=recent[0], last_response_at=answered)
        pool.append(ContactLedger(**channels))
    return pool


def _attributes(rng: np.random.Generator, count: int) -> list[dict[str, Any]]:
    pool: list[dict[str, Any]] = [{}]
    for _ in range(count):
        attributes: dict[str, Any] = {}
        if rng.random() < 0.5:
            attributes["age_band"] = str(rng.choice(["18-24", "25-34", "35-44", "45-54", "55+"]))
        if rng.random() < 0.2:
            attributes["household"] = str(rng.choice(["single", "family", "couple"]))
        if rng.random() < 0.1:
            attributes["company_type"] = str(rng.choice(["retail", "agency"])) if rng.random() < 0.8 else 3
        if rng.random() < 0.4:
            attributes["interests"] = [str(x) for x in rng.choice(["kitchen", "running", "jazz", "garden"],
                                                                  int(rng.integers(0, 4)), replace=False)]
        for key in ("prefers_eco", "prefers_fast_delivery"):
            if rng.random() < 0.15:
                attributes[key] = bool(rng.random() < 0.7)
        if rng.random() < 0.1:
            attributes["loyalty_points"] = int(rng.integers(0, 500))
        pool.append(attributes)
    return pool


def generated_customers(n: int, seed: int = 17) -> Generated:
    """`n` customers with varied histories (numpy draws, then one pass building the objects)."""
    rng = np.random.default_rng(seed)
    now_s = NOW.timestamp()
    objected = Consent(profiling=PurposeConsent(granted=False, at="2026-01-01T00:00:00.000000Z", source="web"))
    erased = Consent(profiling=PurposeConsent(granted=False, at="2026-01-01T00:00:00.000000Z", source="web"),
                     personalization=PurposeConsent(granted=False, at="2026-01-01T00:00:00.000000Z", source="web"))
    default = Consent()
    ledgers = _ledgers(rng, 400)
    attribute_pool = _attributes(rng, 400)

    # Who each customer is: 0 a profile, 1 only events, 2 objected, 3 erased.
    kind = rng.choice(4, n, p=[0.90, 0.05, 0.04, 0.01])
    buyer = rng.random(n) < 0.72
    orders = np.where(buyer, rng.geometric(0.35, n), 0)
    lines = orders + np.where(buyer, rng.geometric(0.5, n) - 1, 0)
    units = lines + np.where(buyer, rng.geometric(0.6, n) - 1, 0)
    recency = rng.integers(0, 400, n) * DAY + rng.integers(0, 86_400_000_000, n) / 1e6
    # Some buyers bought once (first = last), some within the month (New), others long ago.
    tenure = recency + np.where(rng.random(n) < 0.3, 0.0, rng.integers(0, 500, n) * DAY + rng.integers(0, 86_400, n))
    spend = np.round(orders * rng.lognormal(3.2, 0.8, n), 2)
    # Only returns: no purchase, a negative spend; everything returned: zero; round sums: edges.
    only_returns = ~buyer & (rng.random(n) < 0.05)
    spend = np.where(only_returns, -np.round(rng.uniform(1, 80, n), 2), spend)
    spend = np.where(buyer & (rng.random(n) < 0.03), 0.0, spend)
    spend = np.where(buyer & (rng.random(n) < 0.1), np.round(spend), spend)
    currency = rng.choice(["EUR", "GBP", "USD"], n, p=[0.8, 0.17, 0.03])
    second = rng.random(n) < 0.05  # a second currency beside the main one
    last_stamps = _stamps(now_s - recency)
    first_stamps = _stamps(now_s - tenure)
    legacy = rng.random(n) < 0.02  # an older row's timestamps, written by isoformat()

    events = rng.poisson(rng.choice([0.0, 2.0, 8.0, 25.0], n, p=[0.1, 0.3, 0.4, 0.2]))
    events[kind == 1] = np.maximum(events[kind == 1], 1)  # known only by their events
    total = int(events.sum())
    owner = np.repeat(np.arange(n), events)
    types = TYPES[rng.choice(len(TYPES), total, p=TYPE_SHARE)]
    types[np.repeat(only_returns, events) & (types == "purchase")] = "return"
    channels = CHANNELS[rng.choice(len(CHANNELS), total, p=CHANNEL_SHARE)]
    channels[types == "message_sent"] = rng.choice(["email", "sms", "push"], int((types == "message_sent").sum()))
    items = rng.integers(0, ITEMS, total)
    # A customer's events cluster on a few favourite items, so that categories can be liked.
    favourite = rng.integers(0, ITEMS, n)
    items = np.where(rng.random(total) < 0.5, favourite[owner], items)
    # Ages in days, a tenth of them whole days: on the 90 and 180 day edges of the spend windows.
    ages = np.where(rng.random(total) < 0.1, rng.integers(0, 200, total), rng.uniform(0, 400, total))
    stamps = np.round((now_s - ages * DAY) * 1e6) / 1e6
    money = (types == "purchase") | (types == "return")
    prices = np.where(money & (rng.random(total) < 0.97), PRICES[rng.integers(0, len(PRICES), total)], np.nan)
    event_currency = np.where(rng.random(total) < 0.93, currency[owner], "GBP")
    quantities = rng.choice([1, 1, 1, 2, 3], total)
    discounts = money & (rng.random(total) < np.repeat(rng.uniform(0, 1, n), events))
    history_rows = zip(items.tolist(), types.tolist(), quantities.tolist(), stamps.tolist(), channels.tolist(),
                       prices.tolist(), event_currency.tolist(), discounts.tolist())
    all_events = [HistoryEvent(f"i{item}", kind_, quantity, stamp, channel or None,
                               None if price != price else price, cur if price == price else None, None, discount)
                  for item, kind_, quantity, stamp, channel, price, cur, discount in history_rows]

    users: dict[str, User] = {}
    histories: dict[str, list[HistoryEvent]] = {}
    ledger_of = rng.integers(0, len(ledgers), n) * (rng.random(n) < 0.4)
    attributes_of = rng.integers(0, len(attribute_pool), n) * (rng.random(n) < 0.6)
    country = rng.choice(["DE", "GB", "FR", ""], n, p=[0.4, 0.3, 0.2, 0.1])
    start = 0
    for i in range(n):
        user_id = f"u{i}"
        if events[i]:
            histories[user_id] = all_events[start:start + events[i]]
            start += events[i]
        if kind[i] == 1:
            continue
        spent = {} if not (buyer[i] or only_returns[i]) else {str(currency[i]): Decimal(f"{spend[i]:.2f}")}
        if second[i] and spent:
            spent["EUR" if currency[i] != "EUR" else "GBP"] = Decimal(f"{spend[i] * 0.5:.2f}")
        last, first = last_stamps[i], first_stamps[i]
        if legacy[i]:
            last, first = last.replace("Z", "+00:00"), first.replace("Z", "+00:00")
        summary = PurchaseSummary.model_construct(
            orders=int(orders[i]), lines=int(lines[i]), units=int(units[i]), spend=spent, returned={},
            returns=int(only_returns[i]), first_purchase_at=first if buyer[i] else None,
            last_purchase_at=last if buyer[i] else None)
        if kind[i] == 3:  # erased: an objection and the time, nothing else
            users[user_id] = User.model_construct(user_id=user_id, country=None, region=None, city=None,
                                                  attributes={}, consent=erased, summary=PurchaseSummary(),
                                                  contacts=ContactLedger(), erased_at=NOW, linked_visitors=[],
                                                  linked_to=None, updated_at=None)
            continue
        users[user_id] = User.model_construct(
            user_id=user_id, country=str(country[i]) or None,
            region="Bavaria" if country[i] == "DE" and i % 3 else None,
            city="Munich" if country[i] == "DE" and i % 6 == 1 else None, attributes=attribute_pool[attributes_of[i]],
            consent=objected if kind[i] == 2 else default, summary=summary, contacts=ledgers[ledger_of[i]],
            erased_at=None, linked_visitors=[], linked_to=None, updated_at=None)
    categories = {f"i{k}": CATEGORIES[k % len(CATEGORIES)] for k in range(ITEMS - 50)}
    return Generated(users, histories, categories, base_statistics(users), definitions())


def base_statistics(users: dict[str, User]) -> dict[str, Any]:
    """Quintiles and percentiles of the generated base, as shared/training/customers.py computes
    them (rounded to 4 places), and CLV parameters near CDNOW's with the percentiles of the
    predicted values, so that every tier is reached."""
    from shared.segments.features import purchase_figures
    from shared.training.customers import CLV_PERCENTILES, QUINTILES, SPEND_PERCENTILES, _edges

    figures = [purchase_figures(u.summary, NOW) for u in list(users.values())[::10] if u.summary.last_purchase_at]
    recency = np.array([f.recency_days for f in figures])
    frequency = np.array([f.orders for f in figures], dtype=float)
    spend: dict[str, list[float]] = {}
    for f in figures:
        for currency, amount in f.spend.items():
            spend.setdefault(currency, []).append(amount)
    stats: dict[str, Any] = {
        "recency_days_quintiles": _edges(recency, QUINTILES), "frequency_quintiles": _edges(frequency, QUINTILES),
        "spend_quintiles": {c: _edges(np.array(v), QUINTILES) for c, v in spend.items() if c != "USD"},
        "spend_percentiles": {c: dict(zip(map(str, SPEND_PERCENTILES), _edges(np.array(v), SPEND_PERCENTILES)))
                              for c, v in spend.items() if c != "USD"},
        "clv": {"horizon_days": clv.HORIZON_DAYS, "bg_nbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
                "gamma_gamma": {"EUR": {"p": 6.25, "q": 3.74, "v": 15.44}, "GBP": {"p": 2.1, "q": 1.9, "v": 30.0}}},
    }
    stats["clv"]["value_percentiles"] = {}
    for currency in ("EUR", "GBP"):
        model, gamma = clv.bg_nbd_from(stats), clv.gamma_gamma_from(stats, currency)
        values = [p.value for f in figures if f.currency == currency and (p := clv.predict(
            model, gamma, f.orders, f.recency_days, f.tenure_days, f.monetary)) and p.value is not None]
        stats["clv"]["value_percentiles"][currency] = dict(zip(map(str, CLV_PERCENTILES),
                                                               _edges(np.array(values), CLV_PERCENTILES)))
    return stats


def definitions() -> list[CustomSegment]:
    rules = {
        "Kitchen fans in Germany": {"all": [{"field": "country", "op": "==", "value": "DE"}, {"any": [
            {"field": "purchases_in_category", "category": "kitchen", "days": 90, "op": ">=", "value": 2},
            {"field": "tag", "op": "==", "value": "Champions"}]}]},
        "Recent big spenders": {"all": [{"field": "recency_days", "op": "<=", "value": 30},
                                        {"field": "monetary", "op": ">", "value": 150.5}]},
        "Busy last month": {"any": [{"field": "events_in_days", "days": 30, "op": ">=", "value": 6},
                                    {"field": "spend_in_days", "days": 60, "op": ">", "value": 100}]},
        "Not in France": {"field": "country", "op": "!=", "value": "FR"},
        "App people": {"field": "preferred_channel", "op": "in", "value": ["ios", "android"]},
        "Jazz": {"field": "attribute", "attribute": "interests", "op": "contains", "value": "jazz"},
        "Young": {"field": "attribute", "attribute": "age_band", "op": "in", "value": ["18-24", "25-34"]},
        "Points": {"field": "attribute", "attribute": "loyalty_points", "op": ">=", "value": 250},
        "Bands above": {"field": "attribute", "attribute": "age_band", "op": ">", "value": 3},
        "Repeat": {"all": [{"field": "orders_total", "op": ">=", "value": 3},
                           {"field": "tag", "op": "!=", "value": ["lifecycle:churned", "Lapsing"]}]},
        "Never bought": {"field": "recency_days", "op": "==", "value": 5},
    }
    return [CustomSegment(segment_id=f"custom:{k}", name=name, description="a test" if k % 2 else "", rule=rule,
                          created_at=NOW) for k, (name, rule) in enumerate(rules.items())]


def request_path(data: Generated, user_ids: list[str]) -> dict[str, list[tuple[str, str, str]]]:
    answers = {}
    for user_id in user_ids:
        user = data.users.get(user_id)
        history = data.histories.get(user_id, []) if (user is None or user.consent.profiling.granted) else []
        _, _, tags = segment_customer(user, history, data.categories, data.statistics, data.now, data.definitions)
        answers[user_id] = [(t.family, t.name, t.reason) for t in tags]
    return answers


def test_every_generated_customer_gets_the_request_paths_tags_and_reasons(monkeypatch):
    monkeypatch.setattr(batch, "_one_by_one", None)  # every rule over arrays: no fallback taken
    with cycle_collection_paused():  # 100k customers' objects: no full collections over them while it runs
        data = generated_customers(100_000)
        user_ids = sorted(data.users.keys() | data.histories.keys())
        started = time.process_time()
        everyone = segment_everyone(data.users, data.histories, data.categories, data.statistics, data.now,
                                 data.definitions).rows()
        batch_seconds = time.process_time() - started
        # As the nightly read hands them over: columns, not lists.
        segmented = segment_everyone(data.users, HistoryColumns.of(data.histories), data.categories,
                                     data.statistics, data.now, data.definitions)
        from_columns = segmented.rows()
        expected = request_path(data, user_ids)
        # What the store writes: each segment's members as the rows list them, block by block.
        rows = [(ids_of[name], block.family, name, segmented.user_ids[customer], reason)
                for block, ids_of in ((block, block.segment_ids()) for block in segmented.blocks)
                for customer, name, reason in zip(block.customers.tolist(), block.column(block.names),
                                                  block.column(block.reasons))]
        assert segmented.by_segment() == members_by_segment(rows)

    different = [u for u in user_ids if everyone.get(u, []) != expected[u]]
    assert not different, [(u, expected[u], everyone.get(u)) for u in different[:2]]
    assert from_columns == everyone
    assert len(user_ids) == 100_000 and sum(map(len, expected.values())) > 900_000
    families = {family for tags in expected.values() for family, _, _ in tags}
    assert families == set(FAMILIES)  # every family, and only those GET /segments?family= takes
    names = {name for tags in expected.values() for _, name, _ in tags}
    assert {"Champions", "VIP", "CLV: top 10%", "CLV: low", "Churn risk: high", "Churn risk: low", "Declining",
            "Prospect", "New", "Discount seeker", "Fatigued on sms", "Prefers email",
            "Kitchen fans in Germany"} <= names
    print(f"batch {batch_seconds:.2f} s CPU for {len(user_ids):,} customers")
