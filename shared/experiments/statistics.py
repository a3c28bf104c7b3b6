"""Results of an experiment that stay honest when someone looks every day.

A fixed-horizon test read daily and stopped at the first "significant" day finds a difference
that is not there far more often than its stated 5 % (about one A/A test in four over a month of
daily looks: tests/unit/test_experiment_statistics.py measures it). The service instead reports
always-valid results, the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and
Walsh ("Always valid inference", 2017; Optimizely's Stats Engine): for the difference theta between a
variant and the control, with its estimate's variance V, and a normal mixture N(0, tau^2) over
the effects worth finding,

    likelihood ratio  L = sqrt(V / (V + tau^2)) * exp(tau^2 * theta_hat^2 / (2 V (V + tau^2)))
    p-value           p = min over the looks so far of 1 / L (never rises)
    interval          theta_hat +- sqrt(V (V + tau^2) / tau^2 * log((V + tau^2) / (V alpha^2)))

Both hold at every look at once: the chance that an A/A experiment ever shows p <= alpha, however
often it is read, is at most alpha. The price is width: early intervals are wider than a fixed
test's. tau is set from the control's own level (MIXTURE_SHARE of it), so the test is most
sensitive to effects of about that relative size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # the stated false-positive level: an A/A experiment ever shows p <= ALPHA at most this often
MIXTURE_SHARE = 0.2  # tau: a fifth of the control's level, the size of effect the test looks for
Z_95 = 1.959964  # the per-variant intervals (a variant alone, not a comparison)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"low": round(self.low, 6), "high": round(self.high, 6)}


@dataclass(frozen=True)
class Comparison:
    """A variant against the control on one measure: the difference, its always-valid interval
    and p-value, and the relative lift (difference over the control's level)."""

    difference: float
    interval: Interval
    p_value: float
    lift: float | None

    @property
    def significant(self) -> bool:
        return self.p_value <= ALPHA

    def as_dict(self) -> dict[str, object]:
        return {"difference": round(self.difference, 6), "interval": self.interval.as_dict(),
                "p_value": round(self.p_value, 6), "lift": None if self.lift is None else round(self.lift, 4),
                "significant": self.significant}


def msprt(difference: float | np.ndarray, variance: float | np.ndarray, tau: float | np.ndarray,
          alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(1 / likelihood ratio, interval half-width) of one look: arrays in, arrays out, so a
    simulation scores thousands of experiments at once. Zero variance (no data yet) gives p = 1 and
    an infinite half-width."""
    difference, variance = np.asarray(difference, float), np.asarray(variance, float)
    tau2 = np.asarray(tau, float) ** 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = tau2 * difference**2 / (2 * variance * (variance + tau2))
        log_ratio = 0.5 * np.log(variance / (variance + tau2)) + exponent
        p = np.where(variance > 0, np.minimum(1.0, np.exp(-log_ratio)), 1.0)
        half = np.sqrt(variance * (variance + tau2) / tau2 * np.log((variance + tau2) / (variance * alpha**2)))
    return p, np.where(variance > 0, half, np.inf)


def proportion(successes: int, trials: int) -> tuple[float, float]:
    """Rate and its estimate's variance."""
    if trials <= 0:
        return 0.0, 0.0
    rate = successes / trials
    return rate, rate * (1 - rate) / trials


def mean_and_variance(total: float, total_of_squares: float, count: int) -> tuple[float, float]:
    """A per-customer mean (e.g. revenue per exposed customer, zeros included) and its estimate's variance."""
    if count <= 1:
        return (total / count if count else 0.0), 0.0
    mean = total / count
    spread = max(total_of_squares - count * mean**2, 0.0) / (count - 1)
    return mean, spread / count


def rate_interval(rate: float, variance: float) -> Interval:
    half = Z_95 * math.sqrt(variance)
    return Interval(rate - half, rate + half)


def compare(variant: tuple[float, float], control: tuple[float, float], previous_p: float = 1.0,
            alpha: float = ALPHA) -> Comparison:
    """`variant` and `control`: (estimate, variance of the estimate). `previous_p`: the lowest
    p-value of the earlier looks, which the always-valid p-value never rises above."""
    difference = variant[0] - control[0]
    variance = variant[1] + control[1]
    tau = max(abs(control[0]) * MIXTURE_SHARE, 1e-9)
    p, half = msprt(difference, variance, tau, alpha)
    return Comparison(difference, Interval(difference - float(half), difference + float(half)),
                      min(float(p), previous_p), difference / control[0] if control[0] else None)
