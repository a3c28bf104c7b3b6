"""Triggers: what the service tells other systems on its bus, and the rules that decide it.

Events go to Amazon EventBridge (a local JSON Lines file on the local stack; shared/storage/bus.py)
with the source "shop-recs" and one detail-type per model below. docs/triggers.md has their
schemas (generated from these models), an example rule, and the decisions.

- Item-level events (`Item Back In Stock`, `Item Price Dropped`) are decided at catalog upsert
  from the stored row before and after the put (`item_change`).
- Per-customer events are decided in the nightly run from what it has loaded anyway:
  `segment_events` (a tracked segment entered or left between two runs), `viewed_item_events`
  (an item the customer viewed or carted is back in stock or cheaper) and `interest_events`
  (new items matching the customer's declared interests).

Pure rules, no storage: every input is a plain value or a domain type. Details carry ids, times and
a reason in words, never a name, an address or any other personal data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.consent import CONTACT_CHANNELS
from shared.events import CALENDAR_END, format_timestamp, minor_units
from shared.history import HistoryEvent, customers_with
from shared.training import interests
from shared.users import User, may_profile

SOURCE = "shop-recs"
SCHEMA_VERSION = 1
# The segments whose changes are published (shared/segments/tags.py names them): the declining high
# spender (lifecycle "Declining": top 20% by spend, spending less than half of the 90 days before),
# and RFM's "At Risk" and "Can't Lose Them".
TRACKED_SEGMENTS = ("lifecycle:declining", "rfm:at-risk", "rfm:can-t-lose-them")
# A view or a cart counts for a back-in-stock or cheaper note for this long.
SEEN_WITHIN = timedelta(days=30)
# At most this many viewed-item events per customer and run, the most recently seen items first.
MAX_VIEWED_ITEMS_PER_CUSTOMER = 5
# At most this many new items in a customer's `Item Matches Interests` event, the newest first.
MAX_MATCHED_ITEMS = 5
# Restock and price-drop marks on an item row are carried over by later upserts for this long: the
# nightly run that follows needs them; a mark older than this has been read by several runs.
MARKS_KEPT = timedelta(days=7)
SEEN_EVENTS = ("view", "add_to_cart")


class DetailType(StrEnum):
    SEGMENT_ENTERED = "Segment Entered"
    SEGMENT_LEFT = "Segment Left"
    ITEM_BACK_IN_STOCK = "Item Back In Stock"
    ITEM_PRICE_DROPPED = "Item Price Dropped"
    VIEWED_ITEM_BACK_IN_STOCK = "Viewed Item Back In Stock"
    VIEWED_ITEM_PRICE_DROPPED = "Viewed Item Price Dropped"
    ITEM_MATCHES_INTERESTS = "Item Matches Interests"


class Detail(BaseModel):
    """What every detail carries."""

    model_config = ConfigDict(frozen=True)  # no additionalProperties: fields are added in a version
    detail_type: ClassVar[DetailType]

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Changes only when a field changes "
                                                                           "meaning or goes away; new fields keep it")
    occurred_at: str = Field(description="When the change was seen (UTC, ISO 8601): the upsert, or the nightly run")
    reason: str = Field(description="Why, in words, for a person reading the event")


class CustomerDetail(Detail):
    user_id: str
    channels: list[str] = Field(description="The contact channels the customer has opted in to (email, sms, "
                                            "push), for a rule to route on; the campaign side checks again")


class SegmentChange(CustomerDetail):
    segment_id: str = Field(description="lifecycle:declining, rfm:at-risk or rfm:can-t-lose-them")
    segment_name: str
    run: str = Field(description="The nightly run that saw the change")
    previous_run: str = Field(description="The run before it, compared with")


class SegmentEntered(SegmentChange):
    detail_type: ClassVar[DetailType] = DetailType.SEGMENT_ENTERED


class SegmentLeft(SegmentChange):
    detail_type: ClassVar[DetailType] = DetailType.SEGMENT_LEFT


class ItemBackInStock(Detail):
    detail_type: ClassVar[DetailType] = DetailType.ITEM_BACK_IN_STOCK

    item_id: str
    category: str
    price: str | None = Field(default=None, description="Decimal as text")
    currency: str | None = None


class ItemPriceDropped(Detail):
    detail_type: ClassVar[DetailType] = DetailType.ITEM_PRICE_DROPPED

    item_id: str
    category: str
    previous_price: str = Field(description="Decimal as text")
    price: str = Field(description="Decimal as text")
    currency: str
    drop_percent: float = Field(description="How much cheaper, in percent of the previous price (one decimal)")


class ViewedItem(CustomerDetail):
    item_id: str
    last_seen_at: str = Field(description="The customer's last view or cart of the item")
    seen_as: str = Field(description="view or add_to_cart: the last of them")


class ViewedItemBackInStock(ViewedItem):
    detail_type: ClassVar[DetailType] = DetailType.VIEWED_ITEM_BACK_IN_STOCK

    restocked_at: str


class ViewedItemPriceDropped(ViewedItem):
    detail_type: ClassVar[DetailType] = DetailType.VIEWED_ITEM_PRICE_DROPPED

    price_dropped_at: str
    previous_price: str = Field(description="Decimal as text")
    price: str = Field(description="Decimal as text")
    currency: str


class MatchedItem(BaseModel):
    model_config = ConfigDict(frozen=True)  # no additionalProperties: fields are added in a version

    item_id: str
    category: str
    interest: str = Field(description="The declared interest it matches, normalised (casefolded)")
    created_at: str


class ItemMatchesInterests(CustomerDetail):
    detail_type: ClassVar[DetailType] = DetailType.ITEM_MATCHES_INTERESTS

    items: list[MatchedItem] = Field(description=f"At most {MAX_MATCHED_ITEMS}, the newest first")


DETAILS: tuple[type[Detail], ...] = (SegmentEntered, SegmentLeft, ItemBackInStock, ItemPriceDropped,
                                     ViewedItemBackInStock, ViewedItemPriceDropped, ItemMatchesInterests)


@dataclass(frozen=True)
class Trigger:
    """One event to publish: the bus adds the source, the bus name and its own id."""

    detail: Detail

    @property
    def detail_type(self) -> str:
        return self.detail.detail_type.value

    @property
    def time(self) -> str:
        return self.detail.occurred_at

    def detail_json(self) -> str:
        return self.detail.model_dump_json()


def detail_schemas() -> dict[str, dict[str, Any]]:
    """Each detail-type's JSON schema, as docs/triggers.md shows it."""
    return {model.detail_type.value: model.model_json_schema() for model in DETAILS}


