"""Customer events: what a valid event is, and how a batch is split into valid and rejected.

Each event of a batch is validated on its own, so one bad event never costs the others.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.consent import CONTACT_CHANNELS
from shared.limits import ID_PATTERN, MAX_ID_BYTES, MAX_PROPERTIES_BYTES, at_most_bytes, fits_id_bytes
from shared.validation import Checked, one_of, validate_each

MAX_EVENTS_PER_BATCH = 1000
# Anything older is a unit mistake (seconds as milliseconds, a zero date), not real history.
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=timezone.utc)

Identifier = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=MAX_ID_BYTES, pattern=ID_PATTERN),
    AfterValidator(fits_id_bytes),
]


def iso_text(value: Any) -> Any:
    # Lax pydantic would read a number as Unix seconds; a client sending one has more often
    # mixed up units, and the API promises an ISO 8601 string.
    if not isinstance(value, (str, datetime)):
        raise ValueError("must be an ISO 8601 date-time string with a zone, e.g. 2025-03-01T10:00:00Z")
    return value


# The times a stored text holds (format_timestamp: four digits of year, in UTC). The year 1000 and
# not later: what earlier versions stored from then on reads, and must go on reading.
EARLIEST_MOMENT = datetime(1000, 1, 1, tzinfo=timezone.utc)
# The last day a stored time can be told as a date in UTC: a time read from a row written by hand
# (ingest refuses one more than minutes ahead) may lie past it, where datetime cannot go.
CALENDAR_END = datetime(9999, 12, 31, tzinfo=timezone.utc).timestamp()


def storable(value: datetime) -> datetime:
    try:
        in_utc = value.astimezone(timezone.utc)
    except OverflowError:  # past either end of the years a datetime holds
        raise ValueError("must be before the year 10000 in UTC" if value.year > 1 else
                         "must be in the year 1000 or later") from None
    if in_utc < EARLIEST_MOMENT:
        raise ValueError("must be in the year 1000 or later")
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(iso_text), AfterValidator(storable)]
CurrencyCode = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Z]{3}$")]
# ISO 4217's codes in use, and those withdrawn since 2000 (a shop's imported history may hold them).
ISO_4217 = frozenset("""
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF
    KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR
    MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
    SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI
    UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA
    XXX YER ZAR ZMW ZWG ZWL
    ADP AFA ATS AZM BEF BGL BYB BYR CSD CUC CYP DEM EEK ESP FIM FRF GHC GRD GWP HRK IEP ITL LTL LUF LVL
    MGF MRO MTL MZM NLG PTE ROL SDD SIT SKK SRG STD TMM TPE TRL VEB VEF XEU YUM ZMK ZWD ZWN ZWR
""".split())


def iso_4217(code: str) -> str:
    if code not in ISO_4217:
        raise ValueError("must be an ISO 4217 currency code, such as EUR")
    return code


# What an event may name: its spend and refunds are summed per currency on the customer's profile,
# so a code of ISO 4217's only (a typo would split a customer's spend, and endless made-up codes
# would grow the profile past DynamoDB's 400 KB item).
EventCurrency = Annotated[CurrencyCode, AfterValidator(iso_4217)]
# Money: below 10,000,000,000 (10 digits before the point), at most 4 decimals kept; an event's
# price is then rounded to its currency's minor units. A binary float sent in JSON (2.07 may
# arrive as 2.0700000000000003) is rounded, not refused.
MAX_MONEY = Decimal(10**10)
MONEY_DECIMALS = 4
DEFAULT_MINOR_UNITS = 2
# ISO 4217 minor units where they are not 2.
MINOR_UNITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                     "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def minor_units(currency: str | None) -> int:
    """Decimals of a currency's amounts (ISO 4217): 0 for JPY, 3 for KWD, 2 by default."""
    return MINOR_UNITS.get(currency or "", DEFAULT_MINOR_UNITS)


def round_money(value: Decimal, decimals: int) -> Decimal:
    """Half up, as shops round a price; 2.0700000000000003 -> 2.07. The bound holds after
    rounding too: 9999999999.99999 would round up to 10,000,000,000, and is refused."""
    rounded = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    if rounded >= MAX_MONEY:
        raise ValueError(f"must be below {MAX_MONEY:,} once rounded to {decimals} decimals")
    return rounded


_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # a sign, so "-1" is told it is below 0


def _a_number(value: Any) -> Any:
    # A JSON number, or a decimal as answers give one ("21.40", so an item read can be sent back);
    # Decimal alone would take any text it parses ("5_000", " 5 ", full-width digits).
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise ValueError('must be a number, or a decimal number as a text such as "19.90"')
    return value


