"""Fitting BG/NBD and Gamma-Gamma by maximum likelihood, nightly, over the whole customer base.

The predictions are in `shared/segments/clv.py` (plain Python, for the Segments function); this
module only finds the parameters, with scipy, and is run by `customer_statistics` at training.

Both fits maximise the log-likelihood over log-parameters (so every parameter stays positive),
bounded to [e^-LOG_BOUND, e^LOG_BOUND], with L-BFGS-B (finished by Nelder-Mead where its line
search gives up) from several starting points; the best converged one is kept. A fit is refused, and its parameters left out of the statistics (the
CLV tags are then absent, never guessed), when there are too few customers to fit, when no
start converges, or when the optimum sits on a bound (a degenerate fit: e.g. no customer ever
seems to drop out, b -> infinity). Gamma-Gamma also needs q > 1 for an expected order value.

Times are rescaled so that the oldest customer's T is 10 (as lifetimes does) for a well
conditioned optimisation, then α is given back in days.

tests/unit/test_clv_fit.py checks the parameters and predictions against the lifetimes library
on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln

LOG_BOUND = 12.0  # parameters within [6e-6, 1.6e5]
AT_BOUND = 1e-3  # an optimum this close to a bound (in log) is degenerate
MIN_CUSTOMERS = 50  # BG/NBD: customers with at least one order
MIN_REPEAT_CUSTOMERS = 20  # BG/NBD and Gamma-Gamma: customers with a repeat order (and, for GG, a positive value)
BG_NBD_STARTS = ((1.0, 1.0, 1.0, 1.0), (0.5, 2.0, 0.5, 2.0), (2.0, 5.0, 2.0, 5.0))
GAMMA_GAMMA_STARTS = ((1.0, 2.0, 1.0), (5.0, 5.0, 5.0), (2.0, 10.0, 50.0))


@dataclass(frozen=True)
class Fit:
    """Parameters (None when refused), why not, and how many customers it was fitted on."""

    parameters: dict[str, float] | None
    customers: int
    reason: str = ""
    log_likelihood: float | None = None

    def as_statistics(self) -> dict[str, Any]:
        if self.parameters is None:
            return {"customers": self.customers, "refused": self.reason}
        return {**{k: round(v, 8) for k, v in self.parameters.items()}, "customers": self.customers,
                "log_likelihood": round(self.log_likelihood or 0.0, 4)}


def bg_nbd_log_likelihood(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray,
                          weights: np.ndarray) -> float:
    """Fader, Hardie and Lee (2005) eq. (6), summed over customers."""
    r, alpha, a, b = np.exp(log_params)
    common = (gammaln(r + x) - gammaln(r) + r * np.log(alpha)
              + betaln(a, b + x) - betaln(a, b))
    alive = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    dropped = np.full_like(x, -np.inf)
    dropped[repeat] = (np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat]))
    return float(np.sum(weights * (common + np.logaddexp(alive, dropped))))


def gamma_gamma_log_likelihood(log_params: np.ndarray, x: np.ndarray, m: np.ndarray, weights: np.ndarray) -> float:
    """Fader and Hardie (2013): the density of the mean m of x order values, summed over customers."""
    p, q, v = np.exp(log_params)
    px = p * x
    return float(np.sum(weights * (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
                                   + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(x * m + v))))


def _maximise(log_likelihood, starts: tuple[tuple[float, ...], ...], names: tuple[str, ...]
              ) -> tuple[np.ndarray | None, float, str]:
    best, best_ll, reason = None, -np.inf, "no start converged"
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(names)
    for start in starts:
        def objective(theta: np.ndarray) -> float:
            value = -log_likelihood(theta)
            return value if np.isfinite(value) else 1e300

        with np.errstate(all="ignore"):
            result = minimize(objective, np.log(np.array(start)), method="L-BFGS-B", bounds=bounds,
                              options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9})
            if not result.success:
                # On a flat ridge (e.g. a and b growing together: the same dropout chance for
                # everyone) the line search of a numerical gradient gives up near the optimum;
                # Nelder-Mead, which needs no gradient, finishes from there.
                result = minimize(objective, result.x, method="Nelder-Mead", bounds=bounds,
                                  options={"maxiter": 4000, "maxfev": 4000, "xatol": 1e-8, "fatol": 1e-10})
        if not np.isfinite(result.fun) or result.fun >= 1e300:
            continue
        if result.success and -result.fun > best_ll:
            best, best_ll = result.x, -result.fun
    if best is None:
        return None, best_ll, reason
    at_bound = [name for name, value in zip(names, best) if abs(abs(value) - LOG_BOUND) < AT_BOUND]
    if at_bound:
        return None, best_ll, f"degenerate: {', '.join(at_bound)} at a bound"
    return best, best_ll, ""


def _aggregate(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Identical customers once, with a weight: many one-order customers share (0, 0, T)."""
    stacked = np.column_stack(columns)
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return [unique[:, i] for i in range(unique.shape[1])], counts.astype(float)


