"""From features and the customer base's statistics to tags, each with the numbers behind it.

One function, `segment`, serves a single customer on request and, in the nightly run, every
customer: both paths give the same answer because they are the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.contact import FATIGUE_DAYS, MIN_SENDS_FOR_RATE, ChannelLedger, messages
from shared.segments import clv
from shared.segments.families import segment_id_for
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
    # A custom segment's id is the one it was stored under, which its name made when it was defined.
    defined_id: str | None = None

    @property
    def segment_id(self) -> str:
        return self.defined_id or segment_id_for(self.family, self.name)

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
    return orders_text(f.orders_total, f.lines, f.units)


def orders_text(orders: int, lines: int, units: int) -> str:
    """'5 orders (37 lines, 420 units)': orders are what frequency counts, lines and units beside."""
    return f"{_plural(orders, 'order')} ({_plural(lines, 'line')}, {_plural(units, 'unit')})"


def rfm_name(r: int, fr: int) -> str:
    return next(name for name, rule in RFM_GRID.items() if rule(r, fr))


def rfm_reason(r: int, fr: int, m: int, orders: str, days_ago: str, spent: str) -> str:
    """The RFM tags' reason from its parts: `orders_text`, `_days_ago` and `_money` of the customer."""
    return f"R{r} F{fr} M{m}: {orders}, the last one {days_ago}, spent {spent}"


def _rfm(f: CustomerFeatures, stats: dict[str, Any]) -> list[Tag]:
    edges_m = stats.get("spend_quintiles", {}).get(f.currency or "")
    if f.recency_days is None or not edges_m or "recency_days_quintiles" not in stats:
        return []
    r = score(f.recency_days, stats["recency_days_quintiles"], higher_is_better=False)
    fr = score(f.orders_total, stats["frequency_quintiles"])
    m = score(f.monetary, edges_m)
    reason = rfm_reason(r, fr, m, _orders(f), _days_ago(f.recency_days), _money(f.monetary, f.currency))
    return [Tag("rfm", rfm_name(r, fr), reason), Tag("rfm", f"R{r}F{fr}M{m}", reason)]


def _value(f: CustomerFeatures, stats: dict[str, Any]) -> list[Tag]:
    percentiles = stats.get("spend_percentiles", {}).get(f.currency or "")
    if not f.monetary or not percentiles:
        return []
    tier, where = next(((name, label) for name, key, label in VALUE_TIERS if f.monetary > percentiles[key]),
                       VALUE_LOWEST)
    return [Tag("value", tier, value_reason(_money(f.monetary, f.currency), where))]


# Spend tiers by the spend percentiles (shared/training/customers.py, SPEND_PERCENTILES), the first that applies.
VALUE_TIERS = (("VIP", "95", "top 5%"), ("High value", "80", "top 20%"), ("Medium value", "50", "top 50%"))
VALUE_LOWEST = ("Low value", "bottom 50%")


def value_reason(spent: str, where: str) -> str:
    return f"spent {spent}: {where} by spend"


# CLV tiers by the predicted value over the horizon, from the nightly percentiles
# (shared/training/customers.py, CLV_PERCENTILES): a value above the 90th percentile is in the top 10%.
CLV_TIERS = (("CLV: top 10%", "90", "top 10%"), ("CLV: high", "70", "top 30%"), ("CLV: medium", "40", "top 60%"))
CLV_LOWEST = ("CLV: low", "bottom 40%")
# Churn risk from BG/NBD's probability that a repeat customer is still active.
CHURN_HIGH_BELOW = 0.3
CHURN_MEDIUM_BELOW = 0.7


def predict_clv(f: CustomerFeatures, stats: dict[str, Any]) -> clv.Prediction | None:
    """The customer's BG/NBD (and, in their main currency, Gamma-Gamma) prediction over the
    horizon; None without fitted parameters (older statistics, a refused fit) or without a purchase."""
    bg_nbd = clv.bg_nbd_from(stats)
    if bg_nbd is None or f.orders_total < 1 or f.recency_days is None or f.tenure_days is None:
        return None
    return clv.predict(bg_nbd, clv.gamma_gamma_from(stats, f.currency), f.orders_total, f.recency_days,
                       f.tenure_days, f.monetary if f.currency else None, clv_horizon(stats))


def clv_horizon(stats: dict[str, Any]) -> int:
    return int((stats.get("clv") or {}).get("horizon_days") or clv.HORIZON_DAYS)