Money = Annotated[
    Decimal,
    Field(ge=0, lt=MAX_MONEY, allow_inf_nan=False,
          description=f"At least 0 and below {MAX_MONEY:,}; rounded half up to {MONEY_DECIMALS} decimals"),
    AfterValidator(lambda value: round_money(value, MONEY_DECIMALS)),
]
SentMoney = Annotated[Money, BeforeValidator(_a_number)]  # in a request; Money as stored (a row by hand may hold any text)


def _not_below_dynamodb_precision(value: float) -> float:
    if value != 0 and abs(value) < 1e-130:
        raise ValueError("too close to zero to store (DynamoDB numbers reach down to 1e-130)")
    return value


def _not_whole(value: Any) -> Any:
    # A strict float takes a whole number too: one past StoredInt's range would be stored rounded
    # (10**38 + 1 as 10**38), where the docs promise values come back as sent.
    if type(value) is int:
        raise ValueError("a whole number must lie between -10**38 and 10**38 (DynamoDB's 38 digits)")
    return value


# What a DynamoDB number can hold: 38 significant digits, magnitudes from 1e-130 to 9.99e125.
StoredInt = Annotated[int, Strict(), Field(gt=-(10**38), lt=10**38)]
StoredFloat = Annotated[
    float, Strict(), Field(allow_inf_nan=False, ge=-9.99e125, le=9.99e125),
    AfterValidator(_not_below_dynamodb_precision), BeforeValidator(_not_whole),
]
PropertyKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
PropertyValue = one_of("a text (up to 1,024 characters), true or false, or a number",
                       Annotated[str, Strict(), StringConstraints(max_length=1024)], Annotated[bool, Strict()],
                       StoredInt, StoredFloat)


class EventType(StrEnum):
    VIEW = "view"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    PURCHASE = "purchase"
    # Training encodes event types by their position here: a new type is appended, never inserted.
    RETURN = "return"
    CLICK = "click"  # an item clicked, e.g. in a list of recommendations
    SEARCH = "search"  # the customer searched: properties.query; item_id optional (a result picked)
    # The shop sent the customer a message (shared/contact.py): campaign_id, channel email, sms or
    # push; no item. Only the shop's backend records these.
    MESSAGE_SENT = "message_sent"
    # A list of recommendations was shown: recommendation_id (from the answer) and items (those
    # shown, in order); no item_id, so it never enters the customer's history or training.
    IMPRESSION = "impression"


# The types whose item_id may be left out: a search is about no item in particular, a message
# sent names none (it may not: an item would put it in the customer's history), and an
# impression names the items shown in `items` instead.
ITEMLESS_EVENTS = frozenset({EventType.SEARCH, EventType.MESSAGE_SENT, EventType.IMPRESSION})
# The types that may carry the recommendation_id of the answer they came from (docs/experiments.md).
RECOMMENDATION_EVENTS = frozenset({EventType.IMPRESSION, EventType.CLICK})
MAX_IMPRESSION_ITEMS = 50
RecommendationRef = Annotated[str, Strict(), StringConstraints(min_length=8, max_length=400,
                                                               pattern=r"^r1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")]


class Channel(StrEnum):
    WEB = "web"
    IOS = "ios"
    ANDROID = "android"
    STORE = "store"
    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"


