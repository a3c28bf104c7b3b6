"""A run takes the blend the newest run chose while that choice is recent (blend_reuse_days),
and never one that could have seen its holdout, was made under another configuration or another
way of scoring, or is not of the grid."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.storage.blobs import LocalBlobs
from shared.storage.models import ModelStore
from shared.training import pipeline
from shared.training.config import TrainingConfig
from shared.training.job import run_training
from shared.training.pipeline import TrainingData
from tests.training_data import END, interactions_of, shop

# The gate open, so that each run's version serves and its choice is the one the next run sees.
OPEN_GATE = {"min_gain_over_popularity": 0, "max_drop_from_active": 1}


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """run(as_of, **config): one run on the generated shop; the folds each run scored in `runs.folds`."""
    interactions = interactions_of(shop().events)
    store = ModelStore(LocalBlobs(tmp_path))
    scored = pipeline._score_fold
    folds: list[float] = []

    def counting(interactions, start, end, config, shape, warm, **passed):
        folds.append(end)
        return scored(interactions, start, end, config, shape, warm, **passed)

    monkeypatch.setattr(pipeline, "_score_fold", counting)

    def run(as_of, **config):
        folds.clear()
        load = lambda cfg, end: TrainingData(interactions, end.timestamp())  # noqa: E731
        return run_training(load, store, TrainingConfig.model_validate({**OPEN_GATE, **config, "as_of": as_of}))

    run.folds, run.store = folds, store
    return run


def test_a_run_takes_the_blend_a_run_chose_days_before_without_scoring_folds(runs):
    first = runs(END - timedelta(days=3))
    assert first.active and runs.folds  # it chose, on its validation folds
    assert first.blend_choice.chosen_at == END - timedelta(days=3)

    second = runs(END)

    assert runs.folds == []  # no fold fitted nor scored
    assert second.blend_choice == first.blend_choice  # the same choice, still dated by the run that made it
    assert "3.0 days before this one, and taken again (blend_reuse_days 6)" in second.strategy_reason
    assert first.blend_choice.reason in second.strategy_reason
    assert second.status == "accepted"  # the holdout still scores it, and the gate still decides


@pytest.mark.parametrize("first_days_before", [6, 6 + 11 / 24])  # six nights, give or take a start's drift
def test_a_choice_six_nights_old_is_taken_though_its_run_started_later_in_its_night(runs, first_days_before):
    runs(END - timedelta(days=first_days_before))

    runs(END)

    assert runs.folds == []


@pytest.mark.parametrize("first_days_before, config", [
    (7, {}),  # older than blend_reuse_days
    (6.6, {}),  # seven nights, in whole days
    (3, {"blend_reuse_days": 0}),  # every run chooses
    (0, {"blend_reuse_days": 0}),  # even a run of the same end
    (-2, {}),  # a backfill: the later run's folds covered this run's holdout
    (3, {"factors": 32}),  # chosen under other parameters
    (3, {"holdout_days": 7}),
    (3, {"event_weights": {"purchase": 1, "view": 0.2}}),
])
def test_a_run_chooses_again_when_the_active_choice_is_old_later_or_made_under_another_configuration(
        runs, first_days_before, config):
    second_end = END - timedelta(days=max(0, -first_days_before))
    runs(second_end - timedelta(days=first_days_before))

    second = runs(second_end, **config)

    assert runs.folds  # validated again
    assert second.blend_choice.chosen_at == second_end
    assert "taken again" not in second.strategy_reason


def test_settings_the_choice_does_not_depend_on_still_let_a_run_take_it(runs):
    runs(END - timedelta(days=2))

    second = runs(END, max_interactions=9_000_000, blend_reuse_days=3, min_gain_over_popularity=0.5)

    assert runs.folds == [] and "taken again (blend_reuse_days 3)" in second.strategy_reason


@pytest.mark.parametrize("method", ["1; implicit 0.7.3", ""])  # a deploy that changed the scoring; before it was recorded
def test_a_run_chooses_again_when_the_choice_was_scored_another_way(runs, method):
    first = runs(END - timedelta(days=1))
    assert first.method and runs.store.manifest(first.version).method == first.method
    key = f"models/{first.version}/manifest.json"
    stored = json.loads(runs.store.blobs.get(key))
    stored["method"] = method
    runs.store.blobs.put(key, json.dumps(stored).encode())

    second = runs(END)

    assert runs.folds and second.blend_choice.chosen_at == END and "taken again" not in second.strategy_reason


def test_a_fixed_blend_records_no_choice_for_later_runs_to_take(runs):
    fixed = runs(END - timedelta(days=1), blend={"als": 1, "knn": 0, "popularity": 0})
    assert fixed.blend_choice is None

    runs(END)

    assert runs.folds  # the blend is chosen, not the fixed one taken


def test_a_stored_choice_that_does_not_read_is_chosen_again_and_the_manifest_still_reads(runs):
    first = runs(END - timedelta(days=1))
    key = f"models/{first.version}/manifest.json"
    stored = json.loads(runs.store.blobs.get(key))
    stored["blend_choice"]["weights"] = {"als": "lots"}
    runs.store.blobs.put(key, json.dumps(stored).encode())
    assert runs.store.manifest(first.version).blend_choice is None

    second = runs(END)

    assert runs.folds and second.blend_choice.chosen_at == END


def test_the_newest_choice_is_taken_whichever_version_the_gate_let_serve(runs):
    """Which version serves is the gate's (or an operator's) decision, on holdouts this run's
    overlaps: it must not decide which choice this run's holdout scores."""
    older = runs(END - timedelta(days=5))
    runs(END - timedelta(days=1), blend_reuse_days=0)  # chooses again
    runs.store.activate(older.version)  # an operator's rollback

    runs(END)

    assert runs.folds == []
    assert runs.store.manifests()[0].blend_choice.chosen_at == END - timedelta(days=1)  # not the version serving


def test_a_choice_not_of_the_grid_is_not_taken(runs):
    first = runs(END - timedelta(days=1))
    key = f"models/{first.version}/manifest.json"
    stored = json.loads(runs.store.blobs.get(key))
    stored["blend_choice"]["weights"] = {"als": 0.3, "knn": 0, "popularity": 0}  # by hand, or an older grid's
    runs.store.blobs.put(key, json.dumps(stored).encode())

    second = runs(END)

    assert runs.folds and second.blend_choice.chosen_at == END


def test_a_run_that_cannot_read_the_earlier_choices_chooses_its_own(runs, monkeypatch):
    from shared.errors import StorageUnavailable

    runs(END - timedelta(days=1))

    def unreachable():
        raise StorageUnavailable("list the model bucket: S3 is throttling")

    monkeypatch.setattr(runs.store, "manifests", unreachable)
    second = runs(END)

    assert second.status == "accepted" and runs.folds  # trained, choosing its own blend
