"""The experiment results' statistics, proven by simulation: a real 20 % better variant is found,
and A/A experiments looked at every day stay under the stated false-positive level."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.experiments.statistics import ALPHA, MIXTURE_SHARE, compare, mean_and_variance, msprt, proportion

DAYS = 30
RUNS = 2000


def daily_looks(rates: tuple[float, float], per_day: int, runs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (trials, conversions) of control and variant after each day: (runs, days, 2) each."""
    rng = np.random.default_rng(seed)
    trials = np.cumsum(np.full((runs, DAYS, 2), per_day), axis=1)
    conversions = np.cumsum(rng.binomial(per_day, rates, size=(runs, DAYS, 2)), axis=1)
    return trials, conversions


def always_valid_p(trials: np.ndarray, conversions: np.ndarray) -> np.ndarray:
    """The service's p-value after each day (running minimum of each look's), for many runs at once."""
    rates = conversions / trials
    variances = rates * (1 - rates) / trials
    difference = rates[..., 1] - rates[..., 0]
    p, _ = msprt(difference, variances.sum(axis=-1), np.maximum(rates[..., 0] * MIXTURE_SHARE, 1e-9))
    return np.minimum.accumulate(p, axis=1)


def naive_p(trials: np.ndarray, conversions: np.ndarray) -> np.ndarray:
    rates = conversions / trials
    pooled = conversions.sum(axis=-1) / trials.sum(axis=-1)
    z = (rates[..., 1] - rates[..., 0]) / np.sqrt(pooled * (1 - pooled) * (1 / trials[..., 0] + 1 / trials[..., 1]))
    return np.vectorize(lambda value: math.erfc(abs(value) / math.sqrt(2)))(z)


def test_aa_experiments_read_every_day_stay_under_the_stated_false_positive_level():
    trials, conversions = daily_looks((0.05, 0.05), per_day=1000, runs=RUNS, seed=1)

    ever_significant = (always_valid_p(trials, conversions) <= ALPHA).any(axis=1).mean()
    peeking_fixed_test = (naive_p(trials, conversions) <= ALPHA).any(axis=1).mean()

    assert ever_significant <= ALPHA  # at most 5 % of A/A runs ever show a winner, over 30 daily looks
    # The reason for the method: a fixed-horizon test read daily is fooled several times as often.
    assert peeking_fixed_test > 3 * ALPHA


def test_a_variant_that_truly_converts_20_percent_better_is_found():
    trials, conversions = daily_looks((0.05, 0.06), per_day=1000, runs=200, seed=2)

    p = always_valid_p(trials, conversions)

    found = (p[:, -1] <= ALPHA).mean()
    assert found >= 0.8  # 30 days of 1,000 customers a day per variant: found in at least 4 runs of 5
    first_day = np.argmax(p <= ALPHA, axis=1)[p[:, -1] <= ALPHA]
    assert np.median(first_day) < DAYS - 1  # and usually before the month is over


def test_the_interval_covers_the_true_difference_at_every_look():
    trials, conversions = daily_looks((0.05, 0.06), per_day=500, runs=500, seed=3)
    rates = conversions / trials
    variances = (rates * (1 - rates) / trials).sum(axis=-1)
    difference = rates[..., 1] - rates[..., 0]
    _, half = msprt(difference, variances, rates[..., 0] * MIXTURE_SHARE)
    missed_ever = (np.abs(difference - 0.01) > half).any(axis=1).mean()
    assert missed_ever <= ALPHA


def test_one_comparison_reads_as_a_marketer_expects():
    control, variant = proportion(500, 10_000), proportion(650, 10_000)
    result = compare(variant, control)
    assert result.difference == pytest.approx(0.015)
    assert result.lift == pytest.approx(0.3)
    assert result.significant and result.interval.low > 0 and result.interval.high < 0.03
    # No data yet: no claim.
    empty = compare(proportion(0, 0), proportion(0, 0))
    assert empty.p_value == 1 and not empty.significant and empty.lift is None
    # A p-value never rises once seen lower: the test is sequential.
    assert compare(proportion(500, 10_000), control, previous_p=0.01).p_value == 0.01


def test_revenue_per_exposed_customer_counts_those_who_bought_nothing():
    spend = np.array([0.0] * 90 + [50.0] * 10)
    mean, variance = mean_and_variance(float(spend.sum()), float((spend**2).sum()), len(spend))
    assert mean == pytest.approx(5.0)
    assert variance == pytest.approx(spend.var(ddof=1) / len(spend))