def format_timestamp(moment: datetime) -> str:
    """UTC, fixed width, so that string order is time order (the by_time index sorts on it)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A time as format_timestamp writes it, as a regular expression that Python and the export path's
# SQL (Trino's regexp_like, DuckDB's) read alike, and its length (no line break after it). A
# stored event's time in any other form was written by hand: training leaves the event out.
STORED_TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9][.][0-9]{6}Z$"
STORED_TIME_LENGTH = 27
MAX_QUANTITY = 100_000  # units an event may carry


# A customer's erasure stamp that does not read as a time (written by hand), as ingest and lists
# compare it: later than any event. When they were erased cannot be told, so every event of theirs
# is refused (and named) and lists withhold them, until an erasure is recorded again.
UNKNOWN_ERASURE = "9999-12-31T23:59:59.999999Z"


class Event(BaseModel):
    """One customer interaction. ``(user_id, event_id)`` is its idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier | None = Field(
        default=None, description=(
            "Required, except for search events (where it may name a result picked) and message_sent "
            "events (which name no item)"))
    event_type: EventType
    timestamp: Moment = Field(description="ISO 8601 with a zone, e.g. 2025-03-01T10:00:00Z")
    quantity: Annotated[int, Strict(), Field(ge=1, le=MAX_QUANTITY)] = 1
    # currency comes first so that the price can be rounded to its minor units
    currency: EventCurrency | None = Field(default=None, description="ISO 4217; required with price")
    price: SentMoney | None = Field(
        default=None,
        description=(
            "Unit price (for a return: the refunded unit price); required for purchases and returns. "
            f"At least 0 and below {MAX_MONEY:,} (10 digits before the point); rounded half up to the "
            "currency's minor units (ISO 4217: 2 decimals by default, 0 for JPY and KRW, 3 for BHD, "
            "JOD, KWD, OMR and TND), so a float artifact such as 2.0700000000000003 is stored as 2.07"
        ),
    )
    channel: Channel
    session_id: Identifier | None = None
    order_id: Identifier | None = Field(
        default=None,
        description=(
            "Groups purchase lines of one order (a purchase without one counts its day, UTC, as the "
            "order); on a return, the order it returns from"
        ),
    )
    campaign_id: Identifier | None = Field(default=None, description=(
        "Campaign the event is attributed to; required for message_sent. An event carrying the campaign "
        "of a message sent counts as a response to it"))
    recommendation_id: RecommendationRef | None = Field(default=None, description=(
        "On impression and click events: the recommendation_id of the answer the items came from, "
        "as the API gave it; it credits purchases to that answer (docs/experiments.md)"))
    items: Annotated[list[Identifier], Field(min_length=1, max_length=MAX_IMPRESSION_ITEMS)] | None = Field(
        default=None, description="On impression events (required there, nowhere else): the items shown, in order")
    properties: Annotated[
        dict[PropertyKey, PropertyValue], Field(max_length=50), AfterValidator(at_most_bytes(MAX_PROPERTIES_BYTES))
    ] = Field(default_factory=dict, description=f"At most 50, and {MAX_PROPERTIES_BYTES:,} bytes when stored; "
                                                "a search event's text is properties.query (required for search)")

    @field_validator("timestamp")
    @classmethod
    def _plausible_time(cls, value: datetime, info: ValidationInfo) -> datetime:
        context = info.context or {}
        now: datetime = context.get("now") or datetime.now(timezone.utc)
        max_future = timedelta(seconds=context.get("max_future_seconds", 300))
        if value > now + max_future:
            raise ValueError(
                f"timestamp is in the future (more than {int(max_future.total_seconds())} s ahead "
                "of the server clock)"
            )
        if value < EARLIEST_EVENT:
            raise ValueError("timestamp is before 2000-01-01")
        return value

    @field_validator("price")
    @classmethod
    def _to_minor_units(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        if value is None:
            return None
        return round_money(value, minor_units(info.data.get("currency")))

    @model_validator(mode="after")
    def _item_and_query(self) -> Event:
        if self.item_id is None and self.event_type not in ITEMLESS_EVENTS:
            raise ValueError(f"item_id: required for {self.event_type} events")
        if self.event_type is EventType.SEARCH:
            query = self.properties.get("query")
            if not isinstance(query, str) or not query.strip():
                raise ValueError("properties.query: required for search events: the text searched, not blank")
        return self

    @model_validator(mode="after")
    def _message_sent(self) -> Event:
        if self.event_type is not EventType.MESSAGE_SENT:
            return self
        if self.item_id is not None:
            raise ValueError("item_id: a message_sent event names no item (put what it showed in properties)")
        if self.campaign_id is None:
            raise ValueError("campaign_id: required for message_sent events: the campaign the message belongs to")
        if self.channel not in CONTACT_CHANNELS:
            raise ValueError(f"channel: a message is sent by email, sms or push, not {self.channel}")
        return self

    @model_validator(mode="after")
    def _impression(self) -> Event:
        if self.recommendation_id is not None and self.event_type not in RECOMMENDATION_EVENTS:
            raise ValueError("recommendation_id: only impression and click events carry one")
        if self.event_type is not EventType.IMPRESSION:
            if self.items is not None:
                raise ValueError("items: only impression events list items shown")
            return self
        if self.item_id is not None:
            raise ValueError("item_id: an impression lists the items shown in items, not item_id")
        if self.recommendation_id is None:
            raise ValueError("recommendation_id: required for impression events: the id of the answer shown")
        if self.items is None:
            raise ValueError("items: required for impression events: the items shown, in order")
        return self

    @model_validator(mode="after")
    def _money_is_complete(self) -> Event:
        if self.event_type in (EventType.PURCHASE, EventType.RETURN) and self.price is None:
            raise ValueError(f"price: required for {self.event_type} events")
        if self.price is not None and self.currency is None:
            raise ValueError("currency: required when price is given")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.user_id, self.event_id)

    @property
    def ts(self) -> str:
        return format_timestamp(self.timestamp)

    @property
    def line_total(self) -> Decimal:
        return (self.price or Decimal(0)) * self.quantity


def parse_batch(raw_events: list[Any], *, now: datetime, max_future_seconds: int) -> Checked[Event]:
    return validate_each(
        raw_events, Event, "event_id", {"now": now, "max_future_seconds": max_future_seconds}
    )