def schemas_markdown() -> str:
    return "\n".join(f"### {detail_type}\n\n```json\n{json.dumps(schema, indent=2)}\n```\n"
                     for detail_type, schema in detail_schemas().items())


def granted_channels(user: User | None) -> list[str]:
    return [channel.value for channel in CONTACT_CHANNELS if user is not None and user.consent.granted(channel)]


def reachable(user: User | None) -> bool:
    """A customer a per-customer event may name: consent to profiling, not erased, not a visitor id
    folded into a customer."""
    return may_profile(user) and (user is None or (user.erased_at is None and user.linked_to is None))


# --- segments: between two nightly runs ---

@dataclass(frozen=True)
class SegmentRun:
    """The tracked segments' members of one run: segment id -> user id -> the tag's reason."""

    run: str
    members: Mapping[str, Mapping[str, str]]
    names: Mapping[str, str]  # segment id -> its name


def segment_events(previous: SegmentRun | None, current: SegmentRun, users: Mapping[str, User],
                   known: Iterable[str], at: datetime) -> list[Trigger]:
    """Who entered and who left each tracked segment since the previous run. The first run (no
    previous one) is the baseline: nothing. A customer who left and is no longer known at all
    (erased) gets no event: their id is not published after their erasure."""
    if previous is None:
        return []
    known = set(known)
    when = format_timestamp(at)
    found: list[Trigger] = []
    for segment_id in TRACKED_SEGMENTS:
        before, now = previous.members.get(segment_id, {}), current.members.get(segment_id, {})
        name = current.names.get(segment_id) or previous.names.get(segment_id) or segment_id
        changes = [(SegmentEntered, user_id, f"entered {name}: {now[user_id]}")
                   for user_id in sorted(now.keys() - before.keys()) if reachable(users.get(user_id))]
        changes += [(SegmentLeft, user_id, f"no longer in {name} (it was: {before[user_id]})")
                    for user_id in sorted(before.keys() - now.keys())
                    if user_id in known and reachable(users.get(user_id))]
        found += [Trigger(model(occurred_at=when, user_id=user_id, channels=granted_channels(users.get(user_id)),
                                segment_id=segment_id, segment_name=name, run=current.run,
                                previous_run=previous.run, reason=reason))
                  for model, user_id, reason in changes]
    return found


# --- items: at upsert ---

