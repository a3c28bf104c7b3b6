"""Ingest function: events, catalog items and user profiles in."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.api import create_app, json_response, resolve
from shared.catalog import MAX_ITEMS_PER_BATCH, Item, ItemIn, ItemUpsert
from shared.config import get_settings
from shared.errors import PayloadTooLarge
from shared.events import MAX_EVENTS_PER_BATCH, Event
from shared.http_params import PathId
from shared.ingestion import ingest_events
from shared.observability import logger, metrics, tracer
from shared.storage.catalog import CatalogStore
from shared.storage.events import EventStore
from shared.storage.users import UserStore
from shared.users import User, UserProfileIn
from shared.validation import FieldError, Rejection, validate_each

settings = get_settings()
events_store = EventStore(settings.events_table, settings.users_table, settings.ingest_concurrency)
catalog = CatalogStore(settings.items_table)
users = UserStore(settings.users_table)
app = create_app()



class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(
        min_length=1, max_length=MAX_EVENTS_PER_BATCH,
        json_schema_extra={"items": Event.model_json_schema(ref_template="#/components/schemas/{model}")},
        description="Each entry is validated on its own; valid ones are stored even if others are not.",
    )


class ItemBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any] = Field(min_length=1, max_length=MAX_ITEMS_PER_BATCH)


class BatchResult(BaseModel):
    accepted: int = Field(description="Entries stored by this request")
    duplicates: int = Field(default=0, description="Entries already stored before (same id)")
    rejected: list[dict[str, Any]] = Field(
        description="Per rejected entry: index, its id (event_id or item_id), errors [{field, message}]"
    )


class EventBatchResult(BatchResult):
    refused_after_erasure: int = Field(
        description="Of the rejected: events of an erased customer stamped before the erasure")


def batch_response(
    accepted: int, duplicates: int, rejected: list[Rejection], id_name: str, **extra: int
) -> Response:
    """200 when nothing was rejected, 207 when some entries were, 422 when all were."""
    body = (EventBatchResult if extra else BatchResult)(
        accepted=accepted,
        duplicates=duplicates,
        rejected=[
            {"index": r.index, id_name: r.id, "errors": [vars(e) for e in r.errors]}
            for r in rejected
        ],
        **extra,
    )
    if not rejected:
        status = HTTPStatus.OK
    elif accepted or duplicates:
        status = HTTPStatus.MULTI_STATUS
    else:
        status = HTTPStatus.UNPROCESSABLE_ENTITY
    return json_response(status, body.model_dump())


@app.post(
    "/events", tags=["events"], summary="Record interaction events (1 to 1,000)",
    description="Each event is validated on its own: 200 when all were stored, 207 when some were "
                "rejected (the valid ones are stored), 422 when all were. Idempotent on (user_id, event_id): "
                "after a timeout or a 503, send the same batch again.",
)
def post_events(batch: EventBatchIn) -> Response[EventBatchResult]:
    result = ingest_events(
        batch.events, events_store, max_future_seconds=settings.max_event_future_seconds
    )
    metrics.add_metric("EventsAccepted", MetricUnit.Count, result.accepted)
    metrics.add_metric("EventsDuplicate", MetricUnit.Count, result.duplicates)
    metrics.add_metric("EventsRejected", MetricUnit.Count, len(result.rejected))
    metrics.add_metric("EventsRefusedErased", MetricUnit.Count, result.refused_after_erasure)
    return batch_response(result.accepted, result.duplicates, result.rejected, "event_id",
                          refused_after_erasure=result.refused_after_erasure)


@app.put("/items/<item_id>", tags=["catalog"], summary="Create or replace a catalog item")
def put_item(item_id: PathId, item: ItemIn) -> Item:
    written = catalog.put_many([ItemUpsert(item_id=item_id, **item.model_dump())])
    if written.refused:
        raise PayloadTooLarge(written.refused[0], field="item")
    return written.stored[0]


@app.post(
    "/items", tags=["catalog"], summary="Create or replace catalog items (1 to 500)",
    description="Answers like POST /events: 200, 207 with the rejected items listed, or 422.",
)
def post_items(batch: ItemBatchIn) -> Response[BatchResult]:
    checked = validate_each(batch.items, ItemUpsert, "item_id")
    written = catalog.put_many(checked.valid)
    checked.reject_stored({place: FieldError("entry", reason) for place, reason in written.refused.items()}, "item_id")
    return batch_response(len(written.stored), 0, checked.rejected, "item_id")


@app.get("/items/<item_id>", tags=["catalog"], summary="A catalog item")
def get_item(item_id: PathId) -> Item:
    return catalog.get(item_id)


@app.put(
    "/users/<user_id>", tags=["customers"], summary="Create or replace a customer's profile",
    description="Consent is kept when the body leaves it out; the purchase summary is never changed here.",
)
def put_user(user_id: PathId, profile: UserProfileIn) -> User:
    return users.put_profile(user_id, profile)


@app.get("/users/<user_id>", tags=["customers"], summary="A customer's profile and purchase summary")
def get_user(user_id: PathId) -> User:
    return users.get(user_id)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, settings.max_body_bytes)
