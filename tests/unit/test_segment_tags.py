"""Segment tags on hand-built customers with known answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.history import HistoryEvent
from shared.segments.features import customer_features
from shared.segments.tags import RFM_GRID, predicted_value_90_days, score, segment
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


def customer(orders, last_days, first_days, spend, history=(), categories=None, **profile):
    summary = PurchaseSummary(purchase_count=orders, spend={"EUR": spend},
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
    tags = segment(customer(14, 3, 400, 2340.0), STATS, personalized=True)

    assert "Champions" in names(tags, "rfm")
    assert "R5F5M5" in names(tags, "rfm")
    champion = next(t for t in tags if t.name == "Champions")
    assert champion.reason == "R5 F5 M5: bought 14 times, last 3 days ago, spent 2,340.00 EUR"
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
    assert names(tags, "engagement") == ["Responds to email"]


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


def test_predicted_value_is_rate_times_order_value_times_chance_still_active():
    features = customer(10, 0, 300, 500.0)
    assert predicted_value_90_days(features) == pytest.approx(10 / 300 * 90 * 50.0)
    assert predicted_value_90_days(customer(10, 300, 300, 500.0)) < 1
    assert predicted_value_90_days(customer(1, 5, 5, 10.0)) is None
