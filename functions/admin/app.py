"""Admin function: start training, list model versions, activate one (roll back or forward)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from http import HTTPStatus
from typing import Annotated, Any, Literal

import boto3
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.api import create_app, json_response, resolve
from shared.config import get_settings
from shared.errors import Conflict
from shared.observability import logger, metrics, tracer
from shared.storage.dynamo import CLIENT_CONFIG
from shared.experiments import service as experiment_service
from shared.experiments.spec import Experiment, ExperimentSpec
from shared.storage.experiments import ExperimentStore
from shared.storage.models import Manifest, ModelStore, run_manifest
from shared.storage.pipeline import PipelineRun, TrainingPipeline, execution_finished, service_faults
from shared.storage.training_start import TrainingStarts
from shared.training.config import AsOf, TrainingConfig, training_config


@lru_cache(maxsize=1)
def lambda_client() -> Any:
    """Created on first use (moto starts first in tests) and reused while the Lambda is warm."""
    return boto3.client("lambda", config=CLIENT_CONFIG)


class LambdaTrainer:
    """Starts the train function asynchronously: Lambda queues the event and answers at once.

    The local stack has no train function: its gateway replaces `trainer` below with one that
    runs the same handler in a thread (devstack/local_trainer.py).
    """

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name

    def start(self, overrides: dict[str, Any], version: str) -> None:
        """Run `version`, whose manifest the caller has written."""
        with service_faults("Lambda", "start the train function"):
            lambda_client().invoke(FunctionName=self.function_name, InvocationType="Event",
                                   Payload=json.dumps({"config": overrides, "version": version}).encode())


settings = get_settings()
models = ModelStore.from_settings(settings.model_bucket, settings.local_model_dir)
experiments = ExperimentStore(models.blobs)  # beside the model versions
starts = TrainingStarts(models.blobs)  # and the claim that lets one start through at a time
# The export path (TrainingPath=export): runs are executions of the TrainingPipeline state machine,
# which exports the tables and then runs the train function's handler on them; GET /models shows
# the latest. On the scan path the train function is started directly.
pipeline = TrainingPipeline(settings.training_pipeline_arn) if settings.training_pipeline_arn else None
trainer = LambdaTrainer(settings.train_function_name)
app = create_app()

Version = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: TrainingConfig | None = Field(
        default=None, description="Parameters for this run only; unset ones keep their defaults")
    as_of: AsOf | None = Field(
        default=None, description="Train and evaluate as of this moment (ISO 8601, UTC without a zone; not in "
                                  "the future): the window, decay, popularity and holdout count back from it "
                                  "and later events are ignored. A backtest on imported history")


class TrainingStarted(BaseModel):
    """The run goes on in the background: GET /models lists it, "training" and then its outcome."""

    status: Literal["started"]
    version: str | None = Field(description="The run's model version, as GET /models lists it; null on the export "
                                            "path, where the fit names it at the end (GET /models shows the pipeline)")
    message: str


class Serving(BaseModel):
    version: str
    strategy: str = Field(description="hybrid, als, knn, or popular: what customers get")
    reason: str = Field(description="Why, with the holdout's figures")


class ModelList(BaseModel):
    active: str | None
    serving: Serving | None = Field(description="The active version's strategy and why; null: nothing active")
    versions: list[Manifest]
    pipeline: PipelineRun | None = Field(
        default=None, description="The export path's latest run of the TrainingPipeline state machine (export, "
                                  "then fit): its status and stage, and why it failed; null on the scan path")


@app.post(
    "/models/train", tags=["models"], summary="Train a new model version",
    description="Starts a run in the background and answers 202 at once: GET /models lists it as "
                "\"training\", then with its outcome. 409 while another run is in progress.",
)
def start_training(request: TrainRequest | None = None) -> Response[TrainingStarted]:
    overrides = request.config.model_dump(mode="json", exclude_unset=True) if request and request.config else {}
    if request is not None and request.as_of is not None:
        overrides["as_of"] = request.as_of.isoformat()
    config = training_config(overrides)  # with TRAINING_CONFIG's settings: a bad mix is a 422 now, not a failed run later
    now = datetime.now(timezone.utc)
    claim = starts.claim(now, run_over)  # 409 while another start is on its way
    try:
        run, version = _start(config, overrides, now)
    except BaseException:
        starts.release(claim)  # nothing started: the next start need not wait for the claim to age
        raise
    starts.name(claim, run)
    logger.info("training started", extra={"overrides": overrides, "run": run})
    return json_response(HTTPStatus.ACCEPTED, TrainingStarted(
        status="started", version=version,
        message="training runs in the background; follow it with GET /models").model_dump())


def _start(config: TrainingConfig, overrides: dict[str, Any], now: datetime) -> tuple[str, str | None]:
    """Start a run unless one is in progress: (the run, as the claim names it; its model version)."""
    running = models.in_progress()
    if running is not None:
        raise Conflict(f"training run {running.version} is in progress (started {running.started_at:%Y-%m-%d %H:%M:%S} "
                       "UTC); follow it with GET /models and start another when it has finished")
    if pipeline is not None:
        return pipeline.start(overrides), None  # the fit names the version, at the pipeline's end
    # Listed as "training" from now on, not from the train function's cold start, which takes it over.
    manifest = run_manifest(config, now)
    models.save(manifest)
    try:
        trainer.start(overrides, manifest.version)
    except Exception:
        models.discard(manifest)  # started nothing: not listed as a run
        raise
    return manifest.version, manifest.version


def run_over(run: str) -> bool:
    """Whether the run a start claim names has finished: its execution (the export path), or its manifest."""
    if run.startswith("arn:"):
        return pipeline is not None and execution_finished(run)
    return models.run_finished(run)


@app.get("/models", tags=["models"], summary="List model versions, newest first, and the active one")
def list_models(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> ModelList:
    everything = models.manifests()
    active = next((m for m in everything if m.active), None)
    serving = None if active is None else Serving(
        version=active.version, strategy=active.strategy or "als",
        reason=active.strategy_reason or f"{active.status}: {active.reason}")
    return ModelList(active=active.version if active else None, serving=serving, versions=everything[:limit],
                     pipeline=pipeline.latest() if pipeline else None)


@app.post(
    "/models/<version>/activate", tags=["models"], summary="Serve a model version (roll back or forward)",
    description="409 when the version has no artifact, or failed its evaluation and force is not true.",
)
def activate(version: Version, force: Annotated[bool, Query()] = False) -> Manifest:
    manifest = models.activate(version, force=force)
    logger.info("model activated", extra={"version": version, "forced": force})
    return manifest


class ExperimentWithResults(Experiment):
    results: dict[str, Any] | None = Field(default=None, description=(
        "The latest nightly results: per variant exposed, click_through, conversion, revenue_per_exposed with "
        "95% intervals, and against_control with always-valid intervals and p-values (docs/experiments.md)"))
    history: list[dict[str, Any]] | None = Field(default=None, description="Every day's results, oldest first")


class ExperimentList(BaseModel):
    experiments: list[ExperimentWithResults]


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: str = Field(min_length=1, max_length=40, description="The variant whose version becomes active")


ExperimentId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^exp-[0-9]{8}-[0-9a-f]{6}$")]


@app.post("/experiments", tags=["experiments"], summary="Start an experiment on a surface",
          description="409 while another experiment runs on the same surface, or when a variant's version "
                      "has no artifact; 404 when it does not exist.")
def start_experiment(spec: ExperimentSpec) -> Response[Experiment]:
    experiment = experiment_service.start(spec, experiments, models, datetime.now(timezone.utc))
    logger.info("experiment started", extra={"experiment": experiment.experiment_id, "surface": spec.surface})
    return json_response(HTTPStatus.CREATED, experiment.model_dump(mode="json"))


@app.get("/experiments", tags=["experiments"], summary="Experiments, newest first, with their latest results")
def list_experiments(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> ExperimentList:
    return ExperimentList(experiments=[
        ExperimentWithResults(**e.model_dump(), results=experiments.latest_results(e.experiment_id))
        for e in experiments.recent(limit)])


@app.get("/experiments/<experiment_id>", tags=["experiments"], summary="One experiment and every day's results")
def get_experiment(experiment_id: ExperimentId) -> ExperimentWithResults:
    found, daily = experiments.get(experiment_id), experiments.results(experiment_id)
    return ExperimentWithResults(**found.model_dump(), results=daily[-1] if daily else None, history=daily)


@app.post("/experiments/<experiment_id>/stop", tags=["experiments"], summary="End an experiment; nothing else changes")
def stop_experiment(experiment_id: ExperimentId) -> Experiment:
    return experiment_service.stop(experiment_id, experiments, datetime.now(timezone.utc))


@app.post("/experiments/<experiment_id>/promote", tags=["experiments"],
          summary="End an experiment and activate the winning variant's version",
          description="Through the same gate as POST /models/{version}/activate: 409 for a rejected version, "
                      "and for popular, which is a baseline and no version.")
def promote_experiment(experiment_id: ExperimentId, request: Promotion) -> Experiment:
    experiment = experiment_service.promote(experiment_id, request.variant, experiments, models,
                                            datetime.now(timezone.utc))
    logger.info("experiment promoted", extra={"experiment": experiment_id, "variant": request.variant})
    return experiment


@app.get("/attribution", tags=["experiments"], summary="Credited revenue, click-through and conversion by day",
         description="Per day, strategy, model version and variant, from the nightly run.")
def attribution() -> dict[str, Any]:
    return experiments.report()


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, settings.max_body_bytes)