@dataclass(frozen=True)
class ItemChange:
    """What an upsert changed that a customer may care about."""

    item_id: str
    category: str
    restocked: bool
    price: Decimal | None
    currency: str | None
    previous_price: Decimal | None  # set when the price dropped


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def item_change(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> ItemChange | None:
    """Back in stock (in_stock false -> true) or cheaper (a lower price in the same currency), for a
    sellable item (not retired); None when neither, or for an item new to the catalog."""
    if before is None or after.get("retired"):
        return None
    restocked = before.get("in_stock") is False and after.get("in_stock", True) is True
    old, new = _decimal(before.get("price")), _decimal(after.get("price"))
    dropped = (old is not None and new is not None and new < old
               and before.get("currency") == after.get("currency") and after.get("currency") is not None)
    if not restocked and not dropped:
        return None
    return ItemChange(item_id=after["item_id"], category=after["category"], restocked=restocked,
                      price=new, currency=after.get("currency"), previous_price=old if dropped else None)


def item_marks(before: Mapping[str, Any] | None, change: ItemChange | None, at: datetime) -> dict[str, str]:
    """The marks the item row keeps for the nightly run: `restocked_at`, `price_dropped_at` and
    `price_before_drop`, set by this change or carried over from the row before while younger than
    MARKS_KEPT (a put replaces the whole row)."""
    marks: dict[str, str] = {}
    oldest = format_timestamp(at - MARKS_KEPT)
    for name in ("restocked_at", "price_dropped_at"):
        value = (before or {}).get(name)
        if isinstance(value, str) and value >= oldest:
            marks[name] = value
            if name == "price_dropped_at" and (before or {}).get("price_before_drop") is not None:
                marks["price_before_drop"] = str(before["price_before_drop"])
    if change is not None and change.restocked:
        marks["restocked_at"] = format_timestamp(at)
    if change is not None and change.previous_price is not None:
        marks["price_dropped_at"] = format_timestamp(at)
        marks["price_before_drop"] = str(change.previous_price)
    return marks


def amount(value: Decimal | None, currency: str | None) -> str | None:
    """A price as text in its currency's minor units (10.0000 EUR -> "10.00"), or with the decimals
    it has beyond them."""
    if value is None:
        return None
    places = Decimal(1).scaleb(-minor_units(currency))
    return str(value.quantize(places) if value == value.quantize(places) else value.normalize())


def _percent(previous: Decimal, price: Decimal) -> float:
    return round(float((previous - price) / previous * 100), 1) if previous else 0.0


def item_events(change: ItemChange, at: datetime) -> list[Trigger]:
    when = format_timestamp(at)
    found = []
    if change.restocked:
        found.append(Trigger(ItemBackInStock(
            occurred_at=when, item_id=change.item_id, category=change.category,
            price=amount(change.price, change.currency), currency=change.currency,
            reason="back in stock")))
    if change.previous_price is not None and change.price is not None and change.currency:
        previous, price = amount(change.previous_price, change.currency), amount(change.price, change.currency)
        found.append(Trigger(ItemPriceDropped(
            occurred_at=when, item_id=change.item_id, category=change.category,
            previous_price=previous, price=price, currency=change.currency,
            drop_percent=_percent(change.previous_price, change.price),
            reason=f"price down from {previous} to {price} {change.currency}")))
    return found


# --- per customer: in the nightly run ---

@dataclass(frozen=True)
class CatalogItem:
    """An item as the nightly run reads it for triggers (its row, with the upsert's marks)."""

    item_id: str
    category: str
    created_at: str
    in_stock: bool = True
    retired: bool = False
    attributes: Mapping[str, Any] | None = None
    price: Decimal | None = None
    currency: str | None = None
    restocked_at: str | None = None
    price_dropped_at: str | None = None
    price_before_drop: Decimal | None = None

    @property
    def sellable(self) -> bool:
        return self.in_stock and not self.retired


def _last_seen(history: Sequence[HistoryEvent], cutoff: float) -> dict[str, HistoryEvent]:
    """item -> the customer's last view or cart of it within the window, unless bought after it."""
    seen: dict[str, HistoryEvent] = {}
    bought: dict[str, float] = {}
    for event in history:
        # A time past the calendar's end (by hand) is no time a trigger could name.
        if event.event_type in SEEN_EVENTS and cutoff <= event.timestamp < CALENDAR_END:
            if event.item_id not in seen or event.timestamp > seen[event.item_id].timestamp:
                seen[event.item_id] = event
        elif event.event_type == "purchase":
            bought[event.item_id] = max(bought.get(event.item_id, 0.0), event.timestamp)
    return {item: event for item, event in seen.items() if bought.get(item, -1.0) < event.timestamp}


def viewed_item_events(histories: Mapping[str, Sequence[HistoryEvent]], users: Mapping[str, User],
                       items: Iterable[CatalogItem], since: datetime | None, at: datetime) -> list[Trigger]:
    """For items back in stock or cheaper after the previous run and up to this one (`since`, `at`;
    none on the first run, and each change in one run only), and still so, one event
    per (customer, item) for the customers who viewed or carted it in the last SEEN_WITHIN and have
    not bought it since, at most MAX_VIEWED_ITEMS_PER_CUSTOMER each, the most recently seen first.
    An item both back and cheaper gives the back-in-stock event; one out of stock again, none."""
    if since is None:
        return []
    after, when, cutoff = format_timestamp(since), format_timestamp(at), (at - SEEN_WITHIN).timestamp()

    def restocked(item: CatalogItem) -> bool:
        return after < (item.restocked_at or "") <= when

    def cheaper(item: CatalogItem) -> bool:
        return (after < (item.price_dropped_at or "") <= when and item.price_before_drop is not None
                and item.price is not None and item.price < item.price_before_drop)

    changed = {item.item_id: item for item in items if item.sellable and (restocked(item) or cheaper(item))}
    if not changed:
        return []
    found: list[Trigger] = []
    histories = customers_with(histories, changed)  # the others saw none of them
    for user_id in sorted(histories):
        user = users.get(user_id)
        if not reachable(user):
            continue
        seen = [event for item_id, event in _last_seen(histories[user_id], cutoff).items() if item_id in changed]
        seen.sort(key=lambda e: (-e.timestamp, e.item_id))
        channels = granted_channels(user)
        for event in seen[:MAX_VIEWED_ITEMS_PER_CUSTOMER]:
            item = changed[event.item_id]
            last_seen = format_timestamp(datetime.fromtimestamp(event.timestamp, at.tzinfo))
            verb = "carted" if event.event_type == "add_to_cart" else "viewed"
            if restocked(item):
                found.append(Trigger(ViewedItemBackInStock(
                    occurred_at=when, user_id=user_id, channels=channels, item_id=item.item_id,
                    restocked_at=item.restocked_at, last_seen_at=last_seen, seen_as=event.event_type,
                    reason=f"{verb} on {last_seen[:10]}, not bought since, back in stock")))
            else:
                previous, price = amount(item.price_before_drop, item.currency), amount(item.price, item.currency)
                found.append(Trigger(ViewedItemPriceDropped(
                    occurred_at=when, user_id=user_id, channels=channels, item_id=item.item_id,
                    price_dropped_at=item.price_dropped_at, previous_price=previous, price=price,
                    currency=item.currency or "", last_seen_at=last_seen, seen_as=event.event_type,
                    reason=f"{verb} on {last_seen[:10]}, not bought since, now {price} {item.currency} "
                           f"(was {previous})")))
    return found


def _item_keys(item: CatalogItem) -> set[str]:
    """What an interest can match: the category, and the item's text attributes (a string, or a list
    of strings, such as tags), normalised as declared interests are."""
    keys = {interests.normalise(item.category)}
    for value in (item.attributes or {}).values():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and (key := interests.normalise(text)):
                keys.add(key)
    return keys


def interest_events(users: Mapping[str, User], bought: Mapping[str, Iterable[str]], items: Iterable[CatalogItem],
                    since: datetime | None, at: datetime) -> list[Trigger]:
    """Items created since the previous run (none on the first run), sellable, whose category or
    attributes match an interest a customer declared (attributes.interests): one event per customer
    listing up to MAX_MATCHED_ITEMS, the newest first, leaving out what they bought already.
    Only customers with consent to profiling (a message chosen for them is profiling)."""
    if since is None:
        return []
    after, when = format_timestamp(since), format_timestamp(at)
    new = sorted((item for item in items if item.sellable and after < item.created_at <= when),
                 key=lambda item: (item.created_at, item.item_id), reverse=True)
    if not new:
        return []
    keyed = [(item, _item_keys(item)) for item in new]
    found: list[Trigger] = []
    for user_id in sorted(users):
        user = users[user_id]
        declared = interests.declared(user.attributes)
        if not declared or not reachable(user):
            continue
        own = set(bought.get(user_id, ()))
        matched = []
        for item, keys in keyed:
            interest = next((key for key, _ in declared if key in keys), None)
            if interest is not None and item.item_id not in own:
                matched.append(MatchedItem(item_id=item.item_id, category=item.category, interest=interest,
                                           created_at=item.created_at))
            if len(matched) == MAX_MATCHED_ITEMS:
                break
        if matched:
            words = ", ".join(dict.fromkeys(text for key, text in declared if key in {m.interest for m in matched}))
            found.append(Trigger(ItemMatchesInterests(
                occurred_at=when, user_id=user_id, channels=granted_channels(user), items=matched,
                reason=f"{len(matched)} new item{'s' if len(matched) > 1 else ''} matching the declared "
                       f"interest in {words}")))
    return found