def fit_bg_nbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> Fit:
    """x: repeat orders, t_x: days from first to last order, T: days since the first order."""
    x, t_x, T = (np.asarray(c, dtype=float) for c in (x, t_x, T))
    valid = np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T) & (x >= 0) & (t_x >= 0) & (T >= t_x)
    x, t_x, T = x[valid], t_x[valid], T[valid]
    customers, repeat = len(x), int(np.sum(x > 0))
    if customers < MIN_CUSTOMERS or repeat < MIN_REPEAT_CUSTOMERS:
        return Fit(None, customers, f"too few customers: {customers} with an order, {repeat} with a repeat order "
                                    f"(needs {MIN_CUSTOMERS} and {MIN_REPEAT_CUSTOMERS})")
    scale = 10.0 / max(float(T.max()), 1e-9)
    (ux, ut_x, uT), weights = _aggregate(x, t_x * scale, T * scale)
    if float(uT.max()) <= 0:
        return Fit(None, customers, "every customer bought for the first time just now")
    best, ll, reason = _maximise(lambda theta: bg_nbd_log_likelihood(theta, ux, ut_x, uT, weights),
                                 BG_NBD_STARTS, ("r", "alpha", "a", "b"))
    if best is None:
        return Fit(None, customers, reason)
    r, alpha, a, b = (float(v) for v in np.exp(best))
    parameters = {"r": r, "alpha": alpha / scale, "a": a, "b": b}
    # The log-likelihood in days (rescaling moves it by a constant, not the optimum), so that
    # fits of different nights compare.
    in_days = bg_nbd_log_likelihood(np.log([r, alpha / scale, a, b]), x, t_x, T, np.ones_like(x))
    return Fit(parameters, customers, "", in_days)


def fit_gamma_gamma(x: np.ndarray, monetary: np.ndarray) -> Fit:
    """x: repeat orders; monetary: average order value. Customers without a repeat order, or whose
    net value is not above zero (returns), are left out: the model is for positive values."""
    x, m = np.asarray(x, dtype=float), np.asarray(monetary, dtype=float)
    keep = np.isfinite(x) & np.isfinite(m) & (x > 0) & (m > 0)
    x, m = x[keep], m[keep]
    customers = len(x)
    if customers < MIN_REPEAT_CUSTOMERS:
        return Fit(None, customers, f"too few repeat customers with a positive value: {customers} "
                                    f"(needs {MIN_REPEAT_CUSTOMERS})")
    (ux, um), weights = _aggregate(x, m)
    best, ll, reason = _maximise(lambda theta: gamma_gamma_log_likelihood(theta, ux, um, weights),
                                 GAMMA_GAMMA_STARTS, ("p", "q", "v"))
    if best is None:
        return Fit(None, customers, reason)
    p, q, v = (float(value) for value in np.exp(best))
    if q <= 1:
        return Fit(None, customers, f"q = {q:.3f} <= 1: no finite expected order value")
    return Fit({"p": p, "q": q, "v": v}, customers, "", ll)
