"""The served strategy: the blend ranks in serving exactly as in the evaluation, popular-only
versions serve, the gate's choice decides what activates, and training as of a date."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from shared.history import HistoryEvent
from shared.purchases import PurchasedItems
from shared.serving.model import ServingModel
from shared.storage.models import Manifest
from shared.training.artifact import ModelArtifact
from shared.training.config import TrainingConfig
from shared.training import blend_ranking, pipeline
from shared.training.evaluation import Metrics, best_first, top_items
from shared.training.hybrid import BLENDS, DEFAULT_BLEND, Blend, item_neighbours
from shared.training.interactions import InteractionLog
from shared.training.job import should_activate
from shared.training.matrix import DAY
from shared.training.pipeline import (ACCEPTED, INSUFFICIENT_DATA, POPULAR, REJECTED, History, TrainingData,
                                      TrainingOutcome, _artifact, choose_blend, fit_blend, ranked_by_blends,
                                      train_model)
from tests.training_data import END, interactions_of, shop

NOW = END.timestamp()


@pytest.fixture(scope="module")
def fitted_shop():
    interactions = interactions_of(shop().events)
    config = TrainingConfig(blend={"als": 1, "knn": 1, "popularity": 0.5})
    data = TrainingData(interactions, NOW)
    shape = (len(interactions.user_ids), len(interactions.item_ids))
    fitted = fit_blend(History.before(interactions, NOW + 1, config, shape), config, Blend(1, 1, 0.5))
    artifact = ModelArtifact.from_bytes(_artifact(data, interactions, config, fitted, "hybrid").to_bytes())
    return interactions, fitted, ServingModel("v1", artifact)


def test_serving_ranks_a_customer_exactly_as_the_evaluation_scorer(fitted_shop):
    interactions, fitted, model = fitted_shop
    users = np.flatnonzero(np.diff(fitted.rows.indptr) > 0)[:25]

    evaluated = ranked_by_blends(fitted, users, (fitted.scorer.blend,), 10)[fitted.scorer.blend]

    for user, expected in zip(users, evaluated):
        bought = {interactions.item_ids[i] for i in fitted.bought[user].indices}
        served = model.recommend(fitted.rows[user], 10, bought)
        assert [s.item_id for s in served] == [interactions.item_ids[i] for i in expected]
    assert model.strategy == "hybrid" and model.personalized


def test_a_bought_set_of_keys_names_the_models_items_bought_and_nothing_else(fitted_shop):
    _, _, model = fitted_shop
    bought = PurchasedItems.of([*model.item_ids[:3], "not-in-the-model"])

    assert model.bought(bought) == set(model.item_ids[:3])
    assert model.bought(frozenset(model.item_ids[3:5])) == set(model.item_ids[3:5])


def test_explanations_name_items_of_the_customers_history(fitted_shop):
    interactions, fitted, model = fitted_shop
    user = int(np.flatnonzero(np.diff(fitted.rows.indptr) > 2)[0])
    row = fitted.rows[user]
    picked = [s.item_id for s in model.recommend(row, 5, set())]

    explained = model.explain(row, picked)

    history = {interactions.item_ids[i] for i in row.indices}
    assert any(explained[item] for item in picked)
    assert all(set(explained[item]) <= history for item in picked)


def test_a_customer_is_explained_alike_after_their_recommendations_and_on_their_own(fitted_shop):
    """Serving keeps a row's raw ALS and kNN scores to explain the items it just ranked from the
    same row: ranking must leave them as they were, or the reasons come out in another order."""
    _, fitted, model = fitted_shop
    rows = [fitted.rows[int(u)] for u in np.flatnonzero(np.diff(fitted.rows.indptr) > 3)[:10]]
    explained = []
    for row in rows:
        first = model.recommend(row, 8, set())
        picked = [s.item_id for s in first]
        after_ranking = model.explain(row, picked, top=5)
        again = model.recommend(row, 8, set())
        on_its_own = model.explain(row.copy(), picked, top=5)  # another object: nothing kept is used
        assert after_ranking == on_its_own
        assert [(s.item_id, s.score) for s in again] == [(s.item_id, s.score) for s in first]
        explained += after_ranking.values()
    assert any(len(reasons) > 1 for reasons in explained)  # an order to get wrong


def log_of(*rows, end=NOW):
    log = InteractionLog(limit=100)
    for user, item, kind, age_days in rows:
        log.add(user, item, kind, 1, end - age_days * DAY)
    return log.finish()


def test_too_little_data_with_a_purchase_still_publishes_popular_lists_that_serve():
    data = TrainingData(log_of(("u", "a", "purchase", 1), ("u", "b", "purchase", 30), ("v", "b", "view", 2)), NOW,
                        categories={"a": "tea", "b": "tea"})

    outcome = train_model(data, TrainingConfig())

    assert (outcome.status, outcome.strategy) == (INSUFFICIENT_DATA, POPULAR)
    artifact = ModelArtifact.from_bytes(outcome.artifact.to_bytes())
    assert artifact.item_factors.shape == (0, 64)
    assert artifact.popular_items == ["a", "b"]
    assert artifact.popular_by_category == {"tea": ["a", "b"]}
    model = ServingModel("v1", artifact)
    assert (model.personalized, model.strategy, model.knows("a")) == (False, POPULAR, False)
    history = [HistoryEvent("a", "purchase", 1, NOW)]
    assert model.recommend(model.user_row(history, NOW), 5, set()) == []
    assert model.rank(model.user_row(history, NOW), ["a"]) == {}


def test_popular_items_of_an_old_imported_history_are_never_empty():
    """Two years before the run's end, far outside the 30-day popularity window of old."""
    data = TrainingData(log_of(("u", "a", "purchase", 730), ("v", "a", "purchase", 731), ("v", "b", "purchase", 735)),
                        NOW)

    outcome = train_model(data, TrainingConfig(window_days=3650))

    assert outcome.artifact.popular_items == ["a", "b"]


