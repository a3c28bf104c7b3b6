"""Our BG/NBD and Gamma-Gamma fits and predictions agree with the lifetimes library on the same data.

lifetimes (Cameron Davidson-Pilon's reference implementation of Fader and Hardie's models) is
installed for the tests only (pyproject.toml, the dev extra); nothing deployed imports it.
Tolerance: parameters and predicted orders within 0.1% relative of lifetimes' (they agree to
about 1e-6 in practice: both are the same maximum of the same likelihood).
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas
import pytest

from shared.segments import clv
from shared.training.clv_fit import fit_bg_nbd, fit_gamma_gamma
from shared.training.customers import customer_statistics
from shared.users import PurchaseSummary
from tests.clv_data import TRUE_BG_NBD, TRUE_GAMMA_GAMMA, bg_nbd_customers, order_values

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lifetimes import BetaGeoFitter, GammaGammaFitter  # noqa: E402
    from lifetimes.datasets import load_cdnow_summary, load_cdnow_summary_data_with_monetary_value  # noqa: E402

TOLERANCE = 1e-3  # relative, parameters and predictions
# Fader, Hardie and Lee (2005), table 1: the BG/NBD fit to CDNOW's 2,357 customers (weeks).
PUBLISHED_CDNOW = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def relative(ours: dict[str, float], theirs) -> dict[str, float]:
    return {k: abs(ours[k] / float(theirs[k]) - 1) for k in ours}


@pytest.fixture(scope="module")
def customers():
    return bg_nbd_customers(4000)


def test_bg_nbd_fit_agrees_with_lifetimes_on_4000_generated_customers(customers):
    x, t_x, T, future = customers
    ours = fit_bg_nbd(x, t_x, T)
    theirs = BetaGeoFitter().fit(x, t_x, T)

    assert max(relative(ours.parameters, theirs.params_).values()) < TOLERANCE, (ours.parameters, theirs.params_)
    model = clv.BgNbd(**ours.parameters)
    predicted = np.array([clv.expected_orders(model, *c, 90) for c in zip(x, t_x, T)])
    reference = theirs.conditional_expected_number_of_purchases_up_to_time(90, x, t_x, T)
    assert np.max(np.abs(predicted / reference - 1)) < TOLERANCE
    alive = np.array([clv.probability_alive(model, *c) for c in zip(x, t_x, T)])
    assert np.max(np.abs(alive - theirs.conditional_probability_alive(x, t_x, T))) < TOLERANCE
    # and it recovers the process that made the data: parameters within sampling error, and the
    # orders of the next 90 days (simulated) within 5% in total
    assert max(abs(ours.parameters[k] / TRUE_BG_NBD[k] - 1) for k in TRUE_BG_NBD) < 0.15
    assert predicted.sum() == pytest.approx(future.sum(), rel=0.05)


def test_bg_nbd_fit_on_cdnow_matches_lifetimes_and_the_published_parameters():
    data = load_cdnow_summary(index_col=[0])
    ours = fit_bg_nbd(data["frequency"].values, data["recency"].values, data["T"].values)
    theirs = BetaGeoFitter().fit(data["frequency"], data["recency"], data["T"])

    assert max(relative(ours.parameters, theirs.params_).values()) < TOLERANCE
    assert max(relative(ours.parameters, PUBLISHED_CDNOW).values()) < 0.005  # published to 3 decimals
    assert ours.log_likelihood == pytest.approx(-9582.4, abs=0.1)  # the paper's log-likelihood


def test_gamma_gamma_fit_agrees_with_lifetimes_on_generated_and_cdnow_values(customers):
    x = customers[0]
    values = order_values(x)
    repeat = x > 0
    ours = fit_gamma_gamma(x, values)
    theirs = GammaGammaFitter().fit(x[repeat], values[repeat])
    assert max(relative(ours.parameters, theirs.params_).values()) < TOLERANCE
    assert max(abs(ours.parameters[k] / TRUE_GAMMA_GAMMA[k] - 1) for k in TRUE_GAMMA_GAMMA) < 0.15
    model = clv.GammaGamma(**ours.parameters)
    expected = [clv.expected_order_value(model, f, m) for f, m in zip(x[repeat], values[repeat])]
    reference = theirs.conditional_expected_average_profit(x[repeat], values[repeat])
    assert np.max(np.abs(np.array(expected) / reference - 1)) < TOLERANCE

    cdnow = load_cdnow_summary_data_with_monetary_value()
    cdnow = cdnow[cdnow["frequency"] > 0]
    ours = fit_gamma_gamma(cdnow["frequency"].values, cdnow["monetary_value"].values)
    theirs = GammaGammaFitter().fit(cdnow["frequency"], cdnow["monetary_value"])
    assert max(relative(ours.parameters, theirs.params_).values()) < TOLERANCE


@pytest.mark.parametrize("parameters", [
    (0.243, 4.414, 0.793, 2.426), (0.6, 25.0, 0.8, 2.5), (2.0, 50.0, 3.0, 8.0), (0.3, 2.0, 1.5, 0.7),
])
def test_plain_python_predictions_match_lifetimes_for_given_parameters(parameters):
    model = clv.BgNbd(*parameters)
    reference = BetaGeoFitter()
    reference.params_ = pandas.Series(dict(zip(("r", "alpha", "a", "b"), parameters)))
    rng = np.random.default_rng(5)
    for _ in range(200):
        T = rng.uniform(0, 400)
        x = int(rng.choice([0, 1, 2, 5, 20, 150]))
        t_x = rng.uniform(0, T) if x else 0.0
        ours = clv.expected_orders(model, x, t_x, T, 90)
        theirs = reference.conditional_expected_number_of_purchases_up_to_time(90, x, t_x, T)
        assert ours == pytest.approx(theirs, rel=1e-6), (x, t_x, T)


def test_too_few_customers_or_no_repeat_orders_leave_the_parameters_out():
    x, t_x, T, _ = bg_nbd_customers(30)
    assert fit_bg_nbd(x, t_x, T).parameters is None
    nobody_came_back = fit_bg_nbd(np.zeros(500), np.zeros(500), np.full(500, 60.0))
    assert nobody_came_back.parameters is None and "repeat" in nobody_came_back.reason
    assert fit_gamma_gamma(np.ones(5), np.full(5, 20.0)).parameters is None


def test_gamma_gamma_without_a_finite_mean_is_refused(customers):
    x = customers[0]
    heavy_tailed = order_values(x, q=0.7, v=2.0)
    fit = fit_gamma_gamma(x, heavy_tailed)
    assert fit.parameters is None and "q" in fit.reason


def test_customers_whose_returns_cancel_their_spend_are_left_out_of_gamma_gamma(customers):
    x = customers[0]
    values = order_values(x)
    with_refunds = values.copy()
    with_refunds[:100] = np.where(x[:100] > 0, -5.0, np.nan)  # net below zero
    with_refunds[100:150] = np.where(x[100:150] > 0, 0.0, np.nan)
    assert fit_gamma_gamma(x, with_refunds).parameters == fit_gamma_gamma(x[150:], values[150:]).parameters


def summaries_from(x, t_x, T, values, now):
    """Purchase summaries as ingest keeps them, for the generated customers."""
    out = []
    for repeat, recency, age, value in zip(x, t_x, T, values):
        orders = int(repeat) + 1
        first = now - timedelta(days=float(age))
        spend = (value if math.isfinite(value) else 30.0) * orders
        out.append(PurchaseSummary(orders=orders, lines=orders * 3, units=orders * 7, spend={"GBP": round(spend, 2)},
                                   first_purchase_at=first.isoformat(),
                                   last_purchase_at=(first + timedelta(days=float(recency))).isoformat()))
    return out


def test_the_nightly_statistics_carry_the_fits_and_the_clv_percentiles(customers):
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    x, t_x, T, _ = customers
    statistics = customer_statistics(summaries_from(x, t_x, T, order_values(x), now), now)

    fitted = statistics["clv"]
    json.dumps(statistics)  # statistics.json
    assert fitted["bg_nbd"]["customers"] == 4000
    # The service counts whole days (shared/segments/features.py): the fit on the same whole days.
    whole_T, whole_recency = np.floor(T), np.floor(T - t_x)
    whole_t_x = np.clip(whole_T - whole_recency, 0, whole_T)
    assert fitted["bg_nbd"]["r"] == pytest.approx(fit_bg_nbd(x, whole_t_x, whole_T).parameters["r"], rel=1e-4)
    assert fitted["gamma_gamma"]["GBP"]["customers"] == int((x > 0).sum())
    edges = fitted["value_percentiles"]["GBP"]
    assert 0 < edges["40"] < edges["70"] < edges["90"]
    assert clv.bg_nbd_from(statistics) and clv.gamma_gamma_from(statistics, "GBP")
    assert clv.gamma_gamma_from(statistics, "EUR") is None


def test_a_refused_fit_leaves_a_reason_and_no_parameters():
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    one_order_each = [PurchaseSummary(orders=1, lines=1, units=1, spend={"GBP": 10},
                                      first_purchase_at=(now - timedelta(days=d)).isoformat(),
                                      last_purchase_at=(now - timedelta(days=d)).isoformat()) for d in range(1, 200)]
    statistics = customer_statistics(one_order_each, now)
    assert "r" not in statistics["clv"]["bg_nbd"] and "repeat" in statistics["clv"]["bg_nbd"]["refused"]
    assert clv.bg_nbd_from(statistics) is None
    assert statistics["frequency_quintiles"] == [1.0, 1.0, 1.0, 1.0]