def clv_percentiles(stats: dict[str, Any], currency: str | None) -> dict[str, float] | None:
    """The percentiles of predicted value that the CLV tiers compare with, in `currency`."""
    return ((stats.get("clv") or {}).get("value_percentiles") or {}).get(currency or "")


def clv_reason(orders: float, value: str, horizon: int, order_value: str, alive: str, where: str) -> str:
    """`value`, `order_value`: `_money` texts; `alive`: `alive_text`."""
    return (f"expected {orders:.1f} orders and {value} in the next {horizon} days (about {order_value} an order); "
            f"{alive}: {where} by predicted value")


def alive_text(alive: float) -> str:
    return f"{_percent(alive)} likely still active"


def churn_risk(alive: float) -> str:
    return "high" if alive < CHURN_HIGH_BELOW else "medium" if alive < CHURN_MEDIUM_BELOW else "low"


def churn_reason(alive: str, orders_total: int, tenure_days: float, recency_days: float, orders: float,
                 horizon: int) -> str:
    return (f"{alive}: {_plural(orders_total, 'order')} over {max(tenure_days - recency_days, 0):.0f} days, "
            f"the last one {_days_ago(recency_days)}; expected {orders:.1f} orders in the next {horizon} days")


def _percent(share: float) -> str:
    return "below 1%" if share < 0.005 else "over 99%" if share > 0.995 and share < 1 else f"{share:.0%}"


def _clv(f: CustomerFeatures, stats: dict[str, Any]) -> list[Tag]:
    prediction = predict_clv(f, stats)
    if prediction is None:
        return []
    alive = alive_text(prediction.alive)
    tags = []
    percentiles = clv_percentiles(stats, f.currency)
    if prediction.value is not None and percentiles:
        tier, where = next(((name, label) for name, key, label in CLV_TIERS if prediction.value > percentiles[key]),
                           CLV_LOWEST)
        tags.append(Tag("value", tier, clv_reason(
            prediction.orders, _money(prediction.value, f.currency), prediction.horizon_days,
            _money(prediction.order_value, f.currency), alive, where)))
    if f.orders_total >= 2:  # with one order, BG/NBD cannot tell a customer who left: P(alive) is 1
        tags.append(Tag("lifecycle", f"Churn risk: {churn_risk(prediction.alive)}", churn_reason(
            alive, f.orders_total, f.tenure_days, f.recency_days, prediction.orders, prediction.horizon_days)))
    return tags


def _lifecycle(f: CustomerFeatures, stats: dict[str, Any]) -> list[Tag]:
    if f.recency_days is None:
        return [Tag("lifecycle", *PROSPECT)] if f.channels else []
    tags = [Tag("lifecycle", *lifecycle_stage(f.recency_days, f.tenure_days))]
    high = declining_edge(stats, f.currency)
    if high is not None and f.monetary > high and f.spend_last_90_days < 0.5 * f.spend_previous_90_days:
        tags.append(Tag("lifecycle", "Declining", declining_reason(f.spend_last_90_days, f.spend_previous_90_days,
                                                                   f.currency)))
    return tags


PROSPECT = ("Prospect", "has not bought yet")
NEW_DAYS, ACTIVE_DAYS, LAPSING_DAYS = 30, 90, 180


def lifecycle_stage(recency_days: float, tenure_days: float | None) -> tuple[str, str]:
    """A buyer's stage and its reason."""
    if tenure_days is not None and tenure_days <= NEW_DAYS:
        return "New", f"first purchase {_days_ago(tenure_days)}"
    if recency_days <= ACTIVE_DAYS:
        return "Active", f"last purchase {_days_ago(recency_days)}"
    if recency_days <= LAPSING_DAYS:
        return "Lapsing", f"no purchase for {recency_days:.0f} days (91 to 180)"
    return "Churned", f"no purchase for {recency_days:.0f} days (over 180)"


def declining_edge(stats: dict[str, Any], currency: str | None) -> float | None:
    """The spend above which a customer can be Declining (the top 20%)."""
    return stats.get("spend_percentiles", {}).get(currency or "", {}).get("80")


def declining_reason(last_90_days: float, previous_90_days: float, currency: str | None) -> str:
    return (f"top 20% by spend, but {_money(last_90_days, currency)} in the last 90 days against "
            f"{_money(previous_90_days, currency)} in the 90 before")


