"""A customer's history row: what serving, segmentation and the benchmarks read of an event.

Kept apart from the ALS code (shared/serving/model.py) and its numpy, scipy and implicit, so
that code which only counts purchases, like the Segments function, does not ship them.
"""

from __future__ import annotations

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
