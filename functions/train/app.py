"""Train function: run by the nightly schedule, and by POST /models/train on AWS."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.config import get_settings
from shared.errors import Conflict, NotFound, StorageUnavailable
from shared.observability import logger, metrics, tracer
from shared.storage.bus import bus_from_settings
from shared.experiments.service import outcomes_since, record_results
from shared.storage.experiments import ExperimentStore
from shared.storage.models import NEW_VERSION, ModelStore
from shared.storage.training_start import Claim, TrainingStarts
from shared.storage.child_process import ChildFailed
from shared.storage.outcomes import Outcomes
from shared.storage.pipeline import TrainingPipeline, execution_finished
from shared.storage.secrets import configured_recommendation_key
from shared.storage.export_queries import export_queries
from shared.storage.exports import UnusableExport, plan_events_export
from shared.storage.training_data import (LaterOutcomes, SegmentsRead, download_queried, query_locally, read_nightly,
                                          read_nightly_from_exports, table_exports)
from shared.training.config import TrainingConfig, training_config
from shared.training.job import run_training
from shared.training.pipeline import TrainingData
from shared.segments.service import materialize_after_training

settings = get_settings()
models = ModelStore.from_settings(settings.model_bucket, settings.local_model_dir)
starts = TrainingStarts(models.blobs)  # the claim POST /models/train takes, for the schedules' runs too
experiments = ExperimentStore(models.blobs)  # beside the model versions: their results and the attribution report
bus = bus_from_settings(settings.event_bus_name, settings.local_bus_file)  # the nightly triggers (docs/triggers.md)
# The hourly schedule's task: train only while no version serves, so a new shop gets popular
# items (at least) within the hour of its first purchases, not at the next nightly run.
FIRST_MODEL = "first_model"
# The TrainingPipeline's own questions: which events export to take tonight (a full or an
# incremental one), and the query stage's Athena statements (SQL lives in shared/storage/sql/).
EXPORT_PLAN, EXPORT_QUERIES = "export_plan", "export_queries"
# And its first question, for a run its Nightly schedule started: whether another run goes first.
START_CHECK = "start_check"


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Event: the nightly schedule's, {"task": "first_model"} from the hourly one,
    {"config": {...overrides}, "version": name} from the admin API, or on the export path the TrainingPipeline's
    {"exports": {"events": key, "users": key, "items": key}} (each export's manifest-summary.json),
    "events_chain" (the events exports tonight's incremental one adds to), "interactions" and
    "ids" (the folders its Athena queries wrote); or its {"task": "start_check", ...},
    {"task": "export_plan"} or {"task": "export_queries", ...}."""
    now = datetime.now(timezone.utc)
    if event.get("task") == EXPORT_PLAN:
        return plan_events_export(settings.export_bucket, now, settings.export_retention_days)
    if event.get("task") == START_CHECK:
        return {"skipped": pipeline_start_check(event["execution"], event["state_machine"], now)}
    chains = export_chains(event)
    if event.get("task") == EXPORT_QUERIES:
        return export_queries(settings.export_bucket, settings.athena_database, event["run"], chains["events"],
                              training_config(event.get("config")), now)
    version = started_version(event)
    if version is not None and not awaited(version):
        # A second delivery of a start (Lambda retries an async event whose run failed later, and may
        # deliver one twice): the version has run already. Running it again would rewrite it, active perhaps.
        logger.warning("a start whose version is not waiting to run: ignored", extra={"version": version})
        return {"skipped": f"version {version} is not waiting to run"}
    first_model = event.get("task") == FIRST_MODEL
    if first_model and models.active() is not None:
        return {"skipped": "a version is active; the nightly run trains the next one"}
    claim = None
    if version is None and not chains:  # a schedule's run (the pipeline's fit is in its execution)
        claim = scheduled_claim(now)
        if isinstance(claim, str):
            return {"skipped": claim}
    try:
        return run_night(event, chains, version, first_model, now)
    finally:
        if claim is not None:
            starts.release(claim)  # over: the next start need not wait for the claim to age


