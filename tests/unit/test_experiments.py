"""Experiments: start one per surface, stop, promote through the gate, and results that find a real winner."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from shared.errors import Conflict, NotFound
from shared.experiments import service
from shared.experiments.assignment import assign
from shared.experiments.attribution import Purchase, Served, Touch, recommendation_id
from shared.experiments.results import daily_tallies, exposures, summarize
from shared.experiments.spec import ExperimentSpec
from shared.storage.blobs import LocalBlobs
from shared.storage.experiments import ExperimentStore
from shared.storage.models import ModelStore
from tests.unit.test_model_retention import add_version

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
KEY = b"s" * 32
GOOD, REJECTED = "v20261130-010000-aaaa", "v20261129-010000-bbbb"


@pytest.fixture
def stores(tmp_path) -> tuple[ExperimentStore, ModelStore]:
    models = ModelStore(LocalBlobs(tmp_path))
    add_version(models, GOOD, timedelta(days=1), now=NOW)
    add_version(models, REJECTED, timedelta(days=2), status="rejected", now=NOW)
    models.activate(GOOD)
    return ExperimentStore(LocalBlobs(tmp_path)), models


def spec(*variants: tuple[str, str, float]) -> ExperimentSpec:
    return ExperimentSpec(name="test",
                          variants=[{"name": n, "serves": s, "traffic": t} for n, s, t in variants])


@pytest.mark.parametrize(("variants", "field"), [
    ([("a", "active", 0.5), ("b", "popular", 0.4)], "add up to 1"),
    ([("a", "active", 0.5), ("a", "popular", 0.5)], "unique"),
    ([("a", "latest", 0.5), ("b", "popular", 0.5)], "model version"),
    ([("a", "active", 1.0)], "at least 2"),
    ([("A b", "active", 0.5), ("b", "popular", 0.5)], "pattern"),
])
def test_a_bad_experiment_is_refused_with_the_reason(variants, field):
    with pytest.raises(ValidationError, match=field):
        spec(*variants)


def test_one_experiment_per_surface_and_versions_must_exist(stores):
    experiments, models = stores
    first = service.start(spec(("model", "active", 0.5), ("popular", "popular", 0.5)), experiments, models, NOW)
    with pytest.raises(Conflict, match=first.experiment_id):
        service.start(spec(("a", "active", 0.5), ("b", "popular", 0.5)), experiments, models, NOW)
    service.stop(first.experiment_id, experiments, NOW)
    with pytest.raises(NotFound, match="v20200101-000000-cccc"):
        service.start(spec(("a", "v20200101-000000-cccc", 0.5), ("b", "popular", 0.5)), experiments, models, NOW)
    again = service.start(spec(("a", "active", 0.5), ("b", "popular", 0.5)), experiments, models, NOW)
    assert [e.experiment_id for e in experiments.running()] == [again.experiment_id]
    assert experiments.get(first.experiment_id).status == "stopped"


def test_promoting_activates_through_the_same_gate(stores):
    experiments, models = stores
    tried = service.start(spec(("now", "active", 0.4), ("old", REJECTED, 0.3), ("popular", "popular", 0.3)),
                          experiments, models, NOW)
    with pytest.raises(Conflict, match="rejected"):
        service.promote(tried.experiment_id, "old", experiments, models, NOW)
    assert models.active().version == GOOD  # nothing changed
    with pytest.raises(Conflict, match="baseline"):
        service.promote(tried.experiment_id, "popular", experiments, models, NOW)
    done = service.promote(tried.experiment_id, "now", experiments, models, NOW)
    assert done.status == "promoted" and done.promoted == "now"
    with pytest.raises(Conflict, match="promoted"):
        service.stop(tried.experiment_id, experiments, NOW)


def simulated_shop(lift: float, customers: int, days: int, seed: int) -> tuple[list[Touch], list[Purchase], list[str]]:
    """Customers arrive over `days`, see the experiment's variant, click, and buy at a base rate;
    variant b's customers buy `lift` more often."""
    rng = np.random.default_rng(seed)
    experiment = spec(("a", "active", 0.5), ("b", "popular", 0.5))
    touches, purchases = [], []
    start = NOW.timestamp()
    for n in range(customers):
        user = f"u-{n}"
        variant = assign("exp-sim", user, experiment.shares(), True)
        at = start + rng.uniform(0, days * 86_400)
        rid = recommendation_id(Served("recommendations", "als", GOOD, "exp-sim", variant, int(at)), KEY, str(n))
        touches.append(Touch(user, "sku-1", "impression", at, rid))
        if rng.random() < 0.3:
            touches.append(Touch(user, "sku-1", "click", at + 10, rid))
        if rng.random() < 0.05 * (1 + lift * (variant == "b")):
            purchases.append(Purchase(user, "sku-1", at + 3600, float(rng.gamma(2, 20))))
    return touches, purchases, ["a", "b"]


