"""The numbers behind a customer's tags, from their profile, history and the catalog."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.history import HistoryEvent
from shared.users import PurchaseSummary, User

DAY = 86_400.0


@dataclass(frozen=True)
class CustomerFeatures:
    purchases: int = 0  # purchase events in the history read
    orders_total: int = 0  # the summary's purchase_count (all time)
    spend: dict[str, float] = field(default_factory=dict)  # all time, per currency (summary)
    currency: str | None = None  # where most of the spend is
    recency_days: float | None = None
    tenure_days: float | None = None  # since the first purchase
    spend_last_90_days: float = 0.0
    spend_previous_90_days: float = 0.0
    category_purchases: dict[str, int] = field(default_factory=dict)
    discounted_purchases: int = 0
    channels: dict[str, int] = field(default_factory=dict)  # all events
    campaign_channels: dict[str, int] = field(default_factory=dict)  # events that carried a campaign
    country: str | None = None
    region: str | None = None
    city: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def monetary(self) -> float:
        return self.spend.get(self.currency, 0.0) if self.currency else 0.0


def customer_features(user: User | None, history: list[HistoryEvent], categories: dict[str, str],
                      now: datetime) -> CustomerFeatures:
    """`user`: the stored customer (None when only events are known); `categories`: item -> category."""
    summary = user.summary if user else PurchaseSummary()
    spend = {currency: float(amount) for currency, amount in summary.spend.items()}
    currency = max(spend, key=spend.get) if spend else None
    now_s = now.timestamp()
    purchases = [e for e in history if e.event_type == "purchase"]
    last = _seconds(summary.last_purchase_at)
    first = _seconds(summary.first_purchase_at)
    recent, previous = 0.0, 0.0
    for event in purchases:
        if event.currency == currency and event.price is not None:
            age = (now_s - event.timestamp) / DAY
            amount = event.price * event.quantity
            recent += amount if age <= 90 else 0.0
            previous += amount if 90 < age <= 180 else 0.0
    return CustomerFeatures(
        purchases=len(purchases),
        orders_total=summary.purchase_count,
        spend=spend, currency=currency,
        recency_days=(now_s - last) / DAY if last else None,
        tenure_days=(now_s - first) / DAY if first else None,
        spend_last_90_days=round(recent, 2), spend_previous_90_days=round(previous, 2),
        category_purchases=dict(Counter(categories[e.item_id] for e in purchases if e.item_id in categories)),
        discounted_purchases=sum(e.discount for e in purchases),
        channels=dict(Counter(e.channel for e in history if e.channel)),
        campaign_channels=dict(Counter(e.channel for e in history if e.campaign_id and e.channel)),
        country=user.country if user else None, region=user.region if user else None,
        city=user.city if user else None, attributes=user.attributes if user else {},
    )


def _seconds(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None