def test_events_after_the_runs_end_are_ignored():
    as_of = NOW - 100 * DAY
    data = TrainingData(log_of(("u", "a", "purchase", 120), ("u", "b", "purchase", 10), ("v", "c", "purchase", 5)),
                        as_of)

    outcome = train_model(data, TrainingConfig())

    assert outcome.counts["interactions"] == 1
    assert outcome.artifact.popular_items == ["a"]


def test_on_a_shop_with_taste_the_blend_is_chosen_on_validation_and_serves():
    outcome = train_model(TrainingData(interactions_of(shop().events), NOW), TrainingConfig())

    assert (outcome.status, outcome.strategy) == (ACCEPTED, outcome.artifact.strategy)
    assert outcome.strategy in ("hybrid", "als", "knn")
    assert "validation split" in outcome.strategy_reason
    assert outcome.artifact.parameters["blend"]


def scored_as(ndcgs: dict[Blend, float]) -> dict[Blend, Metrics]:
    return {blend: Metrics(0.0, 0.0, ndcgs.get(blend, 0.0), 0.0, 100) for blend in BLENDS}


def test_the_blend_with_the_best_sum_over_the_validation_folds_wins(monkeypatch):
    """Not the best of the last month alone: A leads it by a hair, B wins the sum."""
    a, b = BLENDS[3], BLENDS[7]
    folds = {0: scored_as({a: 0.126, b: 0.125}), 1: scored_as({a: 0.120, b: 0.128})}
    asked = []

    def score_fold(interactions, start, end, config, shape, warm, fits_before_holdout):
        fold = round((NOW - 30 * DAY - end) / (30 * DAY))
        asked.append((start, end))
        return 100, folds[fold]

    monkeypatch.setattr(pipeline, "_score_fold", score_fold)
    cutoff = NOW - 30 * DAY
    config = TrainingConfig(holdout_days=30)

    assert choose_blend(None, cutoff, config, (1, 1))[0] == b
    # Never the holdout; the older fold first, so each fit starts from the one before.
    assert asked == [(cutoff - 60 * DAY, cutoff - 30 * DAY), (cutoff - 30 * DAY, cutoff)]
    asked.clear()
    assert choose_blend(None, cutoff, config.model_copy(update={"validation_folds": 1}), (1, 1))[0] == a
    assert asked == [(cutoff - 30 * DAY, cutoff)]