def daily_results(lift: float, seed: int, customers: int = 60_000, days: int = 28) -> dict:
    touches, purchases, variants = simulated_shop(lift, customers, days, seed)
    start = NOW.timestamp()
    seen = exposures("exp-sim", touches, KEY)
    return summarize(variants, "a", daily_tallies(seen, purchases, [start + (d + 1) * 86_400 + 7200
                                                                    for d in range(days)]))


def test_results_find_a_variant_that_truly_converts_20_percent_better():
    results = daily_results(0.2, seed=5)
    b = results["variants"]["b"]
    assert results["variants"]["a"]["exposed"] + b["exposed"] == 60_000
    assert b["against_control"]["conversion"]["significant"]
    assert b["against_control"]["conversion"]["lift"] == pytest.approx(0.2, abs=0.1)
    low, high = (b["against_control"]["conversion"]["interval"][k] for k in ("low", "high"))
    assert low > 0 and low < 0.01 < high  # the true difference, 1 point, is inside


def test_results_of_an_aa_experiment_claim_no_winner():
    claimed = [daily_results(0.0, seed=seed, customers=20_000, days=14)["variants"]["b"]["against_control"]
               for seed in range(10)]
    assert sum(c["conversion"]["significant"] for c in claimed) <= 1


def test_the_attribution_report_follows_its_basis_and_window(stores):
    from shared.experiments.attribution import Purchase as Bought
    from shared.storage.outcomes import Outcomes

    experiments, _ = stores
    start = NOW.timestamp()
    rid = recommendation_id(Served("recommendations", "als", GOOD, None, None, int(start)), KEY, "x")
    outcomes = Outcomes(touches=[Touch("u1", "sku-1", "impression", start, rid)],
                        purchases=[Bought("u1", "sku-1", start + 2 * 86_400, 30.0)])
    service.record_results(experiments, outcomes, KEY, NOW + timedelta(days=3))
    assert sum(line["purchases"] for line in experiments.report()["days"]) == 0  # shown, never clicked
    service.record_results(experiments, outcomes, KEY, NOW + timedelta(days=3), basis="impression")
    report = experiments.report()
    assert report["basis"] == "impression" and sum(line["revenue"] for line in report["days"]) == 30.0
    service.record_results(experiments, outcomes, KEY, NOW + timedelta(days=3), basis="impression", window_days=1)
    assert sum(line["purchases"] for line in experiments.report()["days"]) == 0  # bought after the window


def tallied_on_its_own(seen, purchases, until) -> dict:
    """The tally of one day as the results defined it, over every exposure and purchase up to `until`."""
    tallies, variant_of = {}, {}
    for exposure in seen:
        if exposure.at > until:
            break
        variant = variant_of.setdefault(exposure.user_id, exposure.variant)
        counted = tallies.setdefault(variant, ({}, set(), {}))
        counted[0].setdefault(exposure.user_id, exposure.at)
        counted[2].setdefault(exposure.user_id, 0.0)
        if exposure.click and variant == exposure.variant:
            counted[1].add(exposure.user_id)
    for purchase in purchases:
        variant = variant_of.get(purchase.user_id)
        if variant is not None and purchase.at <= until and purchase.at >= tallies[variant][0][purchase.user_id]:
            tallies[variant][2][purchase.user_id] += purchase.revenue
    return tallies


def test_each_days_results_count_what_that_day_alone_would_over_months_of_outcomes():
    rng = np.random.default_rng(3)
    start, days = NOW.timestamp(), 120
    touches, purchases = [], []
    for n in range(3000):
        user = f"u-{rng.integers(400)}"
        at = start + float(rng.integers(0, days * 24)) * 3600  # on the hour: exposures and purchases tie
        served = Served("recommendations", "als", GOOD, "exp-long", str(rng.choice(["a", "b"])), int(at))
        touches.append(Touch(user, "sku-1", str(rng.choice(["impression", "click"])), at,
                             recommendation_id(served, KEY, str(n))))
        # Out of time order, some before their customer's exposure, some at its very moment.
        purchases.append(Purchase(user, "sku-1", at + float(rng.choice([-7200, 0, 3600, 86_400 * 3])),
                                  float(rng.integers(1, 400)) / 4))  # quarters: sums exact in any order
    seen = exposures("exp-long", touches, KEY)
    ends = [start + (d + 1) * 86_400 for d in range(days)]

    swept = [{variant: (dict(t.exposed_at), set(t.clicked), dict(t.spend)) for variant, t in day.items()}
             for day in daily_tallies(seen, purchases, ends)]

    assert swept == [tallied_on_its_own(seen, purchases, until) for until in ends]
    assert set(swept[-1]) == {"a", "b"} and any(spent > 0 for _, _, spend in swept[-1].values() for spent in spend.values())
