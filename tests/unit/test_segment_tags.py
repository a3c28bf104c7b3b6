"""Segment tags on hand-built customers with known answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.history import HistoryEvent
from shared.segments.features import customer_features
from shared.segments import clv
from shared.segments.tags import RFM_GRID, predict_clv, score, segment
from shared.users import PurchaseSummary, User

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
STATS = {
    "recency_days_quintiles": [10.0, 30.0, 90.0, 180.0],
    "frequency_quintiles": [1.0, 2.0, 4.0, 8.0],
    "spend_quintiles": {"EUR": [20.0, 50.0, 100.0, 300.0]},
    "spend_percentiles": {"EUR": {"50": 60.0, "80": 250.0, "95": 1000.0}},
}


def buy(item, days_ago, price=10.0, channel="web", campaign=None, discount=False, quantity=1):
    return HistoryEvent(item, "purchase", quantity, (NOW - timedelta(days=days_ago)).timestamp(), channel,
                        price, "EUR", campaign, discount)


def customer(orders, last_days, first_days, spend, history=(), categories=None, lines=None, units=None, **profile):
    summary = PurchaseSummary(orders=orders, lines=orders if lines is None else lines,
                              units=orders if units is None else units, spend={"EUR": spend},
                              last_purchase_at=(NOW - timedelta(days=last_days)).isoformat(),
                              first_purchase_at=(NOW - timedelta(days=first_days)).isoformat())
    return customer_features(User(user_id="u-1", summary=summary, **profile), list(history), categories or {}, NOW)


def names(tags, family):
    return [t.name for t in tags if t.family == family]


def test_every_cell_of_the_rfm_grid_has_exactly_one_name():
    for r in range(1, 6):
        for f in range(1, 6):
            assert sum(rule(r, f) for rule in RFM_GRID.values()) == 1, (r, f)


@pytest.mark.parametrize(("value", "higher_is_better", "expected"), [
    (1.0, True, 1), (1.5, True, 2), (8.0, True, 4), (9.0, True, 5),  # 1.0 and 8.0 sit on edges
    (10.0, False, 5), (10.5, False, 4), (180.0, False, 2), (181.0, False, 1),
])
def test_a_value_on_a_quintile_edge_belongs_to_the_quintile_below(value, higher_is_better, expected):
    edges = STATS["frequency_quintiles"] if higher_is_better else STATS["recency_days_quintiles"]
    assert score(value, edges, higher_is_better) == expected


def test_a_frequent_recent_big_spender_is_a_champion_and_vip_with_the_numbers_in_the_reason():
    tags = segment(customer(14, 3, 400, 2340.0, lines=37, units=420), STATS, personalized=True)

    assert "Champions" in names(tags, "rfm")
    assert "R5F5M5" in names(tags, "rfm")
    champion = next(t for t in tags if t.name == "Champions")
    assert champion.reason == "R5 F5 M5: 14 orders (37 lines, 420 units), the last one 3 days ago, spent 2,340.00 EUR"
    assert names(tags, "value")[0] == "VIP"
    assert "top 5%" in next(t for t in tags if t.name == "VIP").reason


@pytest.mark.parametrize(("orders", "last", "first", "spend", "rfm", "lifecycle"), [
    (1, 5, 5, 15.0, "New", "New"),
    (9, 200, 700, 900.0, "Can't Lose Them", "Churned"),
    (5, 120, 600, 200.0, "At Risk", "Lapsing"),
    (1, 400, 400, 10.0, "Lost", "Churned"),
    (2, 60, 300, 40.0, "About To Sleep", "Active"),
])
def test_rfm_names_and_lifecycle_stages(orders, last, first, spend, rfm, lifecycle):
    tags = segment(customer(orders, last, first, spend), STATS, personalized=True)
    assert rfm in names(tags, "rfm")
    assert names(tags, "lifecycle")[0] == lifecycle


def test_a_past_high_spender_whose_spend_is_falling_is_declining():
    history = [buy("a", 100, price=200.0), buy("b", 120, price=200.0), buy("c", 10, price=20.0)]
    tags = segment(customer(20, 10, 700, 3000.0, history), STATS, personalized=True)
    declining = next(t for t in tags if t.name == "Declining")
    assert "20.00 EUR in the last 90 days against 400.00 EUR" in declining.reason


def test_behaviour_channel_and_campaign_response():
    history = [buy("k1", 5, discount=True, channel="ios"), buy("k2", 8, discount=True, channel="ios"),
               buy("g1", 20, channel="web", campaign="cmp-1"), buy("k3", 30, discount=True, channel="ios")]
    history.append(HistoryEvent("k1", "view", 1, NOW.timestamp(), "email", None, None, "cmp-2"))
    tags = segment(customer(4, 5, 30, 40.0, history, {"k1": "kitchen", "k2": "kitchen", "k3": "kitchen",
                                                      "g1": "garden"}), STATS, personalized=True)
    assert names(tags, "behaviour") == ["Likes kitchen", "Likes garden", "Discount seeker"]
    assert next(t for t in tags if t.name == "Likes kitchen").reason == "3 of 4 purchases in kitchen"
    assert names(tags, "technographic") == ["Prefers ios"]
    # One event from a campaign is no response rate: engagement is measured over recorded sends
    # (tests/unit/test_contact_budget.py).
    assert names(tags, "engagement") == []


def test_declared_data_becomes_geography_demographic_and_psychographic_tags():
    features = customer(1, 5, 5, 10.0, country="DE", city="Berlin",
                        attributes={"age_band": "25-34", "household": "family", "interests": ["cooking"],
                                    "prefers_recycled": True})
    tags = segment(features, STATS, personalized=True)
    assert names(tags, "geography") == ["Country: DE", "City: Berlin"]
    assert names(tags, "demographic") == ["Age Band: 25-34", "Household: family"]
    assert names(tags, "psychographic") == ["Interested in cooking", "Cares about recycled"]


def test_without_consent_only_declared_data_is_used():
    features = customer(14, 3, 400, 2340.0, [buy("a", 3)], {"a": "kitchen"}, country="FR",
                        attributes={"interests": ["design"]})
    families = {t.family for t in segment(features, STATS, personalized=False)}
    assert families == {"geography", "psychographic"}


def test_without_statistics_rfm_and_value_are_left_out_not_guessed():
    tags = segment(customer(3, 10, 100, 80.0), {}, personalized=True)
    assert not names(tags, "rfm") and not names(tags, "value")
    assert names(tags, "lifecycle") == ["Active"]


def test_frequency_counts_orders_not_lines():
    # one 20-line invoice is one order: F1, not "bought 20 times"
    one_big_order = segment(customer(1, 5, 5, 400.0, lines=20, units=240), STATS, personalized=True)
    assert "R5F1M5" in names(one_big_order, "rfm") and "New" in names(one_big_order, "rfm")
    assert "1 order (20 lines, 240 units)" in next(t for t in one_big_order if t.name == "New").reason


# Parameters of the order of a real shop's, in days (Online Retail's BG/NBD fit is close to these).
CLV_STATS = {**STATS, "clv": {
    "horizon_days": 90,
    "bg_nbd": {"r": 0.8, "alpha": 60.0, "a": 0.1, "b": 1.5, "customers": 4000},
    "gamma_gamma": {"EUR": {"p": 3.0, "q": 4.0, "v": 100.0, "customers": 2000}},
    "value_percentiles": {"EUR": {"40": 20.0, "70": 80.0, "90": 250.0}},
}}


def tag(tags, prefix):
    return next((t for t in tags if t.name.startswith(prefix)), None)


def test_clv_tier_reason_shows_expected_orders_value_and_probability_alive():
    features = customer(14, 3, 400, 2340.0)
    tags = segment(features, CLV_STATS, personalized=True)

    prediction = predict_clv(features, CLV_STATS)
    model = clv.BgNbd(0.8, 60.0, 0.1, 1.5)
    assert prediction.orders == pytest.approx(clv.expected_orders(model, 13, 397, 400, 90))
    assert prediction.alive == pytest.approx(clv.probability_alive(model, 13, 397, 400))
    assert prediction.order_value == pytest.approx(3.0 * (100.0 + 13 * 2340.0 / 14) / (3.0 * 13 + 4.0 - 1))
    tier = tag(tags, "CLV: ")
    assert tier.family == "value" and tier.name == "CLV: top 10%" and tier.segment_id == "value:clv-top-10"
    assert tier.reason == (f"expected {prediction.orders:.1f} orders and {prediction.value:,.2f} EUR in the next "
                           f"90 days (about {prediction.order_value:,.2f} EUR an order); "
                           f"{prediction.alive:.0%} likely still active: top 10% by predicted value")
    assert tag(tags, "Churn risk").name == "Churn risk: low"


def test_a_probability_alive_below_half_a_percent_reads_below_1_percent():
    lapsed = tag(segment(customer(14, 300, 400, 1400.0), CLV_STATS, personalized=True), "Churn risk")
    assert lapsed.reason.startswith("below 1% likely still active: 14 orders over 100 days, the last one 300 days ago")


@pytest.mark.parametrize(("orders", "last", "first", "tier", "risk"), [
    (14, 3, 400, "CLV: top 10%", "Churn risk: low"),
    (14, 300, 400, "CLV: low", "Churn risk: high"),  # bought every month, then nothing for 300 days
    (4, 200, 300, "CLV: medium", "Churn risk: medium"),
    (6, 120, 250, "CLV: high", "Churn risk: low"),
    (2, 100, 300, "CLV: medium", "Churn risk: low"),
    (1, 200, 200, "CLV: medium", None),  # one order: the model cannot tell whether they left
])
def test_clv_tiers_and_churn_risk(orders, last, first, tier, risk):
    tags = segment(customer(orders, last, first, 100.0 * orders), CLV_STATS, personalized=True)
    assert tag(tags, "CLV: ").name == tier
    assert (tag(tags, "Churn risk") and tag(tags, "Churn risk").name) == risk
    if risk:
        assert f"likely still active: {orders} orders over {first - last} days, the last one {last} days ago" in \
            tag(tags, "Churn risk").reason


def test_a_customer_whose_returns_cancel_their_spend_gets_no_clv_tier_but_a_churn_risk():
    tags = segment(customer(4, 30, 300, 0.0), CLV_STATS, personalized=True)
    assert tag(tags, "CLV: ") is None
    assert tag(tags, "Churn risk") is not None


@pytest.mark.parametrize("clv_statistics", [
    None,  # statistics.json of a version from before CLV
    {"horizon_days": 90, "bg_nbd": {"customers": 30, "refused": "too few customers"}},
    {"horizon_days": 90, "bg_nbd": {"r": "nan", "alpha": 1, "a": 1, "b": 1}},
    {"bg_nbd": {"r": 0.8, "alpha": 60.0, "a": 0.1, "b": 1.5}, "gamma_gamma": {"EUR": {"refused": "q <= 1"}}},
])
def test_without_usable_clv_parameters_the_clv_tags_are_absent_and_the_rest_unchanged(clv_statistics):
    statistics = {**STATS, **({"clv": clv_statistics} if clv_statistics else {})}
    tags = segment(customer(14, 3, 400, 2340.0), statistics, personalized=True)
    assert tag(tags, "CLV: ") is None
    assert names(tags, "rfm") == ["Champions", "R5F5M5"] and names(tags, "value") == ["VIP"]
    if clv_statistics and "gamma_gamma" in clv_statistics:  # BG/NBD alone still tells churn risk
        assert tag(tags, "Churn risk") is not None
    else:
        assert tag(tags, "Churn risk") is None
