"""What a recommendation earned: its id, and purchases credited to it.

Every answer that lists items carries a recommendation id that says where it came from: the
surface (recommendations, similar, popular, ...), the strategy and model version that ranked it,
the experiment and variant if one ran, and when it was served. The id is self-describing and
signed (HMAC-SHA256, truncated), so nothing is written per answer (serving stays a read) and a
client cannot credit a strategy it was not shown: a forged or altered id is ignored.

Clients send `impression` events (the items shown) and `click` events (the item opened), each with
the id. A purchase of an item is credited to the newest click on that item by the same customer
within the window before it (ATTRIBUTION_WINDOW, 7 days), or with basis "impression" to the newest
impression or click that showed it. One purchase is credited to one recommendation at most.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

ATTRIBUTION_WINDOW = 7 * 86_400  # seconds after a click (or impression) in which a purchase is credited
BASES = ("click", "impression")
SIGNATURE_BYTES = 8  # 64 bits: forging one is out of reach, and ids stay short
PREFIX = "r1"


def signing_key(secret: bytes) -> bytes:
    """The key recommendation ids are signed with, derived from the service's secret (the visitor
    token key): a key of its own, so a visitor token's signature can never pass for an id's."""
    return hmac.new(secret, b"shop-recs recommendation ids", hashlib.sha256).digest()


@dataclass(frozen=True)
class Served:
    """What a recommendation id says about the answer it was given with."""

    surface: str
    strategy: str
    version: str | None
    experiment: str | None
    variant: str | None
    served_at: int  # seconds since the epoch; 0 for an answer shared by everyone (cached), whose id names no moment


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def recommendation_id(served: Served, key: bytes, nonce: str) -> str:
    """`nonce` tells two answers of the same second apart (a request id)."""
    body = _b64(json.dumps([served.surface, served.strategy, served.version, served.experiment, served.variant,
                            served.served_at, nonce], separators=(",", ":")).encode())
    return f"{PREFIX}.{body}.{_b64(_signature(key, body))}"


def _signature(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES]


def decode(value: str, key: bytes) -> Served | None:
    """The id's contents, or None for anything that is not an id this service signed."""
    try:
        prefix, body, signature = value.split(".")
        expected = _signature(key, body)
        if prefix != PREFIX or not hmac.compare_digest(_unb64(signature), expected):
            return None
        surface, strategy, version, experiment, variant, served_at, _ = json.loads(_unb64(body))
        return Served(str(surface), str(strategy), version, experiment, variant, int(served_at))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Touch:
    """An impression or click of one item from one recommendation."""

    user_id: str
    item_id: str
    kind: str  # "impression" or "click"
    at: float
    recommendation: str  # the id as the client sent it


@dataclass(frozen=True)
class Purchase:
    user_id: str
    item_id: str
    at: float
    revenue: float
    order_id: str | None = None


@dataclass(frozen=True)
class Credit:
    purchase: Purchase
    recommendation: str
    served: Served


def credit(purchase: Purchase, touches: Iterable[Touch], key: bytes, window: float = ATTRIBUTION_WINDOW,
           basis: str = "click") -> Credit | None:
    """The recommendation this purchase is credited to, if any: the newest qualifying touch of
    the same customer and item in the window before the purchase, whose id is genuine."""
    kinds = ("click",) if basis == "click" else BASES
    best: Credit | None = None
    best_at = 0.0
    for touch in touches:
        if (touch.user_id == purchase.user_id and touch.item_id == purchase.item_id and touch.kind in kinds
                and purchase.at - window <= touch.at <= purchase.at and (best is None or touch.at > best_at)):
            served = decode(touch.recommendation, key)
            if served is not None:
                best, best_at = Credit(purchase, touch.recommendation, served), touch.at
    return best


@dataclass
class DailyLine:
    """One day of one strategy, version and variant."""

    day: str
    strategy: str
    version: str | None
    experiment: str | None
    variant: str | None
    impressions: int = 0  # answers shown (an impression event per answer)
    clicks: int = 0
    purchases: int = 0  # credited purchase events
    revenue: float = 0.0

    @property
    def click_through(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def conversion(self) -> float:
        """Credited purchases per click."""
        return self.purchases / self.clicks if self.clicks else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "revenue": round(self.revenue, 2), "click_through": round(self.click_through, 6),
                "conversion": round(self.conversion, 6)}


def day_of(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d")


def daily_report(touches: Iterable[Touch], credits: Iterable[Credit], key: bytes) -> list[DailyLine]:
    """Impressions and clicks by the day they happened, credited purchases and revenue by the day
    of the purchase, per strategy, version and variant. An impression counts once per answer and
    customer, however many items it showed (a cached answer's id is shared by everyone who saw it)."""
    lines: dict[tuple[object, ...], DailyLine] = {}
    seen_impressions: set[tuple[str, str]] = set()
    decoded: dict[str, Served | None] = {}  # an impression's id is on each item it showed: checked once

    def line(day: str, served: Served) -> DailyLine:
        key_ = (day, served.strategy, served.version, served.experiment, served.variant)
        if key_ not in lines:
            lines[key_] = DailyLine(*key_)  # type: ignore[arg-type]
        return lines[key_]

    for touch in touches:
        if touch.recommendation not in decoded:
            decoded[touch.recommendation] = decode(touch.recommendation, key)
        served = decoded[touch.recommendation]
        if served is None:
            continue
        if touch.kind == "click":
            line(day_of(touch.at), served).clicks += 1
        elif (touch.recommendation, touch.user_id) not in seen_impressions:
            seen_impressions.add((touch.recommendation, touch.user_id))
            line(day_of(touch.at), served).impressions += 1
    for found in credits:
        target = line(day_of(found.purchase.at), found.served)
        target.purchases += 1
        target.revenue += found.purchase.revenue
    return sorted(lines.values(), key=lambda l: (l.day, l.strategy, l.version or "", l.variant or ""))
