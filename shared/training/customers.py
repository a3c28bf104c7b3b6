"""Statistics of the customer base that segmentation compares each customer with.

Computed at training time over every customer who may be personalized, stored in the model
artifact, so that one customer's tags can be computed on request against the same thresholds
the nightly run used.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from shared.users import PurchaseSummary

QUINTILES = [20, 40, 60, 80]
SPEND_PERCENTILES = [50, 80, 95]


def customer_statistics(summaries: list[PurchaseSummary], now: datetime) -> dict[str, Any]:
    """Quintile edges of recency (days), frequency and spend (per currency), spend percentiles,
    over the customers who bought something."""
    summaries = [s for s in summaries if s.last_purchase_at]
    if not summaries:
        return {"customers": 0, "as_of": now.isoformat()}
    recency = np.array([(now - _moment(s.last_purchase_at)).total_seconds() / 86_400 for s in summaries])
    frequency = np.array([s.purchase_count for s in summaries], dtype=float)
    spend_by_currency: dict[str, list[float]] = {}
    for summary in summaries:
        for currency, amount in summary.spend.items():
            spend_by_currency.setdefault(currency, []).append(float(amount))
    return {
        "customers": len(summaries),
        "as_of": now.isoformat(),
        "recency_days_quintiles": _edges(recency, QUINTILES),
        "frequency_quintiles": _edges(frequency, QUINTILES),
        "spend_quintiles": {c: _edges(np.array(v), QUINTILES) for c, v in spend_by_currency.items()},
        "spend_percentiles": {c: dict(zip(map(str, SPEND_PERCENTILES), _edges(np.array(v), SPEND_PERCENTILES)))
                              for c, v in spend_by_currency.items()},
    }


def _edges(values: np.ndarray, percentiles: list[int]) -> list[float]:
    return [round(float(v), 4) for v in np.percentile(values, percentiles)]


def _moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
