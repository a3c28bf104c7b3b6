"""The contact budget: what was sent to a customer on each contact channel, what they answered,
and whether they may be contacted again now.

The shop's backend records each message it sends as a ``message_sent`` event (its ``channel``:
email, sms or push; its ``campaign_id``). Ingest folds those, and every event that carries a
``campaign_id``, into the customer's ``ContactLedger``, kept on their row in the same
transaction as the events (``shared/storage/users.py``), so a retried batch counts nothing twice.

- a send: ``sends`` + 1 on its channel, its time and campaign at the head of ``recent_sends`` /
  ``recent_campaigns`` (the newest ``RECENT_SENDS`` are kept, newest first);
- a response: any other event whose ``campaign_id`` the ledger shows as sent on a channel and not
  yet counted there (``responded``): one response on each channel that campaign went out on. A
  click in an email lands on the web with channel "web"; the response belongs to the channel the
  message went out on. A response to a campaign whose send is not recorded (sent before sends were
  recorded, or older than the newest ``RECENT_SENDS``) counts nothing, so a rate is responses /
  recorded sends, never above 1. Within one fold, sends count first, whatever the order events
  arrive in; a response stored before its send is recorded counts nothing.

Read by the engagement tags (``shared/segments/tags.py``: measured response rates, fatigue) and by
campaign audiences (``contact_block``). Plain types only: no storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, computed_field,
                      field_validator, model_validator)

from shared.consent import CONTACT_CHANNELS, Purpose
from shared.events import Event, EventType, format_timestamp

if TYPE_CHECKING:
    from shared.users import User

# The sends (times and campaigns) and counted responses kept per channel: enough for any cap
# (ContactCaps allows at most this many sends in a window) and for the fatigue window.
RECENT_SENDS = 20
# Fatigue: at least FATIGUE_SENDS sends on a channel in the last FATIGUE_DAYS days and no response
# on it since the first of them.
FATIGUE_SENDS = 5
FATIGUE_DAYS = 30
# Rates are only read once a channel has this many sends (fewer say nothing).
MIN_SENDS_FOR_RATE = 3

# What a reason calls one message, and several, on each channel.
MESSAGE_NOUNS = {Purpose.EMAIL: ("email", "emails"), Purpose.SMS: ("SMS", "SMS"),
                 Purpose.PUSH: ("push notification", "push notifications")}


def contact_channel(channel: Any) -> Purpose:
    """`channel` (a Channel, Purpose or text) as a contact channel; ValueError for any other."""
    value = getattr(channel, "value", channel)
    if value not in _BY_VALUE:
        raise ValueError(f"{value!r} is no contact channel: {', '.join(c.value for c in CONTACT_CHANNELS)}")
    return _BY_VALUE[value]


_BY_VALUE = {channel.value: channel for channel in CONTACT_CHANNELS}


def messages(count: int, channel: Any) -> str:
    """'1 email', '3 emails', '2 SMS', '5 push notifications'."""
    one, many = MESSAGE_NOUNS[contact_channel(channel)]
    return f"{count:,} {one if count == 1 else many}"


class ChannelLedger(BaseModel):
    """One contact channel's sends and responses."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sends: int = Field(default=0, description="Messages sent on this channel, all time (recorded sends)")
    responses: int = Field(default=0, description=(
        "Campaigns sent on this channel that the customer then responded to (any event carrying the "
        "campaign_id), each counted once, all time"))
    recent_sends: list[str] = Field(default_factory=list, description=f"Times of the newest {RECENT_SENDS} "
                                                                      "sends, newest first")
    recent_campaigns: list[str] = Field(default_factory=list, description="The campaign of each of recent_sends")
    responded: list[str] = Field(default_factory=list, description=(
        f"Campaigns already counted as a response, newest {RECENT_SENDS}"))
    last_sent_at: str | None = None
    last_response_at: str | None = None
    # Read from a stored ledger that does not validate (by hand): its sends are not known, so a cap
    # counts it as reached (contact_block) until ingest records a send on it and starts it again.
    # Kept so in the row when the ledger is rewritten for another reason (stored(); not shown).
    unreadable: bool = Field(default=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _a_campaign_for_each_send(cls, data: Any) -> Any:
        """recent_campaigns as long as recent_sends (a second writer or a hand may store one without
        the other): a send whose campaign is not known keeps its place, "", so that the next send's
        fold, which pairs them, drops none and the cap still counts every send kept."""
        if isinstance(data, dict) and isinstance(data.get("recent_sends"), list):
            campaigns = data.get("recent_campaigns")
            campaigns = campaigns if isinstance(campaigns, list) else []
            wanted = len(data["recent_sends"])
            if len(campaigns) != wanted:
                data = {**data, "recent_campaigns": [*campaigns[:wanted], *[""] * (wanted - len(campaigns))]}
        return data

    @computed_field(description="responses / sends; null with no send")  # type: ignore[prop-decorator]
    @property
    def response_rate(self) -> float | None:
        return self.responses / self.sends if self.sends else None

    def stored(self) -> dict[str, Any]:
        """What the row keeps: the fields set (no rate, no defaults)."""
        return {name: getattr(self, name) for name, spec in type(self).model_fields.items()
                if getattr(self, name) != spec.get_default(call_default_factory=True)}

    def sends_since(self, since: datetime) -> list[str]:
        """The recent sends at or after `since`, newest first."""
        return self.sends_from(format_timestamp(since))

    def sends_from(self, edge: str) -> list[str]:
        """The recent sends at or after `edge`, a time as stored (format_timestamp), newest first."""
        return [stamp for stamp in self.recent_sends if stamp >= edge]


class ContactLedger(BaseModel):
    """A customer's sends and responses per contact channel, kept at ingest."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    email: ChannelLedger = Field(default_factory=ChannelLedger)
    sms: ChannelLedger = Field(default_factory=ChannelLedger)
    push: ChannelLedger = Field(default_factory=ChannelLedger)

    @field_validator("email", "sms", "push", mode="wrap")
    @classmethod
    def _each_channel_on_its_own(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> ChannelLedger:
        """A channel that does not read costs the others nothing (an sms field by hand must not
        erase the email sends a cap counts): it alone reads as unreadable."""
        try:
            return handler(value)
        except ValidationError:
            return ChannelLedger(unreadable=True)

    @classmethod
    def unreadable_ledger(cls) -> ContactLedger:
        """A stored ledger that is not a map at all: every channel unreadable."""
        return cls(**{c.value: ChannelLedger(unreadable=True) for c in CONTACT_CHANNELS})

    def of(self, channel: Any) -> ChannelLedger:
        return getattr(self, contact_channel(channel).value)

    def channels(self) -> dict[str, ChannelLedger]:
        return {c.value: self.of(c) for c in CONTACT_CHANNELS}

    def stored(self) -> dict[str, Any]:
        """The row's ``contacts`` map: the channels with anything recorded."""
        return {name: ledger.stored() for name, ledger in self.channels().items() if ledger.sends or ledger.unreadable}


def fold_contacts(ledger: ContactLedger, events: Iterable[Event]) -> ContactLedger:
    """The ledger after adding `events`: sends first, then the responses among the rest."""
    events = list(events)
    channels = {name: {**kept.model_dump(exclude={"response_rate"}), "unreadable": kept.unreadable}
                for name, kept in ledger.channels().items()}
    sends = sorted((e for e in events if e.event_type is EventType.MESSAGE_SENT), key=lambda e: e.ts)
    for event in sends:
        state = channels[contact_channel(event.channel).value]
        state["unreadable"] = False  # a send recorded starts a channel that did not read again, from it
        state["sends"] += 1
        recent = sorted([*zip(state["recent_sends"], state["recent_campaigns"]), (event.ts, event.campaign_id)],
                        key=lambda pair: pair[0], reverse=True)[:RECENT_SENDS]
        state["recent_sends"] = [stamp for stamp, _ in recent]
        state["recent_campaigns"] = [campaign for _, campaign in recent]
        state["last_sent_at"] = max(filter(None, (state["last_sent_at"], event.ts)))
    responses = sorted((e for e in events if e.campaign_id and e.event_type is not EventType.MESSAGE_SENT),
                       key=lambda e: e.ts)
    for event in responses:
        for state in channels.values():
            if event.campaign_id in state["recent_campaigns"] and event.campaign_id not in state["responded"]:
                state["responses"] += 1
                state["responded"] = [event.campaign_id, *state["responded"]][:RECENT_SENDS]
                state["last_response_at"] = max(filter(None, (state["last_response_at"], event.ts)))
    return ContactLedger(**{name: ChannelLedger(**state) for name, state in channels.items()})


def changes_contacts(event: Event) -> bool:
    """Whether `event` may change a ledger: a send, or an event attributed to a campaign."""
    return event.event_type is EventType.MESSAGE_SENT or event.campaign_id is not None


def fatigued(ledger: ChannelLedger, now: datetime) -> bool:
    """At least FATIGUE_SENDS sends in the last FATIGUE_DAYS days and no response since the first of them."""
    return sends_while_fatigued(ledger, fatigue_edge(now)) > 0


def fatigue_edge(now: datetime) -> str:
    """Where the fatigue window starts, as stored times compare (ChannelLedger.sends_since)."""
    return format_timestamp(now - timedelta(days=FATIGUE_DAYS))


def sends_while_fatigued(ledger: ChannelLedger, edge: str) -> int:
    """The sends since `edge` (fatigue_edge) on a channel the customer is fatigued on; 0 when not
    fatigued. The edge is a parameter so the nightly run formats it once, not per customer."""
    if len(ledger.recent_sends) < FATIGUE_SENDS:  # most channels: nothing to filter
        return 0
    recent = ledger.sends_from(edge)  # newest first
    if len(recent) < FATIGUE_SENDS:
        return 0
    return len(recent) if ledger.last_response_at is None or ledger.last_response_at < recent[-1] else 0


# --- the frequency cap ---

MAX_CAP_SENDS = RECENT_SENDS  # only the newest RECENT_SENDS sends are kept to count
MAX_CAP_DAYS = 90
DEFAULT_CONTACT_CAPS = "email:2/7,sms:1/7,push:3/7"
_CAP = re.compile(r"^\s*([a-z]+)\s*:\s*(\d+)\s*/\s*(\d+)\s*$")


class ChannelCap(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_sends: int = Field(ge=0, le=MAX_CAP_SENDS)
    days: int = Field(ge=1, le=MAX_CAP_DAYS)


class ContactCaps(BaseModel):
    """At most `max_sends` messages per channel in any `days` days; a channel left out is not capped.

    Written as "email:2/7,sms:1/7,push:3/7" (count/days; count 0..20, days 1..90)."""

    model_config = ConfigDict(frozen=True)

    caps: dict[str, ChannelCap] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ContactCaps:
        caps: dict[str, ChannelCap] = {}
        for part in filter(str.strip, text.split(",")):
            match = _CAP.match(part)
            if not match:
                raise ValueError(f"{part.strip()!r}: write each cap as channel:count/days, e.g. email:2/7")
            name, count, days = match[1], int(match[2]), int(match[3])
            try:
                channel = contact_channel(name).value
            except ValueError as error:
                raise ValueError(f"{part.strip()!r}: {error}") from None
            if channel in caps:
                raise ValueError(f"{part.strip()!r}: {channel} is capped twice")
            if not 0 <= count <= MAX_CAP_SENDS:
                raise ValueError(f"{part.strip()!r}: count must be 0 to {MAX_CAP_SENDS} "
                                 f"(the newest {RECENT_SENDS} sends are kept)")
            if not 1 <= days <= MAX_CAP_DAYS:
                raise ValueError(f"{part.strip()!r}: days must be 1 to {MAX_CAP_DAYS}")
            caps[channel] = ChannelCap(max_sends=count, days=days)
        return cls(caps=caps)

    def of(self, channel: Any) -> ChannelCap | None:
        return self.caps.get(contact_channel(channel).value)

    def __str__(self) -> str:
        return ",".join(f"{name}:{cap.max_sends}/{cap.days}" for name, cap in self.caps.items())


def caps_from_text(value: Any) -> Any:
    """For a setting: text is parsed (ValueError names the part at fault); a ContactCaps passes."""
    return ContactCaps.parse(value) if isinstance(value, str) else value


def contact_block(user: User | None, channel: Any, caps: ContactCaps, now: datetime | None = None) -> str | None:
    """Why this customer may not be contacted on this channel now, or None when they may.

    "erased" (an erased customer who has not opted in since), "no email consent", or "cap reached:
    2 emails in the last 7 days". A customer known only by their events has not opted in."""
    purpose = contact_channel(channel)
    now = now or datetime.now(timezone.utc)
    if user is None or not user.consent.granted(purpose):
        # A suppression record keeps objections only: a grant on an erased customer's row came after.
        return "erased" if user is not None and user.erased_at is not None else f"no {purpose.value} consent"
    cap = caps.of(purpose)
    if cap is None:
        return None
    if cap.max_sends == 0:
        return f"cap reached: no {MESSAGE_NOUNS[purpose][1]} allowed ({purpose.value}:0/{cap.days})"
    ledger = user.contacts.of(purpose)
    if ledger.unreadable:  # its sends are not known: as at the cap, never past it unseen
        return f"cap reached: the {purpose.value} contact record does not read (until a send is recorded)"
    if len(ledger.recent_sends) < cap.max_sends:  # too few sends kept to reach the cap, whenever they were
        return None
    sent = len(ledger.sends_since(now - timedelta(days=cap.days)))
    if sent >= cap.max_sends:
        return f"cap reached: {messages(sent, purpose)} in the last {cap.days} day{'s' if cap.days != 1 else ''}"
    return None
