"""User profiles, consent and the purchase summary kept current at ingest."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints, computed_field, model_validator,
)

from shared.consent import Consent, ConsentUpdate, Purpose, stored_consent
from shared.contact import ContactLedger
from shared.events import Event, EventType, Identifier, StoredFloat, StoredInt
from shared.limits import MAX_ATTRIBUTES_BYTES, at_most_bytes
from shared.purchases import order_key
from shared.validation import one_of

CountryCode = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Z]{2}$")]
ShortText = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=256)]
AttributeValue = one_of(
    "a text (up to 1,024 characters), true or false, a number, or a list of up to 50 texts",
    Annotated[str, Strict(), StringConstraints(max_length=1024)],
    Annotated[bool, Strict()],
    StoredInt,
    StoredFloat,
    Annotated[list[Annotated[str, StringConstraints(max_length=256)]], Field(max_length=50)],
)
Attributes = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], AttributeValue],
    Field(max_length=50, description=f"At most 50, and {MAX_ATTRIBUTES_BYTES:,} bytes when stored"),
    AfterValidator(at_most_bytes(MAX_ATTRIBUTES_BYTES)),
]


class UserProfileIn(BaseModel):
    """Body of PUT /users/{user_id}: replaces the profile; consent is kept when omitted."""

    model_config = ConfigDict(extra="forbid")

    country: CountryCode | None = Field(default=None, description="ISO 3166-1 alpha-2")
    region: ShortText | None = None
    city: ShortText | None = None
    attributes: Attributes = Field(
        default_factory=dict,
        description="Declared data: age_band, company_type, interests (list), ...",
    )
    consent: ConsentUpdate | None = Field(default=None, description=(
        "Recorded as PUT /users/{user_id}/consent records it (only the purposes sent change, with history)"))


def _a_time(stamp: str) -> str:
    datetime.fromisoformat(stamp)  # a ValueError (a validation error) for a text that is no time
    return stamp


# A stored UTC stamp (shared.events.format_timestamp writes them): one that is no time fails here,
# where the row is read, not in the figures worked out from it.
Stamp = Annotated[str, Strict(), AfterValidator(_a_time)]


# A count no shop reaches, that a float holds exactly: the nightly segments compare counts as
# numbers over arrays. A stored row past it (by hand) reads without its summary (user_from_row).
Count = Annotated[int, Field(ge=-(2**53), le=2**53)]


class PurchaseSummary(BaseModel):
    """Per-user totals over stored purchase and return events, per currency where money.

    ``orders``: distinct orders (``order_id``; a purchase without one counts its UTC day as the
    order). ``lines``: purchase events; ``units``: their quantities. ``spend``: purchases net of
    returns (below zero when returns refer to purchases older than the stored history);
    ``returned``: the refunded amounts; ``returns``: return events.

    Rows written before orders were counted hold only ``purchase_count`` (purchase lines): they
    load with ``lines`` = ``orders`` = ``purchase_count``, the best count available, until the
    next purchase adds to them. ``purchase_count`` is still shown, as ``lines``, for clients that
    read it.
    """

    model_config = ConfigDict(frozen=True)

    orders: Count = Field(default=0, description="Distinct orders (order_id; without one, the purchase day, UTC)")
    lines: Count = Field(default=0, description="Purchase lines (purchase events)")
    units: Count = Field(default=0, description="Units bought (sum of purchase quantities)")
    spend: dict[str, Decimal] = Field(default_factory=dict, description="Per currency, net of returns")
    returned: dict[str, Decimal] = Field(default_factory=dict, description="Refunded, per currency")
    returns: Count = Field(default=0, description="Return lines (return events)")
    first_purchase_at: Stamp | None = None
    last_purchase_at: Stamp | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_legacy_row(cls, data: Any) -> Any:
        if isinstance(data, dict) and "purchase_count" in data and "lines" not in data:
            count = data["purchase_count"]
            data = {**data, "lines": count}
            data.setdefault("orders", count)
        return data

    @computed_field(description="Deprecated: the same as lines")  # type: ignore[prop-decorator]
    @property
    def purchase_count(self) -> int:
        return self.lines


_NOT_SENT = object()  # a stored value no request can have sent: left out


def _as_sent(value: Any) -> Any:
    """A stored attribute as the shop sent it: DynamoDB gives its numbers back as Decimal, which
    JSON would show as a text; a whole one as an int (exact past 2^53), another (and one from 10**38
    on) as the float it was (a float survives the trip through its shortest text). A value written by hand that no
    request sends (a binary value: it has no text to show, and every reader of texts would meet it)
    is left out, in a list or a map too."""
    if isinstance(value, Decimal):
        # A whole number from 10**38 on can only have been sent as a float (StoredInt stops below it).
        return int(value) if value == value.to_integral_value() and abs(value) < 10**38 else float(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list):
        return [sent for item in value if (sent := _as_sent(item)) is not _NOT_SENT]
    if isinstance(value, dict):
        return {key: sent for key, item in value.items() if (sent := _as_sent(item)) is not _NOT_SENT}
    return _NOT_SENT


def attributes_as_sent(value: Any) -> Any:
    """Stored attributes (a customer's or an item's) as the shop sent them: see _as_sent."""
    if not isinstance(value, dict):
        return value
    return {key: sent for key, item in value.items() if (sent := _as_sent(item)) is not _NOT_SENT}


class User(BaseModel):
    user_id: Identifier
    country: str | None = None
    region: str | None = None
    city: str | None = None
    attributes: Annotated[dict, BeforeValidator(attributes_as_sent)] = Field(default_factory=dict)
    consent: Consent = Field(default_factory=Consent, description="Per purpose: granted, when, where, which text")
    summary: PurchaseSummary = Field(default_factory=PurchaseSummary)
    contacts: ContactLedger = Field(default_factory=ContactLedger, description=(
        "Per contact channel: messages sent (message_sent events), the campaigns answered, the response rate"))
    updated_at: datetime | None = None
    erased_at: datetime | None = Field(
        default=None, description="Set when the customer was erased: all that is kept is this time and an objection")
    linked_visitors: list[str] = Field(
        default_factory=list, description="Visitor ids (devices used before signing in) linked to this customer, "
                                          "newest first: their events count in the customer's recommendations")
    linked_to: str | None = Field(default=None, description="For a visitor id: the customer it is linked to")

    def with_objections_of(self, consent: Consent) -> User:
        """This visitor id with the objections of the customer it is linked to (`consent`, theirs)."""
        linked = self.consent.with_objections_of(consent)
        if linked is self.consent:
            return self
        # Made anew, not model_copy: a nightly customer's field names are shared and read-only.
        return User.model_construct({*self.model_fields_set, "consent"}, **{**dict(self), "consent": linked})

    @model_validator(mode="before")
    @classmethod
    def _stored_consent(cls, data: Any) -> Any:
        """A row's consent as stored (the single flag of before maps, at its consent_updated_at)."""
        if isinstance(data, dict) and isinstance(data.get("consent"), dict):
            data = {**data, "consent": stored_consent(data["consent"], data.get("consent_updated_at"))}
        return data