def _behaviour(f: CustomerFeatures) -> list[Tag]:
    total = sum(f.category_purchases.values())
    tags = [likes_tag(category, count, total)
            # Ties by name: the request and the nightly run read history in different orders.
            for category, count in sorted(f.category_purchases.items(), key=lambda kv: (-kv[1], kv[0]))[:LIKES_AT_MOST]
            if total and count / total >= LIKES_SHARE]
    if f.purchases >= DISCOUNT_PURCHASES and f.discounted_purchases / f.purchases >= DISCOUNT_SHARE:
        tags.append(discount_tag(f.discounted_purchases, f.purchases))
    return tags


# "Likes <category>": at most LIKES_AT_MOST categories, each with LIKES_SHARE of the purchases;
# "Discount seeker": at least DISCOUNT_PURCHASES purchases, DISCOUNT_SHARE of them discounted.
LIKES_AT_MOST, LIKES_SHARE = 2, 0.25
DISCOUNT_PURCHASES, DISCOUNT_SHARE = 3, 0.5


def likes_tag(category: str, count: int, total: int) -> Tag:
    return Tag("behaviour", f"Likes {category}", f"{count} of {total} purchases in {category}")


def discount_tag(discounted: int, purchases: int) -> Tag:
    return Tag("behaviour", "Discount seeker", f"{discounted} of {purchases} purchases at a discount")


def _technographic(f: CustomerFeatures) -> list[Tag]:
    devices = {c: n for c, n in f.channels.items() if c in DEVICE_CHANNELS}
    if not devices:
        return []
    channel = max(devices, key=devices.get)
    return [device_tag(channel, devices[channel], sum(devices.values()))]


def device_tag(channel: str, visits: int, total: int) -> Tag:
    return Tag("technographic", f"Prefers {channel}", f"{visits} of {total} visits on {channel}")


def _answered(channel: str, ledger: ChannelLedger) -> str:
    """'3 of 10 emails answered (30%)'."""
    return f"{ledger.responses:,} of {messages(ledger.sends, channel)} answered ({ledger.response_rate:.0%})"


def _engagement(f: CustomerFeatures) -> list[Tag]:
    """Measured from the contact ledger (shared/contact.py): response rates per contact channel over
    the recorded sends, and fatigue (many recent sends, no response)."""
    return engagement_tags(f.contacts.channels(), f.fatigue)


def engagement_tags(channels: dict[str, ChannelLedger], fatigue: dict[str, int]) -> list[Tag]:
    """From each contact channel's ledger (only sends and responses are read) and the fatigue."""
    measured = {channel: ledger for channel, ledger in channels.items() if ledger.sends >= MIN_SENDS_FOR_RATE}
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
             for channel, sent in sorted(fatigue.items())]
    return tags


def _geography(f: CustomerFeatures) -> list[Tag]:
    return [geography_tag(kind, value)
            for kind, value in (("country", f.country), ("region", f.region), ("city", f.city)) if value]


def geography_tag(kind: str, value: str) -> Tag:
    return Tag("geography", f"{kind.title()}: {value}", f"{kind} {value} in the profile")


# Declared attributes told as demographic tags when they are text, in this order.
DECLARED_KEYS = (("age_band", "demographic"), ("household", "demographic"), ("company_type", "demographic"))


def _declared(f: CustomerFeatures) -> list[Tag]:
    return declared_tags(f.attributes)


def declared_tags(attributes: dict[str, Any]) -> list[Tag]:
    tags = []
    for key, family in DECLARED_KEYS:
        if isinstance(attributes.get(key), str):
            tags.append(declared_tag(key, family, attributes[key]))
    interests = attributes.get("interests")
    for interest in interests if isinstance(interests, list) else []:
        tags.append(interest_tag(interest))
    for key, value in sorted(attributes.items()):
        if key.startswith("prefers_") and value is True:
            tags.append(preference_tag(key))
    return tags


def declared_tag(key: str, family: str, value: str) -> Tag:
    return Tag(family, f"{key.replace('_', ' ').title()}: {value}", f"declared {key}")


def interest_tag(interest: Any) -> Tag:
    return Tag("psychographic", f"Interested in {interest}", "declared interest")


def preference_tag(key: str) -> Tag:
    return Tag("psychographic", f"Cares about {key.removeprefix('prefers_').replace('_', ' ')}",
               f"declared preference {key}")


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
        tags += [custom_tag(definition)
                 for definition in custom if matches(definition.rule, features, history, categories, known, now)]
    return personalized, features, tags


def custom_tag(definition: CustomSegment) -> Tag:
    return Tag("custom", definition.name, f"matches the rule of {definition.name}"
               + (f": {definition.description}" if definition.description else ""), definition.segment_id)
