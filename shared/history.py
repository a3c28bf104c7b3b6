"""A customer's history row: what serving, segmentation and the benchmarks read of an event.

Kept apart from the ALS code (shared/serving/model.py) and its numpy, scipy and implicit, so
that code which only counts purchases, like the Segments function, does not ship them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)  # the nightly run holds one per event: no __dict__ each
class HistoryEvent:
    item_id: str
    event_type: str
    quantity: int
    timestamp: float  # seconds since the epoch
    channel: str | None = None
    price: float | None = None
    currency: str | None = None
    campaign_id: str | None = None
    discount: bool = False


# The nightly run holds histories as columns (shared/history_columns.py, which brings numpy); these
# read them there without an object per event, and read lists, as the functions without numpy hold
# them, event by event.

def purchased_item_ids(histories: Mapping[str, Sequence[HistoryEvent]]) -> dict[str, list[str]]:
    """Each customer's purchased item ids, newest first ([] for none)."""
    if (from_columns := getattr(histories, "item_ids_of", None)) is not None:
        return from_columns("purchase")
    return {user_id: [e.item_id for e in history if e.event_type == "purchase"]
            for user_id, history in histories.items()}


def customers_with(histories: Mapping[str, Sequence[HistoryEvent]],
                   item_ids: Collection[str]) -> Mapping[str, Sequence[HistoryEvent]]:
    """The histories of the customers with an event naming one of these items (lists: all of them)."""
    narrowed = getattr(histories, "of_customers_with", None)
    return narrowed(item_ids) if narrowed is not None else histories
