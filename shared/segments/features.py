"""The numbers behind a customer's tags, from their profile, history and the catalog."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.contact import ContactLedger, fatigue_edge, sends_while_fatigued
from shared.history import HistoryEvent
from shared.users import PurchaseSummary, User

DAY = 86_400.0
# Spend in the last SPEND_WINDOW_DAYS days against the same length of time before (Declining).
SPEND_WINDOW_DAYS = 90


@dataclass(frozen=True)
class CustomerFeatures:
    purchases: int = 0  # purchase events in the history read
    orders_total: int = 0  # distinct orders, all time (the summary's orders)
    lines: int = 0  # purchase lines, all time
    units: int = 0  # units bought, all time
    spend: dict[str, float] = field(default_factory=dict)  # all time, per currency, net of returns (summary)
    currency: str | None = None  # where most of the spend is
    recency_days: float | None = None
    tenure_days: float | None = None  # since the first purchase
    spend_last_90_days: float = 0.0
    spend_previous_90_days: float = 0.0
    category_purchases: dict[str, int] = field(default_factory=dict)
    discounted_purchases: int = 0
    channels: dict[str, int] = field(default_factory=dict)  # all events
    # The stored contact ledger (sends and answered campaigns per contact channel, kept at ingest), and
    # the channels the customer is fatigued on now, each with its sends in the last FATIGUE_DAYS days.
    contacts: ContactLedger = field(default_factory=ContactLedger)
    fatigue: dict[str, int] = field(default_factory=dict)
    country: str | None = None
    region: str | None = None
    city: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def monetary(self) -> float:
        return self.spend.get(self.currency, 0.0) if self.currency else 0.0


@dataclass(frozen=True)
class PurchaseFigures:
    """What RFM, value and CLV read of a purchase summary, the same for one customer's tags and
    for the customer-base statistics of the nightly run (shared/training/customers.py)."""

    orders: int
    lines: int
    units: int
    spend: dict[str, float]  # per currency, net of returns
    currency: str | None  # where most of the spend is
    recency_days: float | None  # since the last purchase
    tenure_days: float | None  # since the first purchase

    @property
    def monetary(self) -> float:
        return self.spend.get(self.currency, 0.0) if self.currency else 0.0


def purchase_figures(summary: PurchaseSummary, now: datetime) -> PurchaseFigures:
    spend = {currency: float(amount) for currency, amount in summary.spend.items()}
    last, first, now_s = seconds(summary.last_purchase_at), seconds(summary.first_purchase_at), now.timestamp()
    return PurchaseFigures(
        orders=summary.orders, lines=summary.lines, units=summary.units, spend=spend,
        currency=main_currency(spend),
        # Whole days: a tag computed on request seconds after the nightly run lands on the same
        # side of every threshold (quintile edges, CLV tiers) as the nightly one, until a day turns.
        recency_days=float((now_s - last) // DAY) if last is not None else None,
        tenure_days=float((now_s - first) // DAY) if first is not None else None,
    )


def main_currency(spend: dict[str, float]) -> str | None:
    """Where most of the spend is (the first of equals)."""
    return max(spend, key=spend.get) if spend else None


def customer_features(user: User | None, history: list[HistoryEvent], categories: dict[str, str],
                      now: datetime) -> CustomerFeatures:
    """`user`: the stored customer (None when only events are known); `categories`: item -> category."""
    figures = purchase_figures(user.summary if user else PurchaseSummary(), now)
    contacts = user.contacts if user else ContactLedger()
    currency = figures.currency
    now_s = now.timestamp()
    purchases = [e for e in history if e.event_type == "purchase"]
    recent, previous = 0.0, 0.0  # net of returns, like the summary's spend
    for event in history:
        if event.event_type in ("purchase", "return") and event.currency == currency and event.price is not None:
            age = (now_s - event.timestamp) / DAY
            amount = event.price * event.quantity * (1 if event.event_type == "purchase" else -1)
            recent += amount if age <= SPEND_WINDOW_DAYS else 0.0
            previous += amount if SPEND_WINDOW_DAYS < age <= 2 * SPEND_WINDOW_DAYS else 0.0
    return CustomerFeatures(
        purchases=len(purchases),
        orders_total=figures.orders, lines=figures.lines, units=figures.units,
        spend=figures.spend, currency=currency,
        recency_days=figures.recency_days, tenure_days=figures.tenure_days,
        spend_last_90_days=round(recent, 2), spend_previous_90_days=round(previous, 2),
        category_purchases=dict(Counter(categories[e.item_id] for e in purchases if e.item_id in categories)),
        discounted_purchases=sum(e.discount for e in purchases),
        channels=dict(Counter(e.channel for e in history if e.channel)),
        contacts=contacts, fatigue=contact_fatigue(contacts, now),
        country=user.country if user else None, region=user.region if user else None,
        city=user.city if user else None, attributes=user.attributes if user else {},
    )


def contact_fatigue(contacts: ContactLedger, now: datetime) -> dict[str, int]:
    """The channels the customer is fatigued on now, each with its sends in the last FATIGUE_DAYS days."""
    edge = fatigue_edge(now)
    return {channel: sent for channel, ledger in contacts.channels().items()
            if (sent := sends_while_fatigued(ledger, edge))}


def seconds(stamp: str | None) -> float | None:
    """A stored time (ISO 8601) in seconds since the epoch."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None
