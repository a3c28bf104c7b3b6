"""Train function: run by the nightly schedule, and by POST /models/train on AWS."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.config import get_settings
from shared.observability import logger, metrics, tracer
from shared.storage.models import ModelStore
from shared.storage.training_data import load_training_data
from shared.training.config import TrainingConfig, training_config
from shared.training.job import run_training
from shared.segments.service import materialize_after_training

settings = get_settings()
models = ModelStore.from_settings(settings.model_bucket, settings.local_model_dir)


def load(config: TrainingConfig, now: datetime):  # noqa: ANN201 - TrainingData
    return load_training_data(settings.events_table, settings.users_table, config, now)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Event: an EventBridge scheduled event, or {"config": {...overrides}} from the admin API."""
    now = datetime.now(timezone.utc)
    manifest = run_training(load, models, training_config(event.get("config")), now)
    materialize_after_training(settings, models, now)
    pruned = models.prune(settings.model_versions_kept, settings.model_max_age_days, now)
    logger.info("old model versions pruned", extra={"versions": pruned})
    metrics.add_metric("TrainingRuns", "Count", 1)
    return manifest.model_dump(mode="json")