def run_night(event: dict[str, Any], chains: dict[str, list[str]], version: str | None, first_model: bool,
              now: datetime) -> dict[str, Any]:
    """Train, then the segments, the experiments' results, the running experiments' names and pruning."""
    segments: list[SegmentsRead] = []
    outcomes: list[LaterOutcomes | None] = []
    since = outcomes_since(experiments, now)

    def load(config: TrainingConfig, at: datetime) -> TrainingData:
        if settings.training_path == "export":
            exports = table_exports({"events": settings.events_table, "users": settings.users_table,
                                     "items": settings.items_table}, settings.local_export_dir,
                                    settings.export_bucket, chains, Path(workdir))
            # The window's interactions: Athena's output on AWS, the same SQL on DuckDB locally.
            queried = (download_queried(settings.export_bucket, {part: event[part] for part in ("interactions", "ids")},
                                        Path(workdir), chains.get("events", []))
                       if event.get("interactions") else query_locally(exports.events, config, at, Path(workdir)))
            read = read_nightly_from_exports(exports, config, at, queried, settings.events_table, outcomes_since=since)
        else:
            read = read_nightly(settings.events_table, settings.users_table, settings.items_table, config, at,
                                outcomes_since=since)
        segments.append(read.segments)  # only this outlives training: the interactions are freed with it
        outcomes.append(read.outcomes)
        return read.training_data()

    with tempfile.TemporaryDirectory() as workdir:  # downloaded exports, gone when the segments are written
        manifest = run_training(load, models, training_config(event.get("config")), now, settings.fit_device,
                                version)
        if first_model and not manifest.counts.get("interactions"):
            models.discard(manifest)  # no purchases yet: nothing to keep but the log line
            return manifest.model_dump(mode="json")
        # The segments use what training read, their histories decoded now, after training (and on
        # the export path the users export read again, so the exports stay until then), with the
        # statistics of the version it activated. A training read that failed is tried again
        # for them (a Scan); a users export gone since training costs the night's segments.
        # Meanwhile the export path reads the outcomes from the events export, past 64 MB of files
        # in another process (below it, here after them).
        later = outcomes[0] if outcomes else None
        if later is not None:
            later.start()
        try:
            try:
                materialize_after_training(settings, models, now, segments[0].customers if segments else None, bus)
            except Exception as error:  # noqa: BLE001 - the model is active by now: it stands, GET /segments
                # lists the previous run (and says when), and the rest of the night does not depend on them
                foreseen = (StorageUnavailable, UnusableExport)  # else a fault of ours: with its traceback
                (logger.error if isinstance(error, foreseen) else logger.exception)(
                    "segments not materialized", extra={"reason": failure_reason(error, *foreseen)})
                metrics.add_metric("SegmentsNotMaterialized", "Count", 1)
            found = outcomes_taken(later)
        finally:
            if later is not None:
                later.close()
    if found is not None:
        try:
            record_results(experiments, found, configured_recommendation_key(), now,
                           settings.attribution_basis, settings.attribution_window_days)
        except Exception as error:  # noqa: BLE001 - the model and segments stand; tomorrow's run writes them
            (logger.error if isinstance(error, StorageUnavailable) else logger.exception)(  # ours: with its traceback
                "experiment results not written", extra={"reason": failure_reason(error, StorageUnavailable)})
            metrics.add_metric("ExperimentResultsFailed", "Count", 1)
    try:
        experiments.reconcile_running(now)  # the names serving reads the running experiments by
    except StorageUnavailable as error:  # the names stand as they are; tomorrow's run tries again
        logger.error("running experiments' names not reconciled", extra={"reason": error.message})
        metrics.add_metric("ExperimentNamesFailed", "Count", 1)
    try:
        pruned = models.prune(settings.model_versions_kept, settings.model_max_age_days, now)
        logger.info("old model versions pruned", extra={"versions": pruned})
    except StorageUnavailable as error:  # kept until tomorrow's run prunes them
        logger.error("old model versions not pruned", extra={"reason": error.message})
        metrics.add_metric("ModelPruneFailed", "Count", 1)
    metrics.add_metric("TrainingRuns", "Count", 1)
    return manifest.model_dump(mode="json")


