"""Admin function: start training, list model versions, activate one (roll back or forward)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Annotated

import boto3
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.api import create_app, json_response, resolve
from shared.config import get_settings
from shared.observability import logger, metrics, tracer
from shared.storage.dynamo import CLIENT_CONFIG
from shared.storage.models import Manifest, ModelStore
from shared.training.config import TrainingConfig, training_config

settings = get_settings()
models = ModelStore.from_settings(settings.model_bucket, settings.local_model_dir)
app = create_app()

Version = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: TrainingConfig | None = Field(
        default=None, description="Parameters for this run only; unset ones keep their defaults")


class ModelList(BaseModel):
    active: str | None
    versions: list[Manifest]


@app.post(
    "/models/train", tags=["models"], summary="Train a new model version",
    description="On AWS, starts the train function and answers 202 at once (follow it with GET /models); "
                "on the local stack, trains in-process and answers 201 with the new version's manifest.",
)
def start_training(request: TrainRequest | None = None) -> Response[Manifest]:
    overrides = request.config.model_dump(exclude_unset=True) if request and request.config else {}
    config = training_config(overrides)
    if settings.train_function_name:
        boto3.client("lambda", config=CLIENT_CONFIG).invoke(
            FunctionName=settings.train_function_name, InvocationType="Event",
            Payload=json.dumps({"config": overrides}).encode())
        return json_response(HTTPStatus.ACCEPTED, {"status": "started",
                                                   "message": "training runs in the background; see GET /models"})
    # The local stack has no train function: train here, and answer when it is done. Imported
    # here because on AWS this function only invokes the trainer and does not ship the ML stack.
    from shared.segments.service import materialize_after_training
    from shared.storage.training_data import load_training_data
    from shared.training.job import run_training

    now = datetime.now(timezone.utc)
    manifest = run_training(
        lambda cfg, at: load_training_data(settings.events_table, settings.users_table, cfg, at),
        models, config, now)
    materialize_after_training(settings, models, now)
    pruned = models.prune(settings.model_versions_kept, settings.model_max_age_days, now)
    logger.info("old model versions pruned", extra={"versions": pruned})
    return json_response(HTTPStatus.CREATED, manifest.model_dump(mode="json"))


@app.get("/models", tags=["models"], summary="List model versions, newest first, and the active one")
def list_models(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> ModelList:
    versions = models.manifests()[:limit]
    active = models.active()
    return ModelList(active=active.version if active else None, versions=versions)


@app.post(
    "/models/<version>/activate", tags=["models"], summary="Serve a model version (roll back or forward)",
    description="409 when the version has no artifact, or failed its evaluation and force is not true.",
)
def activate(version: Version, force: Annotated[bool, Query()] = False) -> Manifest:
    manifest = models.activate(version, force=force)
    logger.info("model activated", extra={"version": version, "forced": force})
    return manifest


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, settings.max_body_bytes)
