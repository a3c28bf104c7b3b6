"""A training run from start to finish, recorded in its manifest whatever happens.

Order matters for "no half-written version becomes active": the manifest says "training" first,
the artifact is written, then the manifest with the outcome, and only then, for an accepted
model, the active pointer. A run killed at any point leaves at worst a version marked
"training" (listed as "abandoned" later) and the previous version still active. The manifest and
the pointer are written patiently (PATIENCE_DELAYS): a run's work is worth a minute of waiting
for S3 to take them, rather than showing as abandoned.

The run's end is `config.as_of` when set (a backtest on imported history), else now: the window,
the recency decay, popularity and the holdout count back from it, and later events are ignored.

Which version serves (`should_activate`): an accepted model, as always. A run whose strategy is
"popular" (the model did not beat popularity, or there was too little data to evaluate one)
activates its popular-only version when nothing serves yet, when what serves is itself
popular, or when popularity beat the model on this holdout: customers get the better strategy.
It never replaces an active model when its own model was rejected for falling below that one,
nor for too little data.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from typing import TypeVar

from shared.errors import Conflict, NotFound, StorageUnavailable
from shared.observability import logger
from shared.storage.exports import UnusableExport
from shared.storage.models import BlendChoiceRecord, KeptFitRecord, Manifest, ModelStore, run_manifest
from shared.training.config import BlendWeights, TrainingConfig
from shared.training.earlier_fits import EarlierFit, ItemFactors, UnusableFit
from shared.training.fit_device import CPU, Device, resolve
from shared.training.interactions import TooManyInteractions
from shared.training.method import method
from shared.training.hybrid import BLENDS, Blend
from shared.training.pipeline import ACCEPTED, POPULAR, BlendChoice, TrainingData, TrainingOutcome, train_model

DataLoader = Callable[[TrainingConfig, datetime], TrainingData]
T = TypeVar("T")
# Waits between tries of a manifest or pointer write that S3 refused after botocore's own retries.
PATIENCE_DELAYS = (2.0, 4.0, 8.0, 16.0, 30.0)


def run_training(load: DataLoader, models: ModelStore, config: TrainingConfig,
                 now: datetime | None = None, device: Device = CPU, version: str | None = None) -> Manifest:
    """One run; ALS fits on `device` when it is usable here, else on the CPU (the manifest says which).
    `version`: the one POST /models/train named for it, whose manifest it takes over."""
    now = now or datetime.now(timezone.utc)
    end = config.as_of or now
    device, fit_device = resolve(device)
    manifest = run_manifest(config, now, version)
    manifest.fit_device, manifest.method = fit_device, method()
    _patiently(lambda: models.save(manifest), "the run's manifest")
    logger.info("training started", extra={"version": manifest.version, "end": manifest.window["end"]})
    activate = False
    try:
        started = time.perf_counter()
        data = load(config, end)
        manifest.timings["load"] = time.perf_counter() - started
        runs = _earlier_runs(models, config)
        outcome = train_model(data, config, _active_ndcg(models), device, latest_blend_choice(runs, config, end),
                              earlier_fits(models, runs, config), _fit_keeper(models, manifest))
        manifest.status, manifest.reason = outcome.status, outcome.reason
        manifest.strategy, manifest.strategy_reason = outcome.strategy, outcome.strategy_reason
        manifest.metrics, manifest.counts = outcome.metrics, outcome.counts
        manifest.timings.update(outcome.timings)
        manifest.fit_device = outcome.gpu_failure or manifest.fit_device
        manifest.blend_choice = _blend_choice_record(outcome.blend_choice)
        manifest.fit_start = outcome.fit_start
        if outcome.artifact is not None:
            started = time.perf_counter()
            models.publish(manifest, outcome.artifact)
            manifest.timings["publish"] = time.perf_counter() - started
        activate = should_activate(outcome, manifest, _active_strategy(models))
    except TooManyInteractions as error:
        manifest.status = "failed"
        manifest.reason = f"{error}: shorten window_days or train from a DynamoDB export"
    except StorageUnavailable as error:
        manifest.status, manifest.reason = "failed", f"storage unavailable: {error.message}"
    except UnusableExport as error:  # none, or a damaged one: the reason says what to do
        manifest.status, manifest.reason = "failed", str(error)
    except Exception as error:  # noqa: BLE001 - recorded in the manifest and the log, never half-published
        logger.exception("training failed")
        manifest.status, manifest.reason = "failed", f"unexpected error: {type(error).__name__}: {error}"
    manifest.finished_at = datetime.now(timezone.utc)
    manifest.timings = {stage: round(seconds, 3) for stage, seconds in manifest.timings.items()}
    _patiently(lambda: models.save(manifest), "the run's outcome")
    if manifest.artifact is not None and activate:
        # A popular-strategy version is not "accepted" (its model lost or was never fitted).
        manifest = _patiently(lambda: models.activate(manifest.version, force=manifest.status != ACCEPTED),
                              "the active pointer")
    logger.info("training finished", extra={"version": manifest.version, "status": manifest.status,
                                            "reason": manifest.reason, "metrics": manifest.metrics})
    return manifest


def _patiently(write: Callable[[], T], what: str) -> T:
    for delay in PATIENCE_DELAYS:
        try:
            return write()
        except StorageUnavailable as error:
            logger.warning(f"{what} was not written; trying again", extra={"reason": error.message, "in_seconds": delay})
            time.sleep(delay)
    return write()


def should_activate(outcome: TrainingOutcome, manifest: Manifest, active_strategy: str | None) -> bool:
    """None: no version is active."""
    if outcome.artifact is None:
        return False
    if manifest.status == ACCEPTED:
        return True
    if outcome.strategy != POPULAR:
        return False  # a model rejected for falling below the active one
    return active_strategy is None or active_strategy == POPULAR or outcome.popularity_is_better


def _active_strategy(models: ModelStore) -> str | None:
    pointer = models.active()
    if pointer is None:
        return None
    return models.manifest(pointer.version).strategy or "als"


def _active_ndcg(models: ModelStore) -> float | None:
    pointer = models.active()
    if pointer is None:
        return None
    return models.manifest(pointer.version).metrics.get("model", {}).get("ndcg")


# What a run's blend choice does not depend on: a choice made under other values of these still holds.
NOT_CHOICE_PARAMETERS = ("as_of", "blend_reuse_days", "max_interactions", "min_gain_over_popularity",
                         "max_drop_from_active", "start_reuse_days", "start_chain_days")
# What an ALS fit does not depend on besides: the other parts, the folds, how many customers are
# scored and on how many items. A fit depends on the events before its end (checked by the
# start's own rules) and on every other parameter: the window, the weights, ALS's own.
NOT_FIT_PARAMETERS = (*NOT_CHOICE_PARAMETERS, "holdout_days", "popularity_days", "popularity_half_life_days",
                      "neighbours", "blend", "validation_folds", "max_validation_users", "max_holdout_users",
                      "top_k", "min_users_to_evaluate")


def _takes_choices(config: TrainingConfig) -> bool:
    return config.blend is None and config.blend_reuse_days > 0


def _takes_fits(config: TrainingConfig) -> bool:
    return config.start_reuse_days > 0 and config.warm_iterations > 0


def _earlier_runs(models: ModelStore, config: TrainingConfig) -> list[Manifest]:
    """Every version's manifest, when this run may take something of theirs: a blend choice, a fit."""
    if not _takes_choices(config) and not _takes_fits(config):
        return []  # nothing to take: no manifest need be read
    try:
        return models.manifests()
    except StorageUnavailable as error:  # the run chooses and fits cold: the time of both, not the night
        logger.warning("the earlier runs could not be read: this run chooses its own blend and fits cold",
                       extra={"reason": error.message})
        return []