def scheduled_claim(now: datetime, over: Callable[[str], bool] | None = None) -> Claim | str:
    """The start claim POST /models/train takes, for a schedule's run; or why the run is skipped: a
    start holds the claim, or a run is in progress (a schedule may deliver its event twice, and a
    run started from the API may still be going). Two runs at once would each publish a version
    and write the night's segments. `over`: whether the run a held claim names has ended."""
    try:
        claim = starts.claim(now, over or _run_over)
    except Conflict as error:
        return _skipped(error.message)
    running = models.in_progress()
    if running is None:
        return claim
    starts.release(claim)
    return _skipped(f"training run {running.version} is in progress")


def pipeline_start_check(execution: str, state_machine: str, now: datetime) -> str | None:
    """For a TrainingPipeline run its Nightly schedule started (its execution's ARN): None to go
    on, the start claim then naming it, so that POST /models/train refuses a start until it ends;
    or why it gives way: the claim is held, or another run of the pipeline is past its own
    check (POST /models/train's, or the schedule's event delivered twice)."""
    # A claim naming this run is its own, taken by this check before a retry of it.
    claim = scheduled_claim(now, lambda run: run == execution or _run_over(run))
    if isinstance(claim, str):
        return claim
    try:
        others = TrainingPipeline(state_machine).others_in_progress(execution)
    except BaseException:
        starts.release(claim)  # nothing started: the claim need not hold for its minute
        raise
    if others:
        starts.release(claim)
        return _skipped(f"training pipeline run {others[0]} is in progress")
    starts.name(claim, execution)
    return None


def _skipped(reason: str) -> str:
    logger.warning("a scheduled run skipped", extra={"reason": reason})
    metrics.add_metric("ScheduledRunsSkipped", "Count", 1)
    return f"another run is starting or in progress: {reason}"


def _run_over(run: str) -> bool:
    """Whether the run a claim names has finished: a pipeline's execution (an ARN, on the export
    path) by Step Functions, a run of this function by its manifest."""
    if run.startswith("arn:"):
        return execution_finished(run)
    try:
        return models.run_finished(run)
    except Conflict:  # a manifest that does not read runs nothing
        return True


def started_version(event: dict[str, Any]) -> str | None:
    """The version POST /models/train wrote the run's manifest under; None for the schedules' runs."""
    version = event.get("version")
    return version if isinstance(version, str) and NEW_VERSION.fullmatch(version) else None


def awaited(version: str) -> bool:
    """Whether POST /models/train's version waits for its run: listed, and still "training" (not
    finished, nor listed as abandoned since)."""
    try:
        return models.manifest(version).status == "training"
    except (NotFound, Conflict):
        return False


def failure_reason(error: Exception, *telling: type[Exception]) -> str:
    """The log's reason: the message of an error whose message says it all (`telling`), else its type too."""
    return str(error) if isinstance(error, telling) else f"{type(error).__name__}: {error}"


def outcomes_taken(later: LaterOutcomes | None) -> Outcomes | None:
    """The night's outcomes; None when there are none to take, or when the events export could not
    be read for them (a file deleted by hand since training, a line that is not JSON, the read's
    process killed): the model is active and the segments written by then, so the run stands and
    the results are written by tomorrow's run (from each experiment's first day)."""
    if later is None:
        return None
    try:
        return later.result()
    except Exception as error:  # noqa: BLE001 - whatever the read met, it costs the results alone
        logger.error("experiment results not written",
                     extra={"reason": failure_reason(error, UnusableExport, ChildFailed)})
        metrics.add_metric("ExperimentResultsFailed", "Count", 1)
        return None


def export_chains(event: dict[str, Any]) -> dict[str, list[str]]:
    """Each table's export chain in the pipeline's event, the full export's key first: tonight's
    events export adds to the chain of the nights before ("events_chain"); users and items are
    exported in full each night. Empty without exports (the scan path, the local stack)."""
    return {role: [*event.get("events_chain", []), key] if role == "events" else [key]
            for role, key in event.get("exports", {}).items()}
