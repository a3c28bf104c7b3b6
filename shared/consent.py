"""Consent per purpose and contact channel: what a customer agreed to, when, where, to which text.

Purposes: ``personalization`` (recommendations, ranking, basket suggestions, training on their
history), ``profiling`` (behavioural, RFM, value and lifecycle segments, custom rules, segment
members), and the contact channels ``email``, ``sms`` and ``push`` (read by campaign audiences).

Each purpose's state says whether it is granted, when it was given or withdrawn (``at``), where
(``source``: "web-signup", "app-settings", "backend", ...), to which text (``text_version``) and
who recorded it (``by``: the caller kind). Defaults, for a purpose never recorded: personalization
and profiling granted (the customer has not objected), contact channels not granted (marketing
contact needs an opt-in).

Rows written before purposes existed hold ``consent: {"personalization": <bool>}``: they load as
personalization = profiling = that flag, source "migrated", at their ``consent_updated_at``.
Nothing is rewritten; the next change stores the new shape.

Plain types only: imported by users, storage, segments and the privacy function alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, model_validator


class Purpose(StrEnum):
    PERSONALIZATION = "personalization"
    PROFILING = "profiling"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


CONTACT_CHANNELS = (Purpose.EMAIL, Purpose.SMS, Purpose.PUSH)
# Granted until withdrawn (an objection); contact channels only once opted in.
DEFAULT_GRANTED = {purpose: purpose not in CONTACT_CHANNELS for purpose in Purpose}
DEFAULT_SOURCE, MIGRATED_SOURCE, UNSPECIFIED_SOURCE = "default", "migrated", "unspecified"
# A stored consent that does not read: every purpose counts as withdrawn until the customer (or the
# shop) records it again, because what they chose cannot be shown.
UNREADABLE_SOURCE = "unreadable"
# The history keeps this many changes, the newest; older ones are counted in ``dropped``.
HISTORY_LIMIT = 200

Source = Annotated[str, Strict(), StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")]
TextVersion = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)]


@dataclass(frozen=True)
class Recorder:
    """Who records a change: the caller kind (trusted, customer) and, for a trusted system, its identity."""

    kind: str
    principal: str | None = None


class PurposeConsent(BaseModel):
    """The current state of one purpose."""

    model_config = ConfigDict(frozen=True)

    granted: bool
    at: str | None = Field(default=None, description="When it was given or withdrawn; null: never recorded")
    source: str = Field(default=DEFAULT_SOURCE, description=(
        "Where: web-signup, app-settings, backend, ...; 'default' when never recorded, 'migrated' for the "
        "single flag stored before purposes existed"))
    text_version: str | None = Field(default=None, description="The version of the consent text shown")
    by: str | None = Field(default=None, description="Who recorded it: trusted (the shop's systems) or customer")


def _default(purpose: Purpose) -> Any:
    return Field(default_factory=lambda: PurposeConsent(granted=DEFAULT_GRANTED[purpose]))


class Consent(BaseModel):
    """A customer's consent, every purpose (defaults for those never recorded)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    personalization: PurposeConsent = _default(Purpose.PERSONALIZATION)
    profiling: PurposeConsent = _default(Purpose.PROFILING)
    email: PurposeConsent = _default(Purpose.EMAIL)
    sms: PurposeConsent = _default(Purpose.SMS)
    push: PurposeConsent = _default(Purpose.PUSH)

    @model_validator(mode="before")
    @classmethod
    def _from_single_flag(cls, data: Any) -> Any:
        return stored_consent(data, None)

    @classmethod
    def unreadable(cls) -> Consent:
        """In place of a stored consent that does not read: every purpose withdrawn."""
        return cls(**{p.value: PurposeConsent(granted=False, source=UNREADABLE_SOURCE) for p in Purpose})

    def of(self, purpose: Purpose | str) -> PurposeConsent:
        # A Purpose is its field's name: only a plain string needs checking (Purpose() costs a
        # microsecond, half of what the nightly run's consent check of each customer took).
        return getattr(self, purpose if isinstance(purpose, Purpose) else Purpose(purpose).value)

    def granted(self, purpose: Purpose | str) -> bool:
        return self.of(purpose).granted

    def recorded(self) -> dict[str, dict[str, Any]]:
        """What is stored: the purposes ever recorded (or migrated), not the defaults."""
        return {p.value: _compact(self.of(p).model_dump()) for p in Purpose if self.of(p).source != DEFAULT_SOURCE}

    def withdrawn(self) -> dict[str, dict[str, Any]]:
        """The recorded purposes withdrawn: the objections (an erasure keeps these)."""
        return {p: state for p, state in self.recorded().items() if not state["granted"]}

    def with_objections_of(self, other: Consent) -> Consent:
        """This consent with every purpose `other` withdrew withdrawn, as `other` recorded it: a
        visitor id linked to a customer is that customer, whose objections cover it."""
        if all(other.granted(p) for p in Purpose):
            return self
        return Consent(**{p.value: self.of(p) if other.granted(p) else other.of(p) for p in Purpose})

    def after(self, changes: list[ConsentChange]) -> Consent:
        states = {p.value: self.of(p) for p in Purpose}
        for change in changes:
            states[change.purpose.value] = PurposeConsent(
                granted=change.granted, at=change.at, source=change.source, text_version=change.text_version,
                by=change.by)
        return Consent(**states)


