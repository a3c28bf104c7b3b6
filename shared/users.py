"""User profiles, consent and the purchase summary kept current at ingest."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StringConstraints

from shared.events import Event, EventType, Identifier, StoredFloat, StoredInt
from shared.limits import MAX_ATTRIBUTES_BYTES, at_most_bytes

CountryCode = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Z]{2}$")]
ShortText = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=256)]
AttributeValue = (
    Annotated[str, Strict(), StringConstraints(max_length=1024)]
    | Annotated[bool, Strict()]
    | StoredInt
    | StoredFloat
    | Annotated[list[Annotated[str, StringConstraints(max_length=256)]], Field(max_length=50)]
)
Attributes = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], AttributeValue],
    Field(max_length=50, description=f"At most 50, and {MAX_ATTRIBUTES_BYTES:,} bytes when stored"),
    AfterValidator(at_most_bytes(MAX_ATTRIBUTES_BYTES)),
]


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    personalization: Annotated[bool, Strict()] = Field(
        description="False: the customer objects to personalization (recommendations, segments)"
    )


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
    consent: Consent | None = None


class PurchaseSummary(BaseModel):
    """Per-user totals over stored purchase events; ``spend`` is per currency."""

    model_config = ConfigDict(frozen=True)

    purchase_count: int = 0
    units: int = 0
    spend: dict[str, Decimal] = Field(default_factory=dict)
    first_purchase_at: str | None = None
    last_purchase_at: str | None = None


class User(BaseModel):
    user_id: Identifier
    country: str | None = None
    region: str | None = None
    city: str | None = None
    attributes: dict = Field(default_factory=dict)
    consent: Consent = Field(default_factory=lambda: Consent(personalization=True))
    summary: PurchaseSummary = Field(default_factory=PurchaseSummary)
    updated_at: datetime | None = None
    erased_at: datetime | None = Field(
        default=None, description="Set when the customer was erased: all that is kept is this time and an objection")


def fold_purchases(summary: PurchaseSummary, events: Iterable[Event]) -> PurchaseSummary:
    """The summary after adding ``events`` (only purchases count), in any arrival order."""
    count, units = summary.purchase_count, summary.units
    spend = dict(summary.spend)
    first, last = summary.first_purchase_at, summary.last_purchase_at
    for event in events:
        if event.event_type is not EventType.PURCHASE:
            continue
        count += 1
        units += event.quantity
        spend[event.currency] = spend.get(event.currency, Decimal(0)) + event.line_total
        first = event.ts if first is None else min(first, event.ts)
        last = event.ts if last is None else max(last, event.ts)
    return PurchaseSummary(
        purchase_count=count, units=units, spend=spend, first_purchase_at=first, last_purchase_at=last
    )


def may_personalize(user: User | None) -> bool:
    """The one consent test. A customer known only by their events has not objected; a stored
    objection is final (it survives erasure, in the suppression record)."""
    return user is None or user.consent.personalization
