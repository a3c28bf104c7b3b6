"""A run's first ALS fit starts from the item factors an earlier run kept (start_reuse_days), and
never from a fit that saw the events it is scored on, a fit too old, one made under another
configuration, or one that does not read."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import numpy as np
import pytest

from shared.errors import StorageUnavailable
from shared.storage.blobs import LocalBlobs
from shared.storage.models import ModelStore
from shared.training import pipeline
from shared.training.config import TrainingConfig
from shared.training.earlier_fits import EarlierFit, ItemFactors, UnusableFit, start_from, usable
from shared.training.job import run_training
from shared.training.matrix import DAY
from shared.training.pipeline import TrainingData
from tests.training_data import END, interactions_of, shop

OPEN_GATE = {"min_gain_over_popularity": 0, "max_drop_from_active": 1}


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """run(as_of, **config): one run on the generated shop; whether each of its ALS fits started
    from factors (an earlier fit's), in order, in `runs.warm`."""
    interactions = interactions_of(shop().events)
    store = ModelStore(LocalBlobs(tmp_path))
    fit = pipeline.fit_als
    warm: list[bool] = []

    def recording(matrix, config, start=None, device=pipeline.CPU, cold_iterations=None):
        warm.append(start is not None and config.warm_iterations > 0)
        return fit(matrix, config, start, device, cold_iterations)

    monkeypatch.setattr(pipeline, "fit_als", recording)

    def run(as_of, **config):
        warm.clear()
        load = lambda cfg, end: TrainingData(interactions, end.timestamp())  # noqa: E731
        return run_training(load, store, TrainingConfig.model_validate({**OPEN_GATE, **config, "as_of": as_of}))

    run.warm, run.store = warm, store
    return run


def test_a_run_starts_its_first_fit_from_the_fit_the_run_the_night_before_kept(runs):
    first = runs(END - timedelta(days=1))
    assert first.fit_start.startswith("cold (9 iterations)") and runs.warm[0] is False

    second = runs(END)

    assert runs.warm and all(runs.warm)  # no fit of this run started cold
    assert second.fit_start == (f"from the fit of run {first.version}, whose events ended 1.0 days before this "
                                f"fit's (3 iterations)")
    assert second.status == "accepted"  # the holdout scores what it fitted, and the gate decides


def test_a_run_keeps_each_fit_before_its_holdout_end_and_not_the_final_one(runs):
    first = runs(END - timedelta(days=1))

    holdout_start = END - timedelta(days=1 + 14)
    # The two validation folds' fits and the holdout's; the final fit saw everything.
    assert [fit.until for fit in first.kept_fits] == [holdout_start - timedelta(days=28),
                                                      holdout_start - timedelta(days=14), holdout_start]
    kept = ItemFactors.from_bytes(runs.store.kept_fit(first.kept_fits[-1]))
    assert kept.until == holdout_start.timestamp() and kept.factors.shape == (len(kept.item_ids), 64)


def test_a_week_later_the_run_that_chooses_again_starts_its_folds_from_the_last_choosing_run(runs):
    first = runs(END - timedelta(days=7))

    second = runs(END)

    assert "taken again" not in second.strategy_reason  # a week on, the blend is chosen again
    assert all(runs.warm) and f"run {first.version}, whose events ended 7.0 days before" in second.fit_start


@pytest.mark.parametrize("first_days_before, config", [
    (8, {}),  # older than start_reuse_days
    (-2, {}),  # a backfill: the later run's fits saw this run's holdout
    (0, {"start_reuse_days": 0}),  # every run's first fit cold
    (1, {"alpha": 2.0}),  # kept under other parameters
    (1, {"regularization": 1.0}),
    (1, {"event_weights": {"purchase": 1, "view": 0.2}}),
])
def test_a_run_fits_cold_when_no_kept_fit_is_recent_earlier_and_of_its_configuration(runs, first_days_before, config):
    second_end = END - timedelta(days=max(0, -first_days_before))
    runs(second_end - timedelta(days=first_days_before))

    second = runs(second_end, **config)

    assert runs.warm[0] is False
    assert second.fit_start.startswith("cold") or config.get("start_reuse_days") == 0


def test_the_manifest_says_why_a_first_fit_is_cold(runs):
    # Both choose the blend (8 days apart): the cold fit leaves two warm fits their iterations.
    assert runs(END - timedelta(days=8)).fit_start == (
        "cold (9 iterations): no earlier run kept a fit under this configuration, fitted the same way")

    assert runs(END).fit_start == ("cold (9 iterations): no fit an earlier run kept ended before this fit's "
                                   "events and at most 7 days before them")


def test_a_chain_of_starts_begins_again_from_a_cold_fit_after_start_chain_days(runs):
    """What an erasure removed from the data must leave the starts too: every fit carries what the
    fits it descends from learnt, back to the chain's cold fit."""
    cold = runs(END - timedelta(days=2))
    middle = runs(END - timedelta(days=1))
    assert cold.version in middle.fit_start
    assert middle.kept_fits[-1].chain_began == END - timedelta(days=2)  # the cold fit's run, passed on

    assert middle.version in runs(END, start_chain_days=2).fit_start  # two days: still the chain

    again = runs(END, start_chain_days=1)

    assert runs.warm[0] is False and again.fit_start == (
        "cold (15 iterations): the fits earlier runs kept descend from a cold fit of a run more than 1 days "
        "before this one (start_chain_days): the chain begins again")
    assert again.kept_fits[-1].chain_began == END  # a new chain, from this run's cold fit


def test_a_run_of_cold_fits_only_starts_no_fit_from_an_earlier_one(runs):
    runs(END - timedelta(days=1))

    runs(END, warm_iterations=0)

    assert runs.warm and not any(runs.warm)


@pytest.mark.parametrize("config", [
    {"max_interactions": 9_000_000, "blend_reuse_days": 0, "start_reuse_days": 3},
    # What scores the parts and the folds, not the fit: a blend choice is made again, the fit kept.
    {"top_k": 5, "neighbours": 20, "popularity_days": 14, "max_validation_users": 100, "max_holdout_users": 200},
])
def test_settings_that_do_not_shape_a_fit_still_let_a_run_start_from_it(runs, config):
    first = runs(END - timedelta(days=1))

    second = runs(END, **config)

    assert all(runs.warm) and first.version in second.fit_start


@pytest.mark.parametrize("method", ["1; implicit 0.7.3", ""])  # a deploy that changed the fitting; before it was recorded
def test_a_run_fits_cold_rather_than_start_from_a_fit_made_another_way(runs, method):
    first = runs(END - timedelta(days=1))
    key = f"models/{first.version}/manifest.json"
    stored = json.loads(runs.store.blobs.get(key))
    stored["method"] = method
    runs.store.blobs.put(key, json.dumps(stored).encode())

    second = runs(END)

    assert runs.warm[0] is False
    assert second.fit_start == ("cold (9 iterations): no earlier run kept a fit under this configuration, "
                                "fitted the same way")


@pytest.mark.parametrize("damage", ["bytes", "missing", "record"])
def test_a_kept_fit_that_does_not_read_leaves_the_first_fit_cold_and_the_run_trains(runs, damage):
    first = runs(END - timedelta(days=1))
    holdout_fit = first.kept_fits[-1]
    if damage == "bytes":
        runs.store.blobs.put(holdout_fit.key, b"not the factors")
    elif damage == "missing":
        runs.store.blobs.delete(holdout_fit.key)
    else:
        key = f"models/{first.version}/manifest.json"
        stored = json.loads(runs.store.blobs.get(key))
        stored["kept_fits"][0]["until"] = "yesterday"
        runs.store.blobs.put(key, json.dumps(stored).encode())
        assert runs.store.manifest(first.version).kept_fits == []  # and the manifest still reads

    second = runs(END)

    assert second.status == "accepted" and runs.warm[0] is False
    if damage != "record":
        # The second takes the first's blend: its first fit is the holdout's, with all 15.
        assert f"cold (15 iterations): the fit of run {first.version} could not be used" in second.fit_start


def test_a_run_of_cold_fits_only_keeps_none_no_later_run_could_start_from(runs):
    cold = runs(END - timedelta(days=1), warm_iterations=0)

    assert cold.kept_fits == [] and not [key for key in runs.store.blobs.keys("models/") if "/fit-" in key]


def test_a_blend_without_als_says_where_the_fit_it_publishes_started(runs):
    """Similar items and explanations use ALS factors: the artifact's fit is made even for a kNN
    blend, the run's only ALS fit, and the manifest says where it started (a fixed blend fits
    as a chosen one does, but the hybrid run kept only fits that ended at its holdout, 15 days
    before the events this one saw)."""
    runs(END - timedelta(days=1))

    second = runs(END, blend={"als": 0, "knn": 1, "popularity": 0})

    assert second.strategy == "knn" and runs.warm == [False]
    assert second.fit_start == ("cold (15 iterations): no fit an earlier run kept ended before this fit's events "
                                "and at most 7 days before them")


def test_a_fit_s3_does_not_take_is_left_out_and_the_run_still_publishes(runs, monkeypatch):
    kept = runs.store.keep_fit

    def throttled_once(version, index, *rest):
        if index == 0:
            raise StorageUnavailable("put the fit: S3 is throttling")
        return kept(version, index, *rest)

    monkeypatch.setattr(runs.store, "keep_fit", throttled_once)
    first = runs(END - timedelta(days=1))

    assert first.status == "accepted" and first.active and len(first.kept_fits) == 2


@pytest.mark.parametrize("method", ["keep_fit", "kept_fit"])
def test_an_s3_error_of_any_kind_on_a_kept_fit_costs_the_start_never_the_run(runs, monkeypatch, method):
    """AccessDenied, a KMS key disabled: not the transient faults the store turns into
    StorageUnavailable, and still only a saving lost."""
    from botocore.exceptions import ClientError

    first = runs(END - timedelta(days=1))

    def denied(*args, **kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")

    monkeypatch.setattr(runs.store, method, denied)
    second = runs(END)

    assert second.status == "accepted" and second.active
    if method == "kept_fit":
        assert runs.warm[0] is False and "could not be used" in second.fit_start
    else:
        assert second.kept_fits == [] and first.version in second.fit_start


def test_a_kept_fit_that_cannot_be_used_gives_way_to_the_next_newest():
    """The listing gives ends to the second: of two fits in the same second, the newer may turn
    out to have ended after this fit's events once its file is read."""
    config = TrainingConfig(factors=4)
    warm = pipeline.WarmStart(item_ids=["a"], earlier=[
        EarlierFit(100.0, 100.0, "v-later", lambda: ItemFactors(100.7, ["a"], np.ones((1, 4), np.float32))),
        EarlierFit(100.0, 100.0, "v-earlier", lambda: ItemFactors(100.2, ["a"], np.ones((1, 4), np.float32)))])

    start = warm._earlier_start(3, config, 100.5, config.iterations)

    assert start is not None and "v-earlier" in warm.first_start


def test_a_run_that_fails_after_its_fits_still_keeps_them_for_the_next(runs, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("the artifact could not be made")

    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "_artifact", failing)
        failed = runs(END - timedelta(days=1))
    assert failed.status == "failed" and len(failed.kept_fits) == 3

    second = runs(END)

    assert all(runs.warm) and failed.version in second.fit_start


def test_the_fits_that_ended_before_the_fits_events_and_recently_enough_are_the_starts_newest_first():
    until = END.timestamp()
    config = TrainingConfig()

    def fit(days_before, chain_days_before=20):
        return EarlierFit(until - days_before * DAY, until - chain_days_before * DAY, f"v{days_before}", lambda: None)

    def versions(*fits, config=config):
        return [fit.version for fit in usable(list(fits), until, until, config)[0]]

    assert versions(fit(8), fit(3), fit(1), fit(-1 / 86_400)) == ["v1", "v3"]
    assert versions(fit(7.4)) == ["v7.4"]  # seven nights, a start's drift
    assert versions(fit(7.6), fit(-1)) == []
    assert versions(fit(1), config=config.model_copy(update={"start_reuse_days": 0})) == []
    assert versions(fit(1, chain_days_before=28.4), fit(2, chain_days_before=28.6)) == ["v1"]  # whole days


def test_a_start_keeps_the_items_it_knows_starts_new_ones_cold_and_solves_every_customer_afresh():
    config = TrainingConfig(factors=4)
    earlier = ItemFactors(100.0, ["a", "b"], np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32))

    users, items = start_from(earlier, ["c", "b", "a"], 5, 100.0, config)

    assert users.shape == (5, 4) and not users.any()
    assert items[1].tolist() == [5, 6, 7, 8] and items[2].tolist() == [1, 2, 3, 4]
    assert ((items[0] >= 0) & (items[0] < 0.01)).all()


def test_a_start_whose_own_file_says_it_ended_after_the_fits_events_is_refused():
    """The listing gives a fit's end to the second; the fit's own file gives it exactly."""
    earlier = ItemFactors(100.5, ["a"], np.ones((1, 4), np.float32))

    with pytest.raises(UnusableFit):
        start_from(earlier, ["a"], 1, 100.2, TrainingConfig(factors=4))
    start_from(earlier, ["a"], 1, 100.5, TrainingConfig(factors=4))


def test_a_start_of_another_width_is_refused():
    with pytest.raises(UnusableFit):
        start_from(ItemFactors(1.0, ["a"], np.ones((1, 8), np.float32)), ["a"], 1, 2.0, TrainingConfig(factors=4))


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("data", [
    b"", b"PK\x03\x04 not a zip",
    ItemFactors(1.0, ["a", "b"], np.ones((3, 4), np.float32)).to_bytes(),
    ItemFactors(1.0, ["a"], np.full((1, 4), np.nan, np.float32)).to_bytes(),
    npz(until=np.float64(1), item_ids=np.array(["a"]), factors=np.array([["x", "y"]])),  # texts, not numbers
    npz(until=np.float64(1), item_ids=np.array([["a"]]), factors=np.ones((1, 4), np.float32)),
    npz(until=np.float64("nan"), item_ids=np.array(["a"]), factors=np.ones((1, 4), np.float32)),
    npz(item_ids=np.array(["a"]), factors=np.ones((1, 4), np.float32)),
])
def test_kept_factors_that_do_not_decode_are_refused_as_unusable(data):
    with pytest.raises(UnusableFit):
        ItemFactors.from_bytes(data)
