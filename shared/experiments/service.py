"""Starting, stopping and promoting experiments: the rules, with the stores they change."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from shared.errors import Conflict, NotFound, StorageUnavailable
from shared.events import format_timestamp
from shared.experiments.attribution import ATTRIBUTION_WINDOW, Touch, credit, daily_report
from shared.experiments.results import daily_tallies, exposures, summarize
from shared.experiments.spec import ACTIVE, POPULAR, Experiment, ExperimentSpec
from shared.observability import logger
from shared.storage.experiments import ExperimentStore
from shared.storage.outcomes import Outcomes
from shared.storage.models import ModelStore


def start(spec: ExperimentSpec, experiments: ExperimentStore, models: ModelStore, now: datetime) -> Experiment:
    """One experiment per surface at a time; every version a variant names must be servable."""
    for running in experiments.running():
        if running.spec.surface == spec.surface:
            raise Conflict(f"experiment {running.experiment_id} already runs on {spec.surface}: stop or promote it first",
                           field="surface")
    for place, variant in enumerate(spec.variants):
        if variant.serves in (ACTIVE, POPULAR):
            continue
        field = f"variants[{place}].serves"
        try:
            manifest = models.manifest(variant.serves)
        except NotFound as error:
            raise NotFound(error.message, field=field) from None
        if manifest.artifact is None:
            raise Conflict(f"variant {variant.name}: version {variant.serves} has no artifact ({manifest.status})",
                           field=field)
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


RESULTS_AFTER_END = timedelta(days=1)  # an ended experiment's results are written once more, then kept as they are
REPORT_DAYS = 60  # the attribution report's reach: the longest window (30 days) and a month of days


def outcomes_since(experiments: ExperimentStore, now: datetime) -> str:
    """How far back the nightly read keeps impressions, clicks and purchases: the report's days,
    or the start of the oldest experiment whose results are still written. When the experiments
    cannot be listed (S3 unavailable), the report's days: the night trains all the same, and the
    results that need more wait for the next one."""
    try:
        starts = [e.started_at for e in experiments.all() if _results_due(e, now)]
    except StorageUnavailable as error:
        logger.warning("the experiments could not be listed: the night keeps the report's days of outcomes",
                       extra={"reason": error.message})
        starts = []
    return format_timestamp(min([now - timedelta(days=REPORT_DAYS), *starts]))


def record_results(experiments: ExperimentStore, outcomes: Outcomes, key: bytes, now: datetime,
                   basis: str = "click", window_days: int = ATTRIBUTION_WINDOW // 86_400) -> list[str]:
    """Each running (or just ended) experiment's results as of today, from its first day on, and
    the attribution report of the last REPORT_DAYS days. Returns the experiments written."""
    written = []
    for experiment in experiments.all():
        if not _results_due(experiment, now):
            continue
        spec = experiment.spec
        seen = exposures(experiment.experiment_id, outcomes.touches, key)
        end = min(now, experiment.ended_at or now)
        first = experiment.started_at.replace(hour=0, minute=0, second=0, microsecond=0)
        day_ends = [min(first + timedelta(days=n + 1), end) for n in range((end - first).days + 1)]
        days = daily_tallies(seen, outcomes.purchases, [at.timestamp() for at in day_ends])
        summary = summarize([v.name for v in spec.variants], spec.control_variant, days)
        experiments.put_results(experiment.experiment_id, f"{end:%Y-%m-%d}",
                                {**summary, "as_of": end.isoformat(), "days": len(day_ends)})
        written.append(experiment.experiment_id)
    shown: dict[tuple[str, str], list[Touch]] = {}
    for touch in outcomes.touches:
        shown.setdefault((touch.user_id, touch.item_id), []).append(touch)
    credits = [found for purchase in outcomes.purchases
               if (found := credit(purchase, shown.get((purchase.user_id, purchase.item_id), []), key,
                                   window_days * 86_400, basis)) is not None]
    experiments.put_report({"as_of": now.isoformat(), "basis": basis, "window_days": window_days,
                            "days": [line.as_dict() for line in daily_report(outcomes.touches, credits, key)]})
    return written


def _results_due(experiment: Experiment, now: datetime) -> bool:
    return experiment.status == "running" or (experiment.ended_at is not None
                                              and now - experiment.ended_at <= RESULTS_AFTER_END)
