"""From features and the customer base's statistics to tags, each with the numbers behind it.

One function, `segment`, serves a single customer on request and, in the nightly run, every
customer: both paths give the same answer because they are the same code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.contact import FATIGUE_DAYS, MIN_SENDS_FOR_RATE, ChannelLedger, messages
from shared.segments import clv
from shared.segments.features import CustomerFeatures, customer_features
from shared.segments.rules import CustomSegment, matches
from shared.users import User, may_profile

DEVICE_CHANNELS = ("web", "ios", "android", "store")
# "Responds to <channel>": at least this share of the messages sent answered (MIN_SENDS_FOR_RATE sends at least).
RESPONDS_RATE = 0.2

# The R x F grid (scores 1..5); docs/segments.md draws it.
RFM_GRID = {
    "Champions": lambda r, f: r == 5 and f >= 4,
    "Loyal": lambda r, f: r in (3, 4) and f >= 4,
    "Potential Loyalist": lambda r, f: r >= 4 and f in (2, 3),
    "New": lambda r, f: r == 5 and f == 1,
    "Promising": lambda r, f: r == 4 and f == 1,
    "Need Attention": lambda r, f: r == 3 and f == 3,
    "About To Sleep": lambda r, f: r == 3 and f <= 2,
    "At Risk": lambda r, f: r <= 2 and f in (3, 4),
    "Can't Lose Them": lambda r, f: r <= 2 and f == 5,
    "Hibernating": lambda r, f: r == 2 and f <= 2,
    "Lost": lambda r, f: r == 1 and f <= 2,
}


@dataclass(frozen=True)
class Tag:
    family: str
    name: str
    reason: str

    @property
    def segment_id(self) -> str:
        return f"{self.family}:{re.sub(r'[^a-z0-9]+', '-', self.name.lower()).strip('-')}"

    def as_dict(self) -> dict[str, str]:
        return {"segment_id": self.segment_id, "family": self.family, "name": self.name, "reason": self.reason}


def segment(features: CustomerFeatures, statistics: dict[str, Any], personalized: bool) -> list[Tag]:
    """All tags of one customer. Without consent to profiling, only declared data is used."""
    tags = _geography(features) + _declared(features)
    if personalized:
        tags = (_rfm(features, statistics) + _value(features, statistics) + _lifecycle(features, statistics)
                + _clv(features, statistics)
                + _behaviour(features) + _technographic(features) + _engagement(features) + tags)
    return tags


def score(value: float, edges: list[float], higher_is_better: bool = True) -> int:
    """1..5 from quintile edges. A value exactly on an edge belongs to the quintile below it
    (value <= e1 is the first quintile); recency scores reverse that: fewer days score higher."""
    quintile = 1 + sum(value > edge for edge in edges)
    return quintile if higher_is_better else 6 - quintile


def _money(amount: float, currency: str | None) -> str:
    return f"{amount:,.2f} {currency or ''}".strip()


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _days_ago(days: float) -> str:
    """'today', '1 day ago', '12 days ago': days are whole days (features.py)."""
    return "today" if days < 1 else f"{_plural(int(days), 'day')} ago"


def _orders(f: CustomerFeatures) -> str:
    """'5 orders (37 lines, 420 units)': orders are what frequency counts, lines and units beside."""
    return f"{_plural(f.orders_total, 'order')} ({_plural(f.lines, 'line')}, {_plural(f.units, 'unit')})"


def _rfm(f: CustomerFeatures, stats: dict[str, Any]) -> list[Tag]:
    edges_m = stats.get("spend_quintiles", {}).get(f.currency or "")
    if f.recency_days is None or not edges_m or "recency_days_quintiles" not in stats:
        return []
    r = score(f.recency_days, stats["recency_days_quintiles"], higher_is_better=False)
    fr = score(f.orders_total, stats["frequency_quintiles"])
    m = score(f.monetary, edges_m)
    name = next(name for name, rule in RFM_GRID.items() if rule(r, fr))
    reason = (f"R{r} F{fr} M{m}: {_orders(f)}, the last one {_days_ago(f.recency_days)}, "
              f"spent {_money(f.monetary, f.currency)}")
    return [Tag("rfm", name, reason), Tag("rfm", f"R{r}F{fr}M{m}", reason)]


def _value(f: CustomerFeatures, stats: dict[str, Any]) -> list[Tag]:
    percentiles = stats.get("spend_percentiles", {}).get(f.currency or "")
    if not f.monetary or not percentiles:
        return []
    tiers = [("VIP", "95", "top 5%"), ("High value", "80", "top 20%"), ("Medium value", "50", "top 50%")]
    tier, where = next(((name, label) for name, key, label in tiers if f.monetary > percentiles[key]),
                       ("Low value", "bottom 50%"))
    return [Tag("value", tier, f"spent {_money(f.monetary, f.currency)}: {where} by spend")]


# CLV tiers by the predicted value over the horizon, from the nightly percentiles
# (shared/training/customers.py, CLV_PERCENTILES): a value above the 90th percentile is in the top 10%.
CLV_TIERS = (("CLV: top 10%", "90", "top 10%"), ("CLV: high", "70", "top 30%"), ("CLV: medium", "40", "top 60%"))
# Churn risk from BG/NBD's probability that a repeat customer is still active.
CHURN_HIGH_BELOW = 0.3
CHURN_MEDIUM_BELOW = 0.7


def predict_clv(f: CustomerFeatures, stats: dict[str, Any]) -> clv.Prediction | None:
    """The customer's BG/NBD (and, in their main currency, Gamma-Gamma) prediction over the
    horizon; None without fitted parameters (older statistics, a refused fit) or without a purchase."""
    bg_nbd = clv.bg_nbd_from(stats)
    if bg_nbd is None or f.orders_total < 1 or f.recency_days is None or f.tenure_days is None:
        return None
    horizon = int((stats.get("clv") or {}).get("horizon_days") or clv.HORIZON_DAYS)
    return clv.predict(bg_nbd, clv.gamma_gamma_from(stats, f.currency), f.orders_total, f.recency_days,
                       f.tenure_days, f.monetary if f.currency else None, horizon)


def _percent(share: float) -> str:
    return "below 1%" if share < 0.005 else "over 99%" if share > 0.995 and share < 1 else f"{share:.0%}"


def _clv(f: CustomerFeatures, stats: dict[str, Any]) -> list[Tag]:
    prediction = predict_clv(f, stats)
    if prediction is None:
        return []
    alive = f"{_percent(prediction.alive)} likely still active"
    tags = []
    percentiles = ((stats.get("clv") or {}).get("value_percentiles") or {}).get(f.currency or "")
    if prediction.value is not None and percentiles:
        tier, where = next(((name, label) for name, key, label in CLV_TIERS if prediction.value > percentiles[key]),
                           ("CLV: low", "bottom 40%"))
        tags.append(Tag("value", tier, (
            f"expected {prediction.orders:.1f} orders and {_money(prediction.value, f.currency)} in the next "
            f"{prediction.horizon_days} days (about {_money(prediction.order_value, f.currency)} an order); "
            f"{alive}: {where} by predicted value")))
    if f.orders_total >= 2:  # with one order, BG/NBD cannot tell a customer who left: P(alive) is 1
        risk = ("high" if prediction.alive < CHURN_HIGH_BELOW
                else "medium" if prediction.alive < CHURN_MEDIUM_BELOW else "low")
        tags.append(Tag("lifecycle", f"Churn risk: {risk}", (
            f"{alive}: {_plural(f.orders_total, 'order')} over {max(f.tenure_days - f.recency_days, 0):.0f} days, "
            f"the last one {_days_ago(f.recency_days)}; expected {prediction.orders:.1f} orders in the next "
            f"{prediction.horizon_days} days")))
    return tags


def _lifecycle(f: CustomerFeatures, stats: dict[str, Any]) -> list[Tag]:
    if f.recency_days is None:
        return [Tag("lifecycle", "Prospect", "has not bought yet")] if f.channels else []
    if f.tenure_days is not None and f.tenure_days <= 30:
        stage = ("New", f"first purchase {_days_ago(f.tenure_days)}")
    elif f.recency_days <= 90:
        stage = ("Active", f"last purchase {_days_ago(f.recency_days)}")
    elif f.recency_days <= 180:
        stage = ("Lapsing", f"no purchase for {f.recency_days:.0f} days (91 to 180)")
    else:
        stage = ("Churned", f"no purchase for {f.recency_days:.0f} days (over 180)")
    tags = [Tag("lifecycle", *stage)]
    high = stats.get("spend_percentiles", {}).get(f.currency or "", {}).get("80")
    if high is not None and f.monetary > high and f.spend_last_90_days < 0.5 * f.spend_previous_90_days:
        tags.append(Tag("lifecycle", "Declining", (
            f"top 20% by spend, but {_money(f.spend_last_90_days, f.currency)} in the last 90 days against "
            f"{_money(f.spend_previous_90_days, f.currency)} in the 90 before")))
    return tags


def _behaviour(f: CustomerFeatures) -> list[Tag]:
    total = sum(f.category_purchases.values())
    tags = [Tag("behaviour", f"Likes {category}", f"{count} of {total} purchases in {category}")
            # Ties by name: the request and the nightly run read history in different orders.
            for category, count in sorted(f.category_purchases.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
            if total and count / total >= 0.25]
    if f.purchases >= 3 and f.discounted_purchases / f.purchases >= 0.5:
        tags.append(Tag("behaviour", "Discount seeker",
                        f"{f.discounted_purchases} of {f.purchases} purchases at a discount"))
    return tags


def _technographic(f: CustomerFeatures) -> list[Tag]:
    devices = {c: n for c, n in f.channels.items() if c in DEVICE_CHANNELS}
    if not devices:
        return []
    channel = max(devices, key=devices.get)
    return [Tag("technographic", f"Prefers {channel}",
                f"{devices[channel]} of {sum(devices.values())} visits on {channel}")]


def _answered(channel: str, ledger: ChannelLedger) -> str:
    """'3 of 10 emails answered (30%)'."""
    return f"{ledger.responses:,} of {messages(ledger.sends, channel)} answered ({ledger.response_rate:.0%})"


def _engagement(f: CustomerFeatures) -> list[Tag]:
    """Measured from the contact ledger (shared/contact.py): response rates per contact channel over
    the recorded sends, and fatigue (many recent sends, no response)."""
    measured = {channel: ledger for channel, ledger in f.contacts.channels().items()
                if ledger.sends >= MIN_SENDS_FOR_RATE}
    tags = [Tag("engagement", f"Responds to {channel}", _answered(channel, ledger))
            for channel, ledger in measured.items() if (ledger.response_rate or 0) >= RESPONDS_RATE]
    answered = {channel: ledger for channel, ledger in measured.items() if ledger.responses}
    if answered:
        # Ties by name: the same answer whatever order the channels come in.
        best = min(answered, key=lambda channel: (-(answered[channel].response_rate or 0), channel))
        others = "" if len(measured) == 1 else f", the best of {', '.join(sorted(measured))}"
        tags.append(Tag("engagement", f"Prefers {best}", f"{_answered(best, answered[best])}{others}"))
    tags += [Tag("engagement", f"Fatigued on {channel}",
                 f"{messages(sent, channel)} in {FATIGUE_DAYS} days, no response")
             for channel, sent in sorted(f.fatigue.items())]
    return tags


def _geography(f: CustomerFeatures) -> list[Tag]:
    return [Tag("geography", f"{kind.title()}: {value}", f"{kind} {value} in the profile")
            for kind, value in (("country", f.country), ("region", f.region), ("city", f.city)) if value]


def _declared(f: CustomerFeatures) -> list[Tag]:
    tags = []
    for key, family in (("age_band", "demographic"), ("household", "demographic"), ("company_type", "demographic")):
        if isinstance(f.attributes.get(key), str):
            tags.append(Tag(family, f"{key.replace('_', ' ').title()}: {f.attributes[key]}", f"declared {key}"))
    interests = f.attributes.get("interests")
    for interest in interests if isinstance(interests, list) else []:
        tags.append(Tag("psychographic", f"Interested in {interest}", "declared interest"))
    for key, value in sorted(f.attributes.items()):
        if key.startswith("prefers_") and value is True:
            tags.append(Tag("psychographic", f"Cares about {key.removeprefix('prefers_').replace('_', ' ')}",
                            f"declared preference {key}"))
    return tags


def segment_customer(user: User | None, history: list, categories: dict[str, str],
                     statistics: dict[str, Any], now: Any, custom: Sequence[CustomSegment] = ()
                     ) -> tuple[bool, CustomerFeatures, list[Tag]]:
    """The one entry point both paths use: a request for one customer and the nightly run for all.

    `user` is the stored customer (None when only events are known); `history` must be empty
    for a customer who objected to profiling, whose history is not to be read. Declared data
    (country, age band, declared interests) are the customer's own statements, not an evaluation
    of their behaviour: their tags stay whatever the consent.
    """
    personalized = may_profile(user)
    features = customer_features(user, history if personalized else [], categories, now)
    tags = segment(features, statistics, personalized)
    if personalized and custom:  # custom rules read behaviour, so they follow profiling consent like the built-in families
        known = {t.name for t in tags} | {t.segment_id for t in tags}
        tags += [Tag("custom", definition.name, f"matches the rule of {definition.name}"
                     + (f": {definition.description}" if definition.description else ""))
                 for definition in custom if matches(definition.rule, features, history, categories, known, now)]
    return personalized, features, tags