def latest_blend_choice(runs: list[Manifest], config: TrainingConfig, end: datetime) -> BlendChoice | None:
    """The newest blend a run's validation folds chose by `end` (this run's), among every version's
    runs, whatever their outcome: which version the gate or an operator activated must not decide
    which choice a later holdout scores. Only a choice made under this run's configuration counts
    (a change of any parameter that shapes it, the window, the weights, the folds, ALS's, chooses
    again), by a run that scored the same way (method.py: a deploy that changed how chooses again),
    and only one of the current grid (`BLENDS`: a deploy that changed it chooses again too)."""
    if not _takes_choices(config):
        return None
    wanted = _choice_parameters(config.model_dump(mode="json"))
    found = [manifest.blend_choice for manifest in runs
             if manifest.blend_choice is not None and manifest.blend_choice.chosen_at <= end
             and _choice_parameters(manifest.parameters) == wanted and manifest.method == method()]
    if not found:
        return None
    record = max(found, key=lambda choice: choice.chosen_at)
    weights = record.weights
    blend = Blend(weights.als, weights.knn, weights.popularity)
    return BlendChoice(blend, record.reason, record.chosen_at.timestamp()) if blend in BLENDS else None


def earlier_fits(models: ModelStore, runs: list[Manifest], config: TrainingConfig) -> list[EarlierFit]:
    """The fits earlier runs kept under this configuration (every parameter that shapes a fit:
    those of the scores alone, the folds and the gate may differ) and fitted the same way
    (method.py), whatever their outcome: which one the first fit starts from is WarmStart's to
    decide (earlier_fits.usable), knowing when its own events end. Each is read only then."""
    if not _takes_fits(config):
        return []
    wanted = _fit_parameters(config.model_dump(mode="json"))
    return [EarlierFit(record.until.timestamp(), record.chain_began.timestamp(), manifest.version,
                       partial(_read_fit, models, record))
            for manifest in runs if _fit_parameters(manifest.parameters) == wanted and manifest.method == method()
            for record in manifest.kept_fits]