def test_a_fold_with_too_few_customers_is_left_out_and_none_left_is_the_default_blend():
    interactions = interactions_of(shop().events)
    shape = (len(interactions.user_ids), len(interactions.item_ids))
    cutoff = NOW - 14 * DAY
    config = TrainingConfig()  # two folds of 14 days: [cutoff - 28 d, cutoff - 14 d) and [cutoff - 14 d, cutoff)

    def since(days: int):
        return interactions.select(interactions.timestamps >= cutoff - days * DAY)

    blend, reason, _, _ = choose_blend(since(14), cutoff, config, shape)  # nobody known before either fold
    assert blend == DEFAULT_BLEND and "too few customers" in reason

    blend, reason, _, _ = choose_blend(since(28), cutoff, config, shape)  # nobody known before the older fold
    assert blend in BLENDS and "on 1 validation split of 14 days" in reason


@pytest.mark.parametrize("folds", [0, 7, "2", 1.0])
def test_validation_folds_is_a_small_count(folds):
    with pytest.raises(ValueError, match="validation_folds"):
        TrainingConfig.model_validate({"validation_folds": folds})


def outcome_of(status: str, strategy: str, popularity_is_better: bool = False) -> TrainingOutcome:
    artifact = ModelArtifact(["a"], np.zeros((0, 2), np.float32), ["a"], strategy=strategy)
    return TrainingOutcome(status, "", artifact=artifact, strategy=strategy,
                           popularity_is_better=popularity_is_better)


@pytest.mark.parametrize(("status", "strategy", "popularity_is_better", "active", "activates"), [
    (ACCEPTED, "hybrid", False, "hybrid", True),
    (REJECTED, POPULAR, True, None, True),  # nothing serves yet
    (REJECTED, POPULAR, True, "hybrid", True),  # popularity beat the model: customers get popularity
    (REJECTED, POPULAR, True, POPULAR, True),
    (REJECTED, "hybrid", False, "hybrid", False),  # worse than the active version: it stays
    (INSUFFICIENT_DATA, POPULAR, False, None, True),
    (INSUFFICIENT_DATA, POPULAR, False, POPULAR, True),
    (INSUFFICIENT_DATA, POPULAR, False, "als", False),  # a model keeps serving
])
def test_which_runs_activate(status, strategy, popularity_is_better, active, activates):
    manifest = Manifest(version="v", status=status, started_at=datetime.now(timezone.utc))
    outcome = outcome_of(status, strategy, popularity_is_better)
    assert should_activate(outcome, manifest, active) is activates


