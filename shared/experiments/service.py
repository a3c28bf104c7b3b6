"""Starting, stopping and promoting experiments: the rules, with the stores they change."""

from __future__ import annotations

import secrets
from datetime import datetime

from shared.errors import Conflict
from shared.experiments.spec import ACTIVE, POPULAR, Experiment, ExperimentSpec
from shared.storage.experiments import ExperimentStore
from shared.storage.models import ModelStore


def start(spec: ExperimentSpec, experiments: ExperimentStore, models: ModelStore, now: datetime) -> Experiment:
    """One experiment per surface at a time; every version a variant names must be servable."""
    for running in experiments.running():
        if running.spec.surface == spec.surface:
            raise Conflict(f"experiment {running.experiment_id} already runs on {spec.surface}: stop or promote it first",
                           field="surface")
    for variant in spec.variants:
        if variant.serves in (ACTIVE, POPULAR):
            continue
        manifest = models.manifest(variant.serves)  # NotFound names the version
        if manifest.artifact is None:
            raise Conflict(f"variant {variant.name}: version {variant.serves} has no artifact ({manifest.status})",
                           field="variants")
    if any(v.serves == ACTIVE for v in spec.variants) and models.active() is None:
        raise Conflict("a variant serves the active model, and no version is active yet", field="variants")
    experiment = Experiment(experiment_id=f"exp-{now:%Y%m%d}-{secrets.token_hex(3)}", spec=spec, started_at=now)
    experiments.save(experiment)
    return experiment


def stop(experiment_id: str, experiments: ExperimentStore, now: datetime) -> Experiment:
    experiment = _running(experiment_id, experiments)
    experiment.status, experiment.ended_at = "stopped", now
    experiments.save(experiment)
    return experiment


def promote(experiment_id: str, variant_name: str, experiments: ExperimentStore, models: ModelStore,
            now: datetime) -> Experiment:
    """End the experiment, and make the variant's version the active one through the usual gate
    (ModelStore.activate: a rejected version is refused; the previous one stays to roll back to)."""
    experiment = _running(experiment_id, experiments)
    variant = next((v for v in experiment.spec.variants if v.name == variant_name), None)
    if variant is None:
        raise Conflict(f"{variant_name!r} is not a variant of {experiment_id}", field="variant")
    if variant.serves == POPULAR:
        raise Conflict("popular is a baseline, not a model version: stop the experiment, or promote a model variant",
                       field="variant")
    if variant.serves != ACTIVE:
        models.activate(variant.serves)
    experiment.status, experiment.ended_at, experiment.promoted = "promoted", now, variant.name
    experiments.save(experiment)
    return experiment


def _running(experiment_id: str, experiments: ExperimentStore) -> Experiment:
    experiment = experiments.get(experiment_id)
    if experiment.status != "running":
        raise Conflict(f"experiment {experiment_id} is {experiment.status}", field="experiment_id")
    return experiment
