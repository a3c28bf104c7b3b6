"""A training run's ALS fits after the first start from the one before: fewer iterations, the same answers."""

from __future__ import annotations

import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares

from shared.training.config import TrainingConfig
from shared.training.matrix import DAY
from shared.training.pipeline import History, TrainingData, WarmStart, fit_als, train_model
from tests.training_data import END, interactions_of, shop

NOW = END.timestamp()


@pytest.fixture(scope="module")
def interactions():
    return interactions_of(shop().events)


def rows_until(interactions, until: float, config: TrainingConfig):
    shape = (len(interactions.user_ids), len(interactions.item_ids))
    return History.before(interactions, until, config, shape).rows


@pytest.fixture
def fits(monkeypatch):
    """Each ALS fit of the run: its iterations, and whether it started from given factors."""
    seen: list[tuple[int, bool]] = []
    fit = AlternatingLeastSquares.fit

    def recorded(model, *args, **kwargs):
        seen.append((model.iterations, model.item_factors is not None))
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(AlternatingLeastSquares, "fit", recorded)
    return seen


def test_a_run_fits_cold_once_then_each_fit_starts_from_the_one_before(interactions, fits):
    config = TrainingConfig(min_gain_over_popularity=0, blend={"als": 1, "knn": 0, "popularity": 0},
                            validation_folds=2)
    train_model(TrainingData(interactions, NOW), config)
    # A fixed blend skips the folds: the holdout's fit is cold, the final one warm.
    assert fits == [(15, False), (3, True)]

    # Choosing the blend: two folds, the holdout, everything. The cold first fit leaves to the two
    # warm fits after it the iterations they run, so the holdout's fit has had 15, as a cold one.
    fits.clear()
    train_model(TrainingData(interactions, NOW), config.model_copy(update={"blend": None}))
    assert fits == [(9, False), (3, True), (3, True), (3, True)]

    # Six weeks of events: no one to score the oldest fold on (nothing before it), so the second
    # is the first fit, and it leaves the holdout's fit only its share.
    fits.clear()
    six_weeks = interactions.select(interactions.timestamps >= NOW - 40 * DAY)
    train_model(TrainingData(six_weeks, NOW), config.model_copy(update={"blend": None}))
    assert fits == [(12, False), (3, True), (3, True)]

    fits.clear()
    train_model(TrainingData(interactions, NOW), config.model_copy(update={"warm_iterations": 0}))
    assert fits == [(15, False), (15, False)]


def test_a_warm_fit_on_a_few_more_weeks_ranks_like_a_cold_one(interactions):
    config = TrainingConfig()
    earlier, now = rows_until(interactions, NOW - 14 * DAY, config), rows_until(interactions, NOW + 1, config)
    warm = WarmStart()
    assert np.array_equal(warm.fit(earlier, config), fit_als(earlier, config)[1])  # the first fit is a cold one

    warm.fit(now, config)
    cold = fit_als(now, config)
    users = np.flatnonzero(np.diff(now.indptr) > 0)[:300]

    def overlap(factors: tuple[np.ndarray, np.ndarray]) -> float:
        """How much of each customer's top 10 (by that fit's own factors) the cold fit's top 10 shares."""
        def top(f: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            return np.argsort(-(f[0][users] @ f[1].T), axis=1)[:, :10]
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top(factors), top(cold))]))

    # As close to the cold fit as another seed is (measured 0.96 against 0.98), and far closer than
    # a cold fit of as few iterations (0.81).
    reseeded = overlap(fit_als(now, config.model_copy(update={"random_seed": 7})))
    barely = overlap(fit_als(now, config.model_copy(update={"iterations": config.warm_iterations})))
    assert warm.factors is not None
    assert overlap(warm.factors) >= reseeded - 0.05 and overlap(warm.factors) > barely + 0.1


def test_factors_of_another_shape_are_not_started_from(interactions):
    config = TrainingConfig()
    warm = WarmStart()
    warm.fit(rows_until(interactions, NOW + 1, config), config)
    smaller = rows_until(interactions, NOW + 1, config)[:10]
    assert np.array_equal(warm.fit(smaller, config), fit_als(smaller, config)[1])
