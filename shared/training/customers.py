"""Statistics of the customer base that segmentation compares each customer with.

Computed at training time over every customer who may be profiled (consent to profiling), stored in the model
artifact (and statistics.json beside it), so that one customer's tags can be computed on request
against the same thresholds and CLV parameters the nightly run used.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np

from shared.observability import logger
from shared.segments import clv
from shared.segments.features import PurchaseFigures, purchase_figures
from shared.training.clv_fit import fit_bg_nbd, fit_gamma_gamma
from shared.users import PurchaseSummary

QUINTILES = [20, 40, 60, 80]
SPEND_PERCENTILES = [50, 80, 95]
# CLV tiers (shared/segments/tags.py): top 10%, the next 20% (High), the next 30% (Medium), the rest.
CLV_PERCENTILES = [40, 70, 90]


def customer_statistics(summaries: list[PurchaseSummary], now: datetime) -> dict[str, Any]:
    """Quintile edges of recency (days), frequency (orders) and net spend (per currency), spend
    percentiles, over the customers who bought something; and the CLV models fitted over them."""
    summaries = [s for s in summaries if s.last_purchase_at]
    if not summaries:
        return {"customers": 0, "as_of": now.isoformat()}
    figures = [purchase_figures(s, now) for s in summaries]
    recency = np.array([f.recency_days for f in figures])
    frequency = np.array([f.orders for f in figures], dtype=float)
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
        "clv": clv_statistics(figures),
    }


def clv_statistics(figures: list[PurchaseFigures]) -> dict[str, Any]:
    """BG/NBD over every buyer, Gamma-Gamma per main currency, and the percentiles of the
    predicted value over the horizon that the CLV tiers read. What could not be fitted is left
    out with its reason; the tags then leave CLV out (never a crash, never a made-up value)."""
    buyers = [f for f in figures if f.orders >= 1 and f.tenure_days is not None and f.recency_days is not None]
    x = np.array([f.orders - 1 for f in buyers], dtype=float)
    T = np.array([max(f.tenure_days, 0.0) for f in buyers])
    t_x = np.clip(T - np.array([f.recency_days for f in buyers]), 0.0, T) if buyers else np.array([])
    result: dict[str, Any] = {"horizon_days": clv.HORIZON_DAYS}
    bg_fit = fit_bg_nbd(x, t_x, T)
    result["bg_nbd"] = bg_fit.as_statistics()
    if bg_fit.parameters is None:
        logger.warning("BG/NBD not fitted: no CLV, probability alive or churn risk tags", extra={"reason": bg_fit.reason})
        return result
    result["gamma_gamma"] = {}
    by_currency: dict[str, list[PurchaseFigures]] = {}
    for f in buyers:
        if f.currency:
            by_currency.setdefault(f.currency, []).append(f)
    for currency, group in sorted(by_currency.items()):
        fit = fit_gamma_gamma(np.array([f.orders - 1 for f in group], dtype=float),
                              np.array([f.monetary / f.orders for f in group]))
        result["gamma_gamma"][currency] = fit.as_statistics()
        if fit.parameters is None:
            logger.warning("Gamma-Gamma not fitted: no CLV tiers in this currency",
                           extra={"currency": currency, "reason": fit.reason})
    bg_nbd = clv.bg_nbd_from({"clv": result})
    percentiles = {}
    for currency, group in sorted(by_currency.items()):
        gamma_gamma = clv.gamma_gamma_from({"clv": result}, currency)
        if bg_nbd is None or gamma_gamma is None:
            continue
        values = [p.value for f in group
                  if (p := clv.predict(bg_nbd, gamma_gamma, f.orders, f.recency_days, f.tenure_days, f.monetary))
                  and p.value is not None and math.isfinite(p.value)]
        if values:
            percentiles[currency] = dict(zip(map(str, CLV_PERCENTILES), _edges(np.array(values), CLV_PERCENTILES)))
    result["value_percentiles"] = percentiles
    return result


def _edges(values: np.ndarray, percentiles: list[int]) -> list[float]:
    return [round(float(v), 4) for v in np.percentile(values, percentiles)]
