"""Recommendation ids and the purchases credited to them."""

from __future__ import annotations

import pytest

from shared.experiments.attribution import (ATTRIBUTION_WINDOW, Purchase, Served, Touch, credit, daily_report, decode,
                                            recommendation_id)

KEY = b"k" * 32
DAY = 1_796_083_200  # 2026-12-01T00:00:00Z
MODEL = Served("recommendations", "als", "v20261130-0100-ab12", "exp-1", "model", DAY + 3600)
POPULAR = Served("recommendations", "popular", None, "exp-1", "popular", DAY + 7200)


def test_an_id_says_what_was_served_and_cannot_be_forged():
    rid = recommendation_id(MODEL, KEY, "req-1")
    assert decode(rid, KEY) == MODEL
    assert len(rid) < 160  # fits a URL parameter and a client's event comfortably
    assert recommendation_id(MODEL, KEY, "req-2") != rid
    prefix, body, signature = rid.split(".")
    forged = recommendation_id(POPULAR, b"x" * 32, "req-1")
    assert decode(forged, KEY) is None  # signed with another key
    assert decode(f"{prefix}.{forged.split('.')[1]}.{signature}", KEY) is None  # contents swapped
    for junk in ("", "r1", "r1..", "r1.!!!.???", "a.b.c.d", rid + "x"):
        assert decode(junk, KEY) is None


def test_a_purchase_goes_to_the_newest_click_on_that_item_within_the_window():
    old, new = recommendation_id(POPULAR, KEY, "a"), recommendation_id(MODEL, KEY, "b")
    touches = [Touch("u1", "sku-1", "click", DAY + 100, old), Touch("u1", "sku-1", "click", DAY + 200, new),
               Touch("u1", "sku-2", "click", DAY + 300, old), Touch("u2", "sku-1", "click", DAY + 400, old)]
    bought = Purchase("u1", "sku-1", DAY + 1000, 30.0)
    found = credit(bought, touches, KEY)
    assert found is not None and found.recommendation == new and found.served.strategy == "als"
    # Outside the window, another customer's click, another item, a click after the purchase: no credit.
    assert credit(Purchase("u1", "sku-1", DAY + 200 + ATTRIBUTION_WINDOW + 1, 30.0), touches, KEY) is None
    assert credit(Purchase("u3", "sku-1", DAY + 1000, 30.0), touches, KEY) is None
    assert credit(Purchase("u1", "sku-9", DAY + 1000, 30.0), touches, KEY) is None
    assert credit(Purchase("u1", "sku-1", DAY + 50, 30.0), touches, KEY) is None


def test_impressions_count_only_when_the_basis_says_so_and_forged_ids_never():
    shown = recommendation_id(MODEL, KEY, "a")
    touches = [Touch("u1", "sku-1", "impression", DAY + 100, shown),
               Touch("u1", "sku-1", "click", DAY + 200, recommendation_id(POPULAR, b"x" * 32, "f"))]
    bought = Purchase("u1", "sku-1", DAY + 1000, 12.5)
    assert credit(bought, touches, KEY) is None  # the only click's id is forged
    found = credit(bought, touches, KEY, basis="impression")
    assert found is not None and found.recommendation == shown
    assert credit(bought, touches, KEY, window=800, basis="impression") is None


def test_the_daily_report_gives_click_through_conversion_and_revenue_per_strategy():
    model_ids = [recommendation_id(MODEL, KEY, f"m{n}") for n in range(4)]
    popular_ids = [recommendation_id(POPULAR, KEY, f"p{n}") for n in range(2)]
    touches = ([Touch("u1", f"sku-{k}", "impression", DAY, rid) for rid in model_ids for k in range(5)]
               + [Touch("u2", "sku-0", "impression", DAY, rid) for rid in popular_ids]
               + [Touch("u1", "sku-1", "click", DAY + 5, model_ids[0]), Touch("u1", "sku-2", "click", DAY + 6, model_ids[1])]
               + [Touch("u2", "sku-0", "click", DAY + 7, "r1.forged.xx")])
    credits = [c for c in (credit(Purchase("u1", "sku-1", DAY + 60, 40.0), touches, KEY),
                           credit(Purchase("u1", "sku-3", DAY + 60, 99.0), touches, KEY)) if c]
    report = {line.strategy: line for line in daily_report(touches, credits, KEY)}
    model, popular = report["als"], report["popular"]
    assert (model.impressions, model.clicks, model.purchases, model.revenue) == (4, 2, 1, 40.0)
    assert model.click_through == pytest.approx(0.5) and model.conversion == pytest.approx(0.5)
    assert (popular.impressions, popular.clicks, popular.purchases) == (2, 0, 0)
    assert model.day == "2026-12-01" and model.variant == "model" and model.version == MODEL.version
