"""Ingest function: events, catalog items and user profiles in; visitors' ids and tokens, the events
browsers and apps send with their own token, and linking a visitor to the customer who signs in."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.api import caller, create_app, json_response, recorder, resolve
from shared.catalog import MAX_ITEMS_PER_BATCH, Item, ItemIn, ItemUpsert
from shared.client_events import MAX_CLIENT_EVENTS_PER_BATCH, client_rules, owned
from shared.config import get_settings
from shared.errors import DomainError, Forbidden, PayloadTooLarge, TooManyRequests
from shared.events import MAX_EVENTS_PER_BATCH, Event, Identifier, format_timestamp
from shared.http_params import PathId
from shared.ingestion import IngestResult, ingest_events
from shared.observability import logger, metrics, tracer
from shared.storage.bus import bus_from_settings
from shared.storage.catalog import CatalogStore
from shared.storage.events import EventStore
from shared.storage.secrets import configured_visitor_tokens as visitor_tokens
from shared.storage.users import UserStore
from shared.users import User, UserProfileIn
from shared.validation import FieldError, Rejection, validate_each
from shared.visitors import InvalidVisitorToken, new_visitor_id

settings = get_settings()
events_store = EventStore(settings.events_table, settings.users_table, settings.ingest_concurrency)
# Items back in stock or cheaper are published at once (docs/triggers.md).
catalog = CatalogStore(settings.items_table, bus_from_settings(settings.event_bus_name, settings.local_bus_file))
users = UserStore(settings.users_table)
app = create_app()
# Every linked visitor id is kept (export and erasure cover them all); past this many a new link is
# refused (409), which keeps the profile row, read on every request, under one 4 KB read unit.
MAX_LINKED_VISITORS = 100


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(
        min_length=1, max_length=MAX_EVENTS_PER_BATCH,
        json_schema_extra={"items": Event.model_json_schema(ref_template="#/components/schemas/{model}")},
        description="Each entry is validated on its own; valid ones are stored even if others are not.",
    )


class ClientEventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(
        min_length=1, max_length=MAX_CLIENT_EVENTS_PER_BATCH,
        json_schema_extra={"items": Event.model_json_schema(ref_template="#/components/schemas/{model}")},
        description="Events of the token's own id (user_id may be left out): view, add_to_cart, "
                    "remove_from_cart, click, search; at most 7 days old. Each is validated on its own.",
    )


class VisitorToken(BaseModel):
    visitor_id: str = Field(description="The visitor's anonymous id: keep it on the device")
    token: str = Field(description="Send as Authorization: Bearer <token> on the visitor's routes")
    token_type: str = "Bearer"
    expires_in: int = Field(description="Seconds the token is valid; renew it at POST /visitors/{visitor_id}/token "
                                        "(accepted up to 30 days after it expired)")


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    visitor_token: str | None = Field(default=None, max_length=4096,
                                      description="The device's visitor token: proof that the visitor id is the caller's")
    visitor_id: Identifier | None = Field(default=None, description="The shop's systems only: link this id as it is")


class VisitorLink(BaseModel):
    user_id: str
    visitor_id: str
    linked_at: str
    linked_visitors: list[str] = Field(description="The customer's linked visitor ids, newest first")


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
    return events_answer(ingest_events(batch.events, events_store, max_future_seconds=settings.max_event_future_seconds))


def events_answer(result: IngestResult) -> Response[EventBatchResult]:
    metrics.add_metric("EventsAccepted", MetricUnit.Count, result.accepted)
    metrics.add_metric("EventsDuplicate", MetricUnit.Count, result.duplicates)
    metrics.add_metric("EventsRejected", MetricUnit.Count, len(result.rejected))
    metrics.add_metric("EventsRefusedErased", MetricUnit.Count, result.refused_after_erasure)
    return batch_response(result.accepted, result.duplicates, result.rejected, "event_id",
                          refused_after_erasure=result.refused_after_erasure)


@app.post(
    "/visitors", tags=["visitors"], summary="A new visitor: an anonymous id and its token (no credentials)",
    description="For a logged-out person on the website or in the app. The token opens that visitor's own "
                "events and recommendations only, for an hour; renew it with POST /visitors/{visitor_id}/token.",
)
def new_visitor() -> Response[VisitorToken]:
    issued = visitor_tokens().issue(new_visitor_id(), time.time())
    metrics.add_metric("VisitorsStarted", MetricUnit.Count, 1)
    return json_response(HTTPStatus.CREATED, VisitorToken(**issued.body()).model_dump())


@app.post(
    "/visitors/<visitor_id>/token", tags=["visitors"], summary="A fresh token for the same visitor",
    description="Send the visitor's current token, valid or expired less than 30 days ago.",
)
def renew_visitor_token(visitor_id: PathId) -> VisitorToken:
    return VisitorToken(**visitor_tokens().issue(visitor_id, time.time()).body())


def client_batch(owner: str, batch: ClientEventBatchIn) -> Response[EventBatchResult]:
    wait = users.count_client_events(owner, len(batch.events), time.time(),
                                     settings.client_events_per_window, settings.client_events_window_seconds)
    if wait:
        raise TooManyRequests(f"a visitor or customer id may send {settings.client_events_per_window} events per "
                              f"{settings.client_events_window_seconds} s; wait {wait} s", retry_after_seconds=wait)
    now = datetime.now(timezone.utc)
    result = ingest_events(owned(batch.events, owner), events_store, now=now, refusal=client_rules(owner, now),
                           max_future_seconds=settings.max_event_future_seconds)
    return events_answer(result)


@app.post(
    "/visitors/<visitor_id>/events", tags=["events"], summary="A visitor's own events, from their browser or app",
    description="Up to 100 events with the visitor's token; answers like POST /events (200, 207, 422).",
)
def post_visitor_events(visitor_id: PathId, batch: ClientEventBatchIn) -> Response[EventBatchResult]:
    return client_batch(visitor_id, batch)


@app.post(
    "/users/<user_id>/events", tags=["events"], summary="A signed-in customer's own events, from their browser or app",
    description="Up to 100 events with the customer's token; answers like POST /events (200, 207, 422). "
                "Purchases come from the shop's backend (POST /events).",
)
def post_customer_events(user_id: PathId, batch: ClientEventBatchIn) -> Response[EventBatchResult]:
    return client_batch(user_id, batch)


@app.post(
    "/users/<user_id>/visitors", tags=["visitors"],
    summary="Link a device's visitor id to the customer who signed in on it",
    description="The customer's token proves the customer, the visitor token the visitor: the customer's next "
                "recommendations use the visitor's events too, and export and erasure cover them. A visitor id "
                "links to one customer only (409 for another).",
)
def link_visitor(user_id: PathId, request: LinkRequest) -> VisitorLink:
    if request.visitor_token is not None:
        try:
            visitor_id = visitor_tokens().verify(request.visitor_token, time.time(), refresh=True)
        except InvalidVisitorToken as invalid:
            raise Forbidden(str(invalid), field="visitor_token") from None
    elif request.visitor_id is not None and caller(app).trusted:
        visitor_id = request.visitor_id
    else:
        raise DomainError("send the device's visitor_token", field="visitor_token")
    if visitor_id == user_id:
        raise DomainError("a visitor id cannot be linked to itself", field="visitor_token")
    linked_at, linked = users.link_visitor(user_id, visitor_id, format_timestamp(datetime.now(timezone.utc)),
                                           MAX_LINKED_VISITORS)
    return VisitorLink(user_id=user_id, visitor_id=visitor_id, linked_at=linked_at, linked_visitors=linked)


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
    description="Consent is kept when the body leaves it out; when sent, it is recorded as PUT "
                "/users/{user_id}/consent records it. The purchase summary is never changed here. 409 "
                "while the customer is being erased, or when an erasure completed while the request ran "
                "(nothing of it is kept after the erasure; sent again, it starts a new profile).",
)
def put_user(user_id: PathId, profile: UserProfileIn) -> User:
    return users.put_profile(user_id, profile, recorder(app))


@app.get("/users/<user_id>", tags=["customers"], summary="A customer's profile and purchase summary")
def get_user(user_id: PathId) -> User:
    return users.get(user_id)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, settings.max_body_bytes, visitor_tokens)
