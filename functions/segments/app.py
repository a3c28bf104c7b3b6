"""Segments function: a customer's segment tags, computed on request from their current data."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from shared.api import create_app, resolve
from shared.config import get_settings
from shared.errors import NotFound, NotImplementedYet
from shared.events import MAX_ID_LENGTH
from shared.observability import logger, metrics, tracer
from shared.segments.features import customer_features
from shared.segments.tags import segment
from shared.serving.active_model import ActiveModel
from shared.storage.catalog import catalog_details
from shared.storage.history import recent_history
from shared.storage.models import ModelStore
from shared.storage.users import UserStore
from shared.training.artifact import ModelArtifact

settings = get_settings()
users = UserStore(settings.users_table)


class Statistics:
    """What segmentation needs of the active model: the customer base's quantiles."""

    def __init__(self, version: str, artifact: ModelArtifact) -> None:
        self.version = version
        self.values = artifact.customer_statistics


statistics = ActiveModel(ModelStore.from_settings(settings.model_bucket, settings.local_model_dir),
                         settings.model_refresh_seconds, Statistics)
app = create_app()
PathId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)]


class SegmentTag(BaseModel):
    segment_id: str
    family: str
    name: str
    reason: str = Field(description="The numbers behind the tag")


class UserSegments(BaseModel):
    user_id: str
    personalized: bool = Field(description="False: the customer objected; only declared data is used")
    statistics_version: str | None = Field(description="Model version whose customer statistics were used")
    tags: list[SegmentTag]
    features: dict[str, Any]


@app.get("/users/<user_id>/segments")
def user_segments(user_id: PathId) -> UserSegments:
    try:
        profile = users.get(user_id).model_dump(mode="json")
    except NotFound:
        profile = None
    personalized = profile is None or profile["consent"]["personalization"]
    history = recent_history(settings.events_table, user_id) if personalized else []
    if profile is None and not history:  # unknown customer: no tags, not an error
        return UserSegments(user_id=user_id, personalized=True, statistics_version=None, tags=[], features={})
    categories = {i: item.category for i, item in catalog_details(
        settings.items_table, [e.item_id for e in history if e.event_type == "purchase"]).items()}
    stats = statistics.get()
    features = customer_features(profile or {}, history, categories, datetime.now(timezone.utc))
    tags = segment(features, stats.values if stats else {}, personalized)
    shown = vars(features) if personalized else {k: getattr(features, k) for k in ("country", "region", "city", "attributes")}
    return UserSegments(user_id=user_id, personalized=personalized, statistics_version=stats.version if stats else None,
                        tags=[SegmentTag(**t.as_dict()) for t in tags], features=shown)


@app.get("/segments")
def list_segments() -> dict:
    raise NotImplementedYet("segment definitions and member counts are not available yet")


@app.get("/segments/<segment_id>/members")
def segment_members(segment_id: PathId) -> dict:
    raise NotImplementedYet("segment members are not available yet")


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, settings.max_body_bytes)
