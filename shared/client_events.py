"""What a browser or app may send with its own token (a visitor's or a signed-in customer's).

The shop's backend sends everything on POST /events. A client's batch is held to tighter rules:
- its own id only: an event may leave user_id out (it is the token's), and one naming another id
  is refused alone;
- behaviour only: views, cart changes, clicks, searches and impressions of recommendations. Purchases and returns are refused:
  they carry money, and only the shop's backend, which took the payment, can vouch for it, so
  revenue, RFM and the bought set never count what a page claims;
  message_sent events are refused too: a send counts against the customer's contact budget
  (shared/contact.py), so only the shop's backend, which sent it, records it;
- recent: at most 7 days old (an app's offline queue), never in the future (as for every event);
- small batches (100) and a budget per token and window (shared/config.py), checked in storage.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from shared.events import Event
from shared.validation import FieldError

MAX_CLIENT_EVENTS_PER_BATCH = 100
MAX_CLIENT_EVENT_AGE = timedelta(days=7)
CLIENT_EVENT_TYPES = frozenset({"view", "add_to_cart", "remove_from_cart", "click", "search", "impression"})


def owned(raw_events: list[Any], owner: str) -> list[Any]:
    """The batch with the token's id filled in where an event leaves user_id out."""
    return [{"user_id": owner, **raw} if isinstance(raw, dict) and "user_id" not in raw else raw
            for raw in raw_events]


def client_rules(owner: str, now: datetime) -> Callable[[Event], FieldError | None]:
    """Why a valid event may not come from this client, or None."""
    oldest = now - MAX_CLIENT_EVENT_AGE

    def refusal(event: Event) -> FieldError | None:
        if event.user_id != owner:
            return FieldError("user_id", f"a token sends events of its own id only ({owner!r})")
        if event.event_type.value not in CLIENT_EVENT_TYPES:
            return FieldError("event_type", f"{event.event_type.value} events come from the shop's backend "
                                            f"(POST /events, signed); a browser or app sends "
                                            f"{', '.join(sorted(CLIENT_EVENT_TYPES))}")
        if event.timestamp < oldest:
            return FieldError("timestamp", "a browser or app may send events at most 7 days old")
        return None

    return refusal
