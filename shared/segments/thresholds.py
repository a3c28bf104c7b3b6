"""What statistics.json must hold for the tags to read it: the thresholds they compare with,
whole (shared/training/customers.py writes them; shared/segments/tags.py and batch.py read them)."""

from __future__ import annotations

import math
from typing import Any

from shared.segments.tags import CLV_TIERS, VALUE_TIERS

QUINTILE_EDGES = 4


def check_thresholds(statistics: dict[str, Any]) -> None:
    """ValueError, naming the part, unless every threshold the tags compare with is there whole:
    a quintile list of four finite numbers, a percentile map with each key a tier reads. Tags index
    them without a check (for 100,000 customers a night), so a statistics.json that lacks one (by
    hand, or cut) is refused where it is read, not in every customer's tags."""
    both = ("recency_days_quintiles", "frequency_quintiles")
    rfm = [key for key in both if key in statistics]
    if len(rfm) == 1:
        raise ValueError(f"{rfm[0]} without {next(key for key in both if key not in rfm)}")
    for key in rfm:
        _edges(statistics[key], key)
    for currency, edges in _mapping(statistics.get("spend_quintiles", {}), "spend_quintiles").items():
        _edges(edges, f"spend_quintiles.{currency}")
    _percentiles(statistics.get("spend_percentiles", {}), "spend_percentiles", [key for _, key, _ in VALUE_TIERS])
    clv = _mapping(statistics.get("clv") or {}, "clv")
    _percentiles(clv.get("value_percentiles") or {}, "clv.value_percentiles", [key for _, key, _ in CLV_TIERS])
    horizon = clv.get("horizon_days")  # none, or 0: the default's (tags.clv_horizon)
    if horizon and not (type(horizon) is int and 0 < horizon <= MAX_HORIZON_DAYS):
        raise ValueError(f"clv.horizon_days is not a whole number of days from 1 to {MAX_HORIZON_DAYS}")


# A prediction's horizon, at most: a century. Training writes 90 days; a negative one (by hand)
# would take a logarithm of a negative number in every repeat buyer's CLV.
MAX_HORIZON_DAYS = 36_500


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not a map")
    return value


def _number(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is not a finite number")


def _edges(value: Any, where: str) -> None:
    if not isinstance(value, list) or len(value) != QUINTILE_EDGES:
        raise ValueError(f"{where} is not a list of {QUINTILE_EDGES} edges")
    for n, edge in enumerate(value):
        _number(edge, f"{where}[{n}]")


def _percentiles(value: Any, where: str, keys: list[str]) -> None:
    for currency, percentiles in _mapping(value, where).items():
        for key in keys:
            _number(_mapping(percentiles, f"{where}.{currency}").get(key), f"{where}.{currency}.{key}")