def _read_fit(models: ModelStore, record: KeptFitRecord) -> ItemFactors:
    """Whatever keeps the file from being read (missing, damaged, or an S3 error of any kind:
    AccessDenied, a disabled KMS key, not only the transient ones the store retries) makes it
    unusable: the first fit is cold, and the run goes on."""
    try:
        data = models.kept_fit(record)
    except (NotFound, Conflict, StorageUnavailable) as error:
        raise UnusableFit(error.message) from error
    except Exception as error:  # noqa: BLE001 - a start is a saving, never worth the run
        raise UnusableFit(f"{type(error).__name__}: {error}") from error
    return ItemFactors.from_bytes(data)


def _fit_keeper(models: ModelStore, manifest: Manifest) -> Callable[[ItemFactors], None]:
    """What keeps each fit a run hands it (WarmStart) beside the run's version, as it is made, and
    lists it in the manifest: its factors are not held until the run publishes, and a run that
    fails later still leaves them. One that S3 does not take, for whatever reason, is left out
    (logged): a later run's first fit is cold, or starts from another."""
    numbers = itertools.count()

    def keep(fit: ItemFactors) -> None:
        # To the second, rounded down: a later run compares the end with its own fit's, exactly once
        # read; and the chain's beginning, earlier, only errs toward beginning a chain again.
        until, began = (datetime.fromtimestamp(math.floor(moment), timezone.utc) for moment in (fit.until, fit.began))
        number = next(numbers)
        try:
            manifest.kept_fits.append(models.keep_fit(manifest.version, number, fit.to_bytes(), until, began))
        except Exception:  # noqa: BLE001 - any S3 error (AccessDenied too): a saving lost, never the run
            logger.exception("a fit's item factors were not kept", extra={"number": number})

    return keep


def _choice_parameters(parameters: dict) -> dict:
    return {name: value for name, value in parameters.items() if name not in NOT_CHOICE_PARAMETERS}


def _fit_parameters(parameters: dict) -> dict:
    return {name: value for name, value in parameters.items() if name not in NOT_FIT_PARAMETERS}


def _blend_choice_record(choice: BlendChoice | None) -> BlendChoiceRecord | None:
    """What a later run may take: a validated choice only (not one the configuration fixed, nor the
    default of a run too small to validate)."""
    if choice is None or choice.at is None:
        return None
    blend = choice.blend
    return BlendChoiceRecord(weights=BlendWeights(als=blend.als, knn=blend.knn, popularity=blend.popularity),
                             reason=choice.reason[:2000], chosen_at=datetime.fromtimestamp(choice.at, timezone.utc))