def fold_purchases(
    summary: PurchaseSummary, events: Iterable[Event], known_orders: AbstractSet[bytes] = frozenset()
) -> PurchaseSummary:
    """The summary after adding ``events`` (purchases and returns count), in any arrival order.

    ``known_orders``: the keys (``shared.purchases.order_key``) of the orders already counted;
    a purchase of one of them, or of an order seen earlier in ``events``, adds a line, not an order.
    """
    orders, lines, units, returns = summary.orders, summary.lines, summary.units, summary.returns
    spend, returned = dict(summary.spend), dict(summary.returned)
    first, last = summary.first_purchase_at, summary.last_purchase_at
    seen = set(known_orders)
    for event in events:
        if event.event_type is EventType.PURCHASE:
            key = order_key(event.order_id, event.timestamp)
            if key not in seen:
                seen.add(key)
                orders += 1
            lines += 1
            units += event.quantity
            spend[event.currency] = spend.get(event.currency, Decimal(0)) + event.line_total
            first = event.ts if first is None else min(first, event.ts)
            last = event.ts if last is None else max(last, event.ts)
        elif event.event_type is EventType.RETURN:
            returns += 1
            spend[event.currency] = spend.get(event.currency, Decimal(0)) - event.line_total
            returned[event.currency] = returned.get(event.currency, Decimal(0)) + event.line_total
    return PurchaseSummary(
        orders=orders, lines=lines, units=units, spend=spend, returned=returned, returns=returns,
        first_purchase_at=first, last_purchase_at=last,
    )


def with_linked_objections(users: dict[str, User]) -> dict[str, User]:
    """`users` (every stored customer, by id), each visitor id linked to one of them with that
    customer's objections: the trail a customer signed in on is theirs, so what they withdrew
    covers it in training and the nightly segments, as it does on request."""
    for user_id, user in users.items():
        customer = users.get(user.linked_to) if user.linked_to is not None else None
        if customer is not None:
            users[user_id] = user.with_objections_of(customer.consent)
    return users


def may_personalize(user: User | None) -> bool:
    """Recommendations, ranking, basket suggestions and training may use the customer's data.
    A customer known only by their events has not objected; a stored objection is final (it
    survives erasure, in the suppression record)."""
    return user is None or user.consent.granted(Purpose.PERSONALIZATION)


def may_profile(user: User | None) -> bool:
    """Behavioural segments (RFM, value, lifecycle, behaviour, custom rules) may read the
    customer's data: the same defaults and finality as may_personalize, for profiling."""
    return user is None or user.consent.granted(Purpose.PROFILING)