def stored_consent(data: Any, updated_at: str | None) -> Any:
    """A stored consent map as Consent reads it: the single flag of before becomes personalization
    and profiling, source "migrated", at `updated_at` (the row's consent_updated_at)."""
    if data is None:
        return {}
    if isinstance(data, dict) and isinstance(data.get(Purpose.PERSONALIZATION.value), bool):
        state = {"granted": data[Purpose.PERSONALIZATION.value], "at": updated_at, "source": MIGRATED_SOURCE}
        return {Purpose.PERSONALIZATION.value: state, Purpose.PROFILING.value: dict(state)}
    return data


def _compact(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if v is not None}


class ConsentChange(BaseModel):
    """One entry of the history: a purpose given, withdrawn or confirmed."""

    model_config = ConfigDict(frozen=True)

    purpose: Purpose
    granted: bool
    at: str
    source: str
    text_version: str | None = None
    by: str = Field(description="The caller kind that recorded it: trusted (the shop's systems) or customer")
    principal: str | None = Field(default=None, description="For a trusted caller, its identity (an IAM ARN)")


class PurposeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    granted: Annotated[bool, Strict()]
    source: Source | None = Field(default=None, description="Where it was given or withdrawn; default: the body's")
    text_version: TextVersion | None = Field(default=None, description="The consent text shown; default: the body's")


class ConsentUpdate(BaseModel):
    """Body of PUT /users/{user_id}/consent: only the purposes sent change.

    ``{"personalization": false}`` (a bare flag, the body of before purposes existed) sets both
    personalization and profiling, unless the body sends profiling too."""

    model_config = ConfigDict(extra="forbid")

    personalization: PurposeUpdate | Annotated[bool, Strict()] | None = Field(default=None, description=(
        "Recommendations, ranking, basket suggestions, training. A bare true/false (deprecated, the shape of "
        "before) sets profiling as well"))
    profiling: PurposeUpdate | None = Field(default=None, description="Behavioural, RFM, value, lifecycle and "
                                                                      "custom segments")
    email: PurposeUpdate | None = None
    sms: PurposeUpdate | None = None
    push: PurposeUpdate | None = None
    source: Source | None = Field(default=None, description=(
        "Where: web-signup, app-settings, backend, ... for each purpose sent without its own; "
        f"'{UNSPECIFIED_SOURCE}' when neither says"))
    text_version: TextVersion | None = Field(default=None, description=(
        "The version of the consent text shown, for each purpose sent without its own"))

    @model_validator(mode="after")
    def _some_purpose(self) -> ConsentUpdate:
        if all(getattr(self, p.value) is None for p in Purpose):
            raise ValueError(f"send at least one purpose: {', '.join(Purpose)}")
        return self

    def updates(self) -> dict[Purpose, PurposeUpdate]:
        sent: dict[Purpose, PurposeUpdate] = {}
        for purpose in Purpose:
            value = getattr(self, purpose.value)
            if isinstance(value, bool):  # the single flag of before: personalization and profiling
                sent[purpose] = PurposeUpdate(granted=value)
                if self.profiling is None:
                    sent[Purpose.PROFILING] = PurposeUpdate(granted=value)
            elif value is not None:
                sent[purpose] = value
        return sent

    def changes(self, at: str, recorder: Recorder) -> list[ConsentChange]:
        return [ConsentChange(purpose=purpose, granted=update.granted, at=at,
                              source=update.source or self.source or UNSPECIFIED_SOURCE,
                              text_version=update.text_version or self.text_version,
                              by=recorder.kind, principal=recorder.principal)
                for purpose, update in sorted(self.updates().items(), key=lambda kv: list(Purpose).index(kv[0]))]


class ConsentHistory(BaseModel):
    changes: list[ConsentChange] = Field(default_factory=list, description="Oldest first")
    dropped: int = Field(default=0, description=(
        f"Older changes no longer kept (the newest {HISTORY_LIMIT} are; each purpose's current state "
        "always holds its latest change)"))