@pytest.mark.parametrize("value", ["2999-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "yesterday"])
def test_as_of_is_a_past_moment(value):
    with pytest.raises(ValueError, match="as_of"):
        TrainingConfig.model_validate({"as_of": value})


def test_as_of_without_a_zone_is_utc():
    assert TrainingConfig.model_validate({"as_of": "2011-09-01"}).as_of == datetime(2011, 9, 1, tzinfo=timezone.utc)


def test_a_run_as_of_a_date_reads_and_records_the_window_back_from_it(tmp_path):
    from shared.storage.blobs import LocalBlobs
    from shared.storage.models import ModelStore
    from shared.training.job import run_training

    store = ModelStore(LocalBlobs(tmp_path))
    as_of = END - timedelta(days=400)
    asked = []

    def load(config, end):
        asked.append(end)
        return TrainingData(log_of(("u", "a", "purchase", 3, ), end=end.timestamp()), end.timestamp())

    manifest = run_training(load, store, TrainingConfig(as_of=as_of))

    assert asked == [as_of]
    assert manifest.window["end"].startswith(f"{as_of:%Y-%m-%dT%H}")
    assert (manifest.strategy, manifest.active) == (POPULAR, True)  # nothing served: popular items now do


def test_item_neighbours_keep_the_k_most_similar_items_and_all_of_fewer():
    rng = np.random.default_rng(2)
    bought = (rng.random((60, 300)) < 0.03).astype(np.float32)
    norms = np.maximum(np.sqrt(bought.sum(axis=0)), 1e-12)
    cosine = (bought.T @ bought) / norms[:, None] / norms[None, :]
    np.fill_diagonal(cosine, 0.0)
    neighbours = item_neighbours(csr_matrix(bought), 5).toarray()
    similar = (cosine > 0).sum(axis=1)
    assert (similar <= 5).any() and (similar > 5).any()  # both kinds of item
    for item in range(300):
        kept = np.flatnonzero(neighbours[item])
        assert len(kept) == min(similar[item], 5) and item not in kept
        assert np.allclose(neighbours[item, kept], cosine[item, kept] ** 2)
        dropped = np.setdiff1d(np.flatnonzero(cosine[item]), kept)
        assert not len(dropped) or cosine[item, dropped].max() <= cosine[item, kept].min() + 1e-6


def test_the_validation_ranks_each_blend_as_serving_would(fitted_shop):
    _, fitted, _ = fitted_shop
    users = np.flatnonzero(np.diff(fitted.rows.indptr) > 0)[:150]
    # Any items do, as long as every customer has one: both sides are scored alike.
    n_items = fitted.rows.shape[1]
    relevant = csr_matrix((np.random.default_rng(1).random((len(users), n_items)) < 0.2)
                          | (np.arange(n_items) == 0)).astype(np.float32)
    scored = pipeline.score_blends(fitted, pipeline.Holdout(users, relevant), BLENDS, 10)
    for blend in BLENDS:
        scorer = pipeline.Scorer(fitted.scorer.als.item_factors, 5.0, fitted.scorer.neighbours,
                                 fitted.popularity, blend)
        served = top_items(lambda chunk: scorer.scores(fitted.rows[chunk]), users, fitted.bought, 10)
        assert scored[blend] == pipeline.ranking_metrics(served, relevant, n_items)


def test_a_part_holding_nans_ranks_in_the_validation_as_a_full_check_would(fitted_shop, monkeypatch):
    """The validation checks each chunk's parts for NaN once, not each blend's scores."""
    _, fitted, _ = fitted_shop
    users = np.flatnonzero(np.diff(fitted.rows.indptr) > 0)[:150]
    n_items = fitted.rows.shape[1]
    relevant = csr_matrix((np.random.default_rng(2).random((len(users), n_items)) < 0.2)
                          | (np.arange(n_items) == 0)).astype(np.float32)
    parts = type(fitted.scorer).parts

    def with_nans(scorer, rows):
        als, knn = parts(scorer, rows)
        als[0][::3, ::7] = np.nan  # as factors gone to NaN would give
        return als, knn

    monkeypatch.setattr(type(fitted.scorer), "parts", with_nans)
    scored = pipeline.score_blends(fitted, pipeline.Holdout(users, relevant), BLENDS, 10)
    checked = []
    # The blends are ranked in shared/training/blend_ranking.py, with best_first.
    monkeypatch.setattr(blend_ranking, "best_first", lambda scores, k, nan_free=False: checked.append(nan_free) or
                        best_first(scores, k))
    assert pipeline.score_blends(fitted, pipeline.Holdout(users, relevant), BLENDS, 10) == scored
    assert checked and not any(checked)  # every blend with ALS, and the others too: the chunk held a NaN
