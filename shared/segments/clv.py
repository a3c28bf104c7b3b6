"""Customer lifetime value: BG/NBD for how many orders, Gamma-Gamma for what an order is worth.

Plain Python (the `math` module only): the Segments function predicts on request and ships no
numpy or scipy. The parameters are fitted nightly over the whole customer base by
`shared/training/clv_fit.py` (scipy) and come here through statistics.json.

Per customer, from the purchase summary, in days:

- x, *frequency*: repeat orders, ``orders - 1`` (orders are distinct order ids, not lines);
- t_x, *recency*: days from the first to the last purchase;
- T, *age*: days from the first purchase to now;
- m, *monetary*: average order value, ``net spend / orders`` in the customer's main currency.
  Gamma-Gamma's m is, strictly, the mean of the x repeat orders; the summary keeps no per-order
  amounts, so the mean of all orders stands for it (the usual approximation when only totals are
  kept). Net spend is after returns: a customer whose returns cancel their purchases has no m.

Models and formulas:

- BG/NBD (Fader, Hardie and Lee, "Counting your customers the easy way", Marketing Science
  2005): while alive a customer orders at a Poisson rate λ ~ Gamma(r, α); after each order they
  drop out with probability p ~ Beta(a, b). `expected_orders` is their equation (10), the
  conditional expectation of orders in the next t days; `probability_alive` is equation (11)'s
  P(alive | x, t_x, T). A customer with one order (x = 0) cannot have dropped out yet in this
  model: P(alive) = 1, which is why churn risk is only told for repeat customers.
- Gamma-Gamma (Fader and Hardie, "The Gamma-Gamma model of monetary value", 2013): order values
  vary around a customer's mean ~ Gamma(p, ν), ν ~ Gamma(q, γ);
  E[M | x, m] = p (γ + x m) / (p x + q - 1), which needs q > 1. A customer with no repeat order
  gets the population mean p γ / (q - 1). (γ is lifetimes' ``v``.)
- CLV over a horizon: expected orders x expected order value, undiscounted (90 days is short:
  at a 1% monthly discount rate the difference is under 2%).

The hypergeometric function of equation (10) is summed as a series after Euler's
transformation, which leaves numerator parameters that do not grow with x: fast and stable for
customers with hundreds of orders (see `_bracket`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

HORIZON_DAYS = 90
SERIES_TOLERANCE = 1e-12
SERIES_MAX_TERMS = 200_000
CANCELLATION_LIMIT = 1e6  # the largest term at most this many times the result: 10 digits left


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    v: float

    @property
    def population_mean(self) -> float:
        return self.p * self.v / (self.q - 1)


@dataclass(frozen=True)
class Prediction:
    orders: float  # expected orders in the horizon
    alive: float  # probability the customer is still active
    order_value: float | None  # expected average order value (None without Gamma-Gamma or m)
    horizon_days: int

    @property
    def value(self) -> float | None:
        return None if self.order_value is None else self.orders * self.order_value


def bg_nbd_from(statistics: dict[str, Any]) -> BgNbd | None:
    """The fitted BG/NBD parameters in a statistics dict; None when they are absent (older
    statistics.json, a fit that failed) or not usable."""
    fitted = (statistics.get("clv") or {}).get("bg_nbd")
    try:
        model = BgNbd(*(float(fitted[k]) for k in ("r", "alpha", "a", "b")))
    except (TypeError, KeyError, ValueError):
        return None
    values = (model.r, model.alpha, model.a, model.b)
    return model if all(math.isfinite(v) and v > 0 for v in values) else None


def gamma_gamma_from(statistics: dict[str, Any], currency: str | None) -> GammaGamma | None:
    fitted = ((statistics.get("clv") or {}).get("gamma_gamma") or {}).get(currency or "")
    try:
        model = GammaGamma(*(float(fitted[k]) for k in ("p", "q", "v")))
    except (TypeError, KeyError, ValueError):
        return None
    values = (model.p, model.q, model.v)
    return model if all(math.isfinite(v) for v in values) and model.p > 0 and model.q > 1 and model.v > 0 else None


def _log1p_exp(u: float) -> float:
    """log(1 + e^u) without overflow."""
    return u + math.log1p(math.exp(-u)) if u > 0 else math.log1p(math.exp(u))


def _log_odds_dead(model: BgNbd, x: float, t_x: float, T: float) -> float | None:
    """log of a/(b+x-1) ((α+T)/(α+t_x))^(r+x): P(alive) = 1 / (1 + e^this); None for x = 0."""
    if x <= 0:
        return None
    return (math.log(model.a) - math.log(model.b + x - 1)
            + (model.r + x) * (math.log(model.alpha + T) - math.log(model.alpha + t_x)))


def probability_alive(model: BgNbd, x: float, t_x: float, T: float) -> float:
    """P(alive | x, t_x, T), Fader, Hardie and Lee (2005) eq. (11)."""
    log_odds = _log_odds_dead(model, x, t_x, T)
    return 1.0 if log_odds is None else math.exp(-_log1p_exp(log_odds))


def _bracket(model: BgNbd, x: float, T: float, t: float) -> float:
    """[1 - ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)] / (a-1), z = t/(α+T+t).

    Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) turns the
    product into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose numerator parameters do not
    grow with x. With ε = a-1 and F = 2F1(A', ε; C; z):
    [1 - (1-z)^ε F] / ε = [1 - (1-z)^ε] / ε - (1-z)^ε (F - 1) / ε, both finite as ε -> 0.
    When r is far above a + b (nearly equal order rates across customers), A' is a large negative
    number and that series cancels: the untransformed one, all of whose terms are positive, is
    summed instead, in logarithms.
    """
    A, eps, C = model.a + model.b - 1 - model.r, model.a - 1, model.a + model.b + x - 1
    log_1mz = math.log(model.alpha + T) - math.log(model.alpha + T + t)
    z = t / (model.alpha + T + t)
    first = -math.expm1(eps * log_1mz) / eps if eps != 0 else -log_1mz
    # (F - 1) / ε = Σ_{n>=1} (A)_n (ε+1)_{n-1} z^n / ((C)_n n!)
    term = A * z / C
    total, largest, n = term, abs(term), 1
    while abs(term) > SERIES_TOLERANCE * max(abs(total), 1e-300) and n < SERIES_MAX_TERMS:
        term *= (A + n) * (eps + n) / ((C + n) * (n + 1)) * z
        total += term
        largest = max(largest, abs(term))
        n += 1
    scale = math.exp(eps * log_1mz)
    result = first - scale * total
    if largest * scale <= CANCELLATION_LIMIT * abs(result) or eps == 0:
        return result
    return _bracket_positive_terms(model, x, log_1mz, z)


def _bracket_positive_terms(model: BgNbd, x: float, log_1mz: float, z: float) -> float:
    """The same bracket from the untransformed series 2F1(r+x, b+x; a+b+x-1; z), every term
    positive, summed in logarithms (its terms may pass 1e308 before (1-z)^(r+x) brings them down)."""
    A, B, C = model.r + x, model.b + x, model.a + model.b + x - 1
    log_term, log_total, n = 0.0, 0.0, 0
    log_z = math.log(z) if z > 0 else -math.inf
    while n < SERIES_MAX_TERMS:
        ratio = (A + n) * (B + n) / ((C + n) * (n + 1))
        log_term += math.log(ratio) + log_z
        log_total = _log_add(log_total, log_term)
        n += 1
        if log_term < log_total + math.log(SERIES_TOLERANCE) and ratio * z < 1:
            break
    return -math.expm1(A * log_1mz + log_total) / (model.a - 1)


def _log_add(u: float, v: float) -> float:
    high, low = max(u, v), min(u, v)
    return high if low == -math.inf else high + math.log1p(math.exp(low - high))


def expected_orders(model: BgNbd, x: float, t_x: float, T: float, t: float = HORIZON_DAYS) -> float:
    """E[orders in (T, T+t] | x, t_x, T], Fader, Hardie and Lee (2005) eq. (10)."""
    if model.a + model.b + x - 1 <= 0:  # the series' C: only for parameters no fit would give
        return math.nan
    numerator = (model.a + model.b + x - 1) * _bracket(model, x, T, t)
    log_odds = _log_odds_dead(model, x, t_x, T)
    return numerator if log_odds is None else numerator * math.exp(-_log1p_exp(log_odds))


def expected_order_value(model: GammaGamma, x: float, monetary: float | None) -> float | None:
    """E[M | x, m], Fader and Hardie (2013); the population mean for a customer without repeat
    orders; None for a customer whose net spend is not above zero."""
    if monetary is None or not monetary > 0:
        return None
    if x <= 0:
        return model.population_mean
    return model.p * (model.v + x * monetary) / (model.p * x + model.q - 1)


def predict(bg_nbd: BgNbd, gamma_gamma: GammaGamma | None, orders: int, recency_days: float, tenure_days: float,
            net_spend: float | None, horizon_days: int = HORIZON_DAYS) -> Prediction | None:
    """A customer's prediction from summary figures: `orders` (>= 1), days since the last and the
    first purchase, net spend in their main currency. None when the numbers do not make sense."""
    if orders < 1 or recency_days is None or tenure_days is None:
        return None
    T = max(tenure_days, 0.0)
    t_x = min(max(T - recency_days, 0.0), T)
    x = orders - 1
    expected = expected_orders(bg_nbd, x, t_x, T, horizon_days)
    if not math.isfinite(expected) or expected < 0:
        return None
    monetary = net_spend / orders if net_spend is not None else None
    value = expected_order_value(gamma_gamma, x, monetary) if gamma_gamma else None
    return Prediction(expected, probability_alive(bg_nbd, x, t_x, T), value, horizon_days)
