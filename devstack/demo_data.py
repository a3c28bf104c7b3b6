"""A generated shop with the structure real shops have, for the demo and for tests.

What the recommender and the segments must find in it:
- item popularity follows a power law (a few items sell a lot), within each category;
- each customer prefers one to three categories, and most of what they touch comes from them;
- the interests a customer declares follow their favourite categories (`INTEREST_CATEGORIES`),
  most of the time: `DECLARED_FROM_FAVOURITES` of them, the rest are noise;
- customers behave as one of five kinds (new, loyal, lapsing, churned, one-off) whose timing
  RFM and lifecycle segments should recover;
- visits are sessions (views, sometimes add-to-cart, sometimes an order of one or more items),
  with a preferred channel per customer, occasional discounts and email or push campaigns;
- more activity in late November and December, and at weekends;
- the messages the shop sent (`ShopData.messages`, message_sent events): a monthly campaign
  (`cmp-<YYYYMM>-<channel>`, the ids the campaign sessions above carry, so those sessions count as
  responses) to each customer subscribed to email or push (everyone who answered one, and
  `SUBSCRIBED` of the others, who opt in to that channel), and for `PROMOTED` of the email
  subscribers a promotion every five days over the last four weeks that nobody answers (fatigue).

Deterministic for a seed; everything is built as the API expects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

CATEGORIES = {
    "kitchen": (["Oak", "Enamel", "Copper", "Stoneware", "Bamboo"], ["chopping board", "mug", "teapot", "pan", "bowl"], 18.0),
    "garden": (["Galvanised", "Terracotta", "Willow", "Cedar"], ["planter", "watering can", "bird feeder", "trowel"], 22.0),
    "toys": (["Wooden", "Knitted", "Magnetic", "Musical"], ["train set", "rabbit", "puzzle", "xylophone"], 15.0),
    "books": (["Illustrated", "Pocket", "Collector's", "Children's"], ["cookbook", "atlas", "field guide", "story book"], 12.0),
    "lighting": (["Glass", "Brass", "Paper", "Rattan"], ["lantern", "pendant lamp", "fairy lights", "desk lamp"], 35.0),
    "textiles": (["Linen", "Wool", "Organic cotton", "Velvet"], ["cushion", "throw", "apron", "tea towel"], 25.0),
    "stationery": (["Recycled", "Leather", "Letterpress", "Marbled"], ["notebook", "card set", "pen", "planner"], 8.0),
    "bath": (["Lavender", "Cedar", "Charcoal", "Oat"], ["soap", "bath salts", "towel", "candle"], 10.0),
    "pets": (["Felt", "Rope", "Ceramic", "Waxed"], ["dog bowl", "cat toy", "lead", "pet bed"], 16.0),
    "outdoor": (["Enamel", "Canvas", "Steel", "Waxed cotton"], ["camping mug", "picnic blanket", "flask", "backpack"], 30.0),
    "christmas": (["Glass", "Felt", "Wooden", "Tin"], ["bauble", "star", "advent calendar", "wreath"], 9.0),
}
COUNTRIES = {"DE": 0.24, "FR": 0.14, "GB": 0.14, "NL": 0.09, "ES": 0.08, "IT": 0.08, "US": 0.07,
             "PL": 0.05, "SE": 0.04, "AT": 0.04, "BE": 0.03}
CITIES = {"DE": ["Berlin", "Hamburg", "Munich"], "FR": ["Paris", "Lyon"], "GB": ["London", "Leeds"],
          "NL": ["Amsterdam", "Utrecht"], "ES": ["Madrid", "Valencia"], "IT": ["Milan", "Rome"]}
CHANNELS = ["web", "ios", "android", "store", "email"]
CHANNEL_WEIGHTS = [0.45, 0.2, 0.2, 0.1, 0.05]
INTERESTS = ["cooking", "gardening", "sustainability", "design", "outdoors", "crafts", "reading", "pets"]
# What each interest leads a customer to buy; sustainability is no category's (always noise).
INTEREST_CATEGORIES = {"cooking": ["kitchen"], "gardening": ["garden"], "outdoors": ["outdoor"], "pets": ["pets"],
                       "reading": ["books"], "design": ["lighting", "textiles"], "crafts": ["stationery", "textiles"],
                       "sustainability": []}
DECLARED_FROM_FAVOURITES = 0.7
AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
HOUSEHOLDS = ["single", "couple", "family", "business"]
MATERIALS = ["wood", "glass", "ceramic", "cotton", "metal", "paper"]
BRANDS = ["Hearth & Co", "Nordlicht", "Maison Verte", "Tallow", "Oakmere", "Kiri"]
ARCHETYPES = {"new": 0.15, "loyal": 0.25, "lapsing": 0.20, "churned": 0.20, "one-off": 0.20}
# Days before `end` in which each kind of customer is active, and visits per active year.
ACTIVE_WINDOW = {"new": (30, 0), "loyal": (365, 0), "lapsing": (330, 75), "churned": (365, 185),
                 "one-off": (365, 0)}
VISITS_PER_YEAR = {"new": 60, "loyal": 40, "lapsing": 24, "churned": 18, "one-off": 1}
FAVOURITE_SHARE = 0.75
# The contact budget's demo: the share of customers who never answered a campaign on a channel but
# are subscribed to it all the same, and of email subscribers who also get the weekly promotion.
SUBSCRIBED = 0.3
PROMOTED = 0.2
MESSAGE_CHANNELS = ("email", "push")


@dataclass
class ShopData:
    items: list[dict[str, Any]]
    users: list[dict[str, Any]]
    events: list[dict[str, Any]]
    archetypes: dict[str, str]
    # The shop's own message_sent events (they name no item), apart from the customers' behaviour.
    messages: list[dict[str, Any]] = field(default_factory=list)

    def all_events(self) -> list[dict[str, Any]]:
        """Behaviour and messages sent, by time (each send before the sessions that answer it)."""
        return sorted(self.events + self.messages, key=lambda e: e["timestamp"])


def generate_shop(seed: int = 7, n_users: int = 2000, n_items: int = 500, days: int = 365,
                  end: datetime | None = None, currency: str = "EUR") -> ShopData:
    rng = np.random.default_rng(seed)
    # Interests come from a stream of their own: every other value is the same as before they
    # followed the favourite categories.
    interest_rng = np.random.default_rng([seed, 7])
    # So do the messages sent (the contact budget, issue 16).
    message_rng = np.random.default_rng([seed, 16])
    messages: list[dict[str, Any]] = []
    end = end or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    catalog = _Catalog(rng, n_items, days, end, currency)
    users, archetypes, events = [], {}, []
    kinds = rng.choice(list(ARCHETYPES), size=n_users, p=list(ARCHETYPES.values()))
    for number, kind in enumerate(kinds, start=1):
        user_id = f"u-{number:05d}"
        archetypes[user_id] = str(kind)
        user = _user(rng, user_id)
        customer = _Customer(rng, user_id, str(kind), catalog, days, end, currency)
        if "interests" in user["attributes"]:
            user["attributes"]["interests"] = _interests(interest_rng, customer.favourites,
                                                         len(user["attributes"]["interests"]))
        users.append(user)
        own = customer.events()
        events += own
        messages += _messages(message_rng, user, own, end)
    events.sort(key=lambda e: e["timestamp"])
    messages.sort(key=lambda e: e["timestamp"])
    return ShopData(catalog.items, users, events, archetypes, messages)


class _Catalog:
    def __init__(self, rng: np.random.Generator, n_items: int, days: int, end: datetime,
                 currency: str) -> None:
        names = list(CATEGORIES)
        self.items: list[dict[str, Any]] = []
        self.by_category: dict[str, np.ndarray] = {}
        # Cumulative weights: a draw is one searchsorted, far cheaper than rng.choice(p=...).
        self.cumulative: dict[str, np.ndarray] = {}
        category_of = rng.choice(len(names), size=n_items, p=_zipf(len(names), 0.6, rng))
        for index in range(n_items):
            category = names[category_of[index]]
            adjectives, nouns, median_price = CATEGORIES[category]
            created = end - timedelta(days=float(rng.uniform(0, days)))
            if rng.random() < 0.04:  # new arrivals, which have no history yet
                created = end - timedelta(days=float(rng.uniform(0, 14)))
            item_id = f"sku-{index + 1:05d}"
            self.items.append({
                "item_id": item_id,
                "title": f"{rng.choice(adjectives)} {rng.choice(nouns)}",
                "category": category,
                "price": round(float(median_price * rng.lognormal(0, 0.45)), 2),
                "currency": currency,
                "in_stock": bool(rng.random() > 0.05),
                "retired": bool(rng.random() < 0.01),
                "created_at": _iso(created),
                "attributes": {"brand": str(rng.choice(BRANDS)), "material": str(rng.choice(MATERIALS)),
                               "recycled": bool(rng.random() < 0.2)},
                "url": f"https://demo.shop-recs.example/items/{item_id}",
                "image_url": f"https://demo.shop-recs.example/images/{item_id}.svg",
            })
        for position, category in enumerate(names):
            members = np.flatnonzero(category_of == position)
            self.by_category[category] = members
            self.cumulative[category] = np.cumsum(_zipf(len(members), 1.1, rng))
        self.overall = np.cumsum(_zipf(n_items, 1.0, rng))
        self.created = np.array([item["created_at"] for item in self.items])

    def pick(self, rng: np.random.Generator, favourites: list[str]) -> int:
        if rng.random() < FAVOURITE_SHARE:
            category = favourites[rng.integers(len(favourites))]
            members = self.by_category[category]
            if len(members):
                return int(members[_draw(self.cumulative[category], rng)])
        return _draw(self.overall, rng)


class _Customer:
    def __init__(self, rng: np.random.Generator, user_id: str, kind: str, catalog: _Catalog,
                 days: int, end: datetime, currency: str) -> None:
        self.rng, self.user_id, self.kind, self.catalog = rng, user_id, kind, catalog
        self.end, self.currency = end, currency
        names = list(CATEGORIES)
        self.favourites = [str(c) for c in rng.choice(names, size=int(rng.integers(1, 4)), replace=False)]
        self.channel = str(rng.choice(CHANNELS, p=CHANNEL_WEIGHTS))
        self.discount_seeker = rng.random() < 0.15
        first, last = ACTIVE_WINDOW[kind]
        self.window = (min(first, days), last)

    def events(self) -> list[dict[str, Any]]:
        first, last = self.window
        if self.kind == "one-off":
            moments = [self._moment(first, last)]
        else:
            visits = max(2, int(self.rng.poisson(VISITS_PER_YEAR[self.kind] * (first - last) / 365)))
            moments = [self._moment(first, last) for _ in range(visits)]
        events: list[dict[str, Any]] = []
        for number, moment in enumerate(sorted(moments)):
            must_buy = self.kind == "one-off" or (number == len(moments) - 1 and self.kind != "new")
            events += self._session(number, moment, must_buy)
        return events

    def _moment(self, first_day: float, last_day: float) -> datetime:
        """A visit time between `first_day` and `last_day` days ago, busier at Christmas and weekends."""
        while True:
            # An hour of margin: a session runs on for up to ~40 minutes after it starts.
            moment = self.end - timedelta(days=float(self.rng.uniform(last_day, first_day)), hours=1)
            season = 2.5 if (moment.month == 12 and moment.day <= 23) or (moment.month == 11 and moment.day >= 20) else 1.0
            weekend = 1.3 if moment.weekday() >= 5 else 1.0
            if self.rng.random() < season * weekend / 3.25:
                return moment.replace(microsecond=0)

    def _session(self, number: int, start: datetime, must_buy: bool) -> list[dict[str, Any]]:
        session_id = f"{self.user_id}-s{number}"
        channel = self.channel if self.rng.random() < 0.8 else str(self.rng.choice(CHANNELS))
        campaign = None
        if self.rng.random() < 0.08:
            channel = str(self.rng.choice(["email", "push"]))
            campaign = f"cmp-{start:%Y%m}-{channel}"
        viewed = [self.catalog.pick(self.rng, self.favourites) for _ in range(int(self.rng.integers(1, 6)))]
        viewed = [i for i in dict.fromkeys(viewed) if self.catalog.created[i] <= _iso(start)]
        if not viewed:
            return []
        events, moment = [], start
        for item in viewed:
            moment += timedelta(seconds=int(self.rng.integers(10, 240)))
            events.append(self._event(f"{session_id}-v{item}", "view", item, moment, session_id, channel, campaign))
        carted = [i for i in viewed if self.rng.random() < 0.35] or ([viewed[0]] if must_buy else [])
        for item in carted:
            moment += timedelta(seconds=int(self.rng.integers(5, 120)))
            events.append(self._event(f"{session_id}-c{item}", "add_to_cart", item, moment, session_id, channel, campaign))
        if carted and (must_buy or self.rng.random() < 0.45):
            moment += timedelta(seconds=int(self.rng.integers(30, 600)))
            order_id = f"o-{session_id}"
            for item in carted:
                events.append(self._purchase(order_id, item, moment, session_id, channel, campaign))
        return events

    def _event(self, event_id: str, event_type: str, item: int, moment: datetime, session_id: str,
               channel: str, campaign: str | None) -> dict[str, Any]:
        event = {"event_id": event_id, "user_id": self.user_id, "item_id": self.catalog.items[item]["item_id"],
                 "event_type": event_type, "timestamp": _iso(moment), "channel": channel,
                 "session_id": session_id}
        if campaign:
            event["campaign_id"] = campaign
        return event

    def _purchase(self, order_id: str, item: int, moment: datetime, session_id: str, channel: str,
                  campaign: str | None) -> dict[str, Any]:
        event = self._event(f"{order_id}-{item}", "purchase", item, moment, session_id, channel, campaign)
        price = self.catalog.items[item]["price"]
        discounted = self.rng.random() < (0.6 if self.discount_seeker else 0.08)
        if discounted:
            price = round(price * float(self.rng.choice([0.7, 0.8, 0.9])), 2)
            event["properties"] = {"discount": True}
        quantity = 1 if self.rng.random() < 0.8 else int(self.rng.integers(2, 6))
        event.update(order_id=order_id, quantity=quantity, price=price, currency=self.currency)
        return event


def _user(rng: np.random.Generator, user_id: str) -> dict[str, Any]:
    country = str(rng.choice(list(COUNTRIES), p=list(COUNTRIES.values())))
    user: dict[str, Any] = {"user_id": user_id, "country": country, "attributes": {}}
    if country in CITIES and rng.random() < 0.6:
        user["city"] = str(rng.choice(CITIES[country]))
    if rng.random() < 0.4:  # customers who answered the sign-up survey
        user["attributes"] = {
            "age_band": str(rng.choice(AGE_BANDS)),
            "household": str(rng.choice(HOUSEHOLDS)),
            "interests": [str(i) for i in rng.choice(INTERESTS, size=int(rng.integers(1, 4)), replace=False)],
        }
    if rng.random() < 0.03:
        user["consent"] = {"personalization": False}
    return user


def _messages(rng: np.random.Generator, user: dict[str, Any], own: list[dict[str, Any]],
              end: datetime) -> list[dict[str, Any]]:
    """The shop's sends to one customer, from their first visit on; subscribers opt in (`user`'s consent)."""
    if not own:
        return []
    answered = {e["campaign_id"].rsplit("-", 1)[1] for e in own if e.get("campaign_id")}
    first = min(datetime.fromisoformat(e["timestamp"]) for e in own)
    subscribed = [c for c in MESSAGE_CHANNELS if c in answered or rng.random() < SUBSCRIBED]
    if not subscribed:
        return []
    user["consent"] = {**user.get("consent", {}), **{c: {"granted": True} for c in subscribed},
                       "source": "web-signup"}
    sends = []
    month = first.replace(day=1, hour=0, minute=0, second=0)
    while month <= end:
        # The first month's message goes out just before their first visit, never before they came.
        moment = max(month, first - timedelta(hours=1))
        sends += [_sent(user["user_id"], f"cmp-{month:%Y%m}-{c}", c, moment) for c in subscribed]
        month = (month + timedelta(days=32)).replace(day=1)
    if "email" in subscribed and rng.random() < PROMOTED:
        for number in range(6):  # every five days over the last four weeks: fatigue, unless answered
            moment = (end - timedelta(days=28 - 5 * number)).replace(hour=9, minute=0, second=0, microsecond=0)
            if moment >= first:
                sends.append(_sent(user["user_id"], f"promo-{moment:%Y%m%d}-email", "email", moment))
    return sends


def _sent(user_id: str, campaign: str, channel: str, moment: datetime) -> dict[str, Any]:
    return {"event_id": f"{user_id}-{campaign}", "user_id": user_id, "event_type": "message_sent",
            "timestamp": _iso(moment), "channel": channel, "campaign_id": campaign}


def _interests(rng: np.random.Generator, favourites: list[str], count: int) -> list[str]:
    """`count` distinct interests: each, with probability `DECLARED_FROM_FAVOURITES`, one that leads
    to a favourite category (while any is left), else any other."""
    related = [i for i in INTERESTS if set(INTEREST_CATEGORIES[i]) & set(favourites)]
    chosen: list[str] = []
    for _ in range(count):
        pool = [i for i in related if i not in chosen]
        if not pool or rng.random() >= DECLARED_FROM_FAVOURITES:
            pool = [i for i in INTERESTS if i not in chosen]
        chosen.append(str(pool[rng.integers(len(pool))]))
    return chosen


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities proportional to 1/rank^exponent, ranks shuffled so ids carry no signal."""
    if n == 0:
        return np.array([])
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    rng.shuffle(weights)
    return weights / weights.sum()


def _draw(cumulative: np.ndarray, rng: np.random.Generator) -> int:
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), len(cumulative) - 1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
