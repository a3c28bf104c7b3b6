"""Segments function: a customer's segment tags, computed on request from their current data."""

from __future__ import annotations

from datetime import datetime, timezone
from http import HTTPStatus
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from shared.api import create_app, json_response, resolve
from shared.config import get_settings
from shared.errors import PayloadTooLarge
from shared.http_params import PathId
from shared.observability import logger, metrics, tracer
from shared.segments.families import FAMILIES
from shared.segments.rules import (MAX_CUSTOM_SEGMENTS, MAX_DEFINITION_BODY_BYTES, CustomSegment, CustomSegmentIn,
                                  listable, listed_size)
from shared.segments.statistics import ActiveStatistics
from shared.segments.service import current_members, customer_segments
from shared.serving.catalog_snapshot import KeyedSnapshot
from shared.storage.catalog import catalog_categories, categories_by_key
from shared.storage.models import ModelStore
from shared.storage.segments import SegmentStore

settings = get_settings()
segment_store = SegmentStore(settings.segments_table)
# The categories of everything a customer bought, from a snapshot of the catalog's categories
# loaded in the background, an id it lacks read by key (catalog_snapshot.py): a customer of 170
# purchases cost about 82 read units a request, read by key each time.
categories = KeyedSnapshot(load_all=lambda: catalog_categories(settings.items_table),
                           read=lambda item_ids: categories_by_key(settings.items_table, item_ids))
# The customer base's quantiles from statistics.json beside the active model, never the model
# itself: this function ships no numpy (tests/unit/test_segments_imports.py).
statistics = ActiveStatistics(ModelStore.from_settings(settings.model_bucket, settings.local_model_dir),
                              settings.model_refresh_seconds)
app = create_app()
Family = Literal[FAMILIES]  # type: ignore[valid-type]  # the tuple is the one list of families


class SegmentTag(BaseModel):
    segment_id: str
    family: str
    name: str
    reason: str = Field(description="The numbers behind the tag")


class UserSegments(BaseModel):
    user_id: str
    personalized: bool = Field(description="False: the customer objected to profiling; only declared data is used")
    statistics_version: str | None = Field(description="Model version whose customer statistics were used")
    tags: list[SegmentTag]
    features: dict[str, Any]


@app.get(
    "/users/<user_id>/segments", tags=["segments"], summary="A customer's segment tags, computed now",
    description="With the reason for each tag and the features behind them. An unknown customer has no tags.",
)
def user_segments(user_id: PathId) -> UserSegments:
    stats = statistics.get()
    found = customer_segments(settings, user_id, stats.values if stats else {}, segment_store.definitions(),
                              datetime.now(timezone.utc), categories.details)
    categories.refresh_when_due()
    if found is None:  # unknown customer: no tags, not an error
        return UserSegments(user_id=user_id, personalized=True, statistics_version=None, tags=[], features={})
    features = vars(found.features)
    shown = features if found.personalized else {k: features[k] for k in ("country", "region", "city", "attributes")}
    return UserSegments(user_id=user_id, personalized=found.personalized,
                        statistics_version=stats.version if stats else None,
                        tags=[SegmentTag(**t.as_dict()) for t in found.tags], features=shown)


class SegmentSummary(BaseModel):
    segment_id: str
    family: str
    name: str
    members: int


class SegmentList(BaseModel):
    run: str | None = Field(description="The nightly run these counts come from")
    materialized_at: str | None
    families: dict[str, int] = Field(description="Every family of the run, with how many segments it has")
    segments: list[SegmentSummary] = Field(description="By family, then the largest first")
    next_cursor: str | None = Field(description="Pass as ?cursor= (with the same family) for the next page; "
                                                "null on the last page")
    custom: list[CustomSegment] = Field(description="Custom definitions; members from the next nightly run on")
    unreadable: list[str] = Field(description=(
        "Ids of stored custom definitions that cannot be read (written by an older version, or damaged). "
        "They are not applied; DELETE /segments/{id} removes them"))
    unlisted: list[str] = Field(description=(
        f"Ids of custom definitions too large to list: larger as listed than the {MAX_DEFINITION_BODY_BYTES:,} bytes "
        "POST /segments takes (stored before it bounded a definition as listed). They are still applied; "
        "DELETE /segments/{id} and define it again, smaller, to list it"))


class Member(BaseModel):
    user_id: str
    reason: str


class MemberPage(BaseModel):
    segment_id: str
    run: str
    members: list[Member]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


@app.get(
    "/segments", tags=["segments"], summary="Segments with member counts, and custom definitions",
    description="Counts come from the latest nightly run, a page at a time: by family, the largest first "
                "(?family= for one family); pass next_cursor as ?cursor= for the next page. Every page has "
                "the custom definitions.",
)
def list_segments(family: Annotated[Family | None, Query()] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
                  cursor: Annotated[str | None, Query(max_length=2048)] = None) -> SegmentList:
    listing = segment_store.listing(family, limit, cursor)
    stored = segment_store.read_definitions()
    custom, unlisted = listable(stored.readable)
    return SegmentList(run=listing.run, materialized_at=listing.at, families=listing.families,
                       segments=[SegmentSummary(**entry) for entry in listing.segments],
                       next_cursor=listing.next_cursor, custom=custom, unreadable=stored.unreadable, unlisted=unlisted)


@app.post(
    "/segments", tags=["segments"], summary="Define a custom segment",
    description=(f"Its members are computed from the next nightly run on; 409 when the name is taken or "
                 f"{MAX_CUSTOM_SEGMENTS} segments are defined, 413 for a body over {MAX_DEFINITION_BODY_BYTES} "
                 "bytes, 422 for a rule that cannot be evaluated or passes a limit (docs/segments.md)."),
)
def create_segment(definition: CustomSegmentIn) -> Response[CustomSegment]:
    stored = definition.stored(datetime.now(timezone.utc))
    if (size := listed_size(stored)) > MAX_DEFINITION_BODY_BYTES:
        raise PayloadTooLarge(f"the definition takes {size:,} bytes as GET /segments lists it (a character past "
                              f"ASCII takes up to 12): at most {MAX_DEFINITION_BODY_BYTES:,}", field="body")
    segment_store.create_definition(stored)
    return json_response(HTTPStatus.CREATED, stored.model_dump(mode="json"))


@app.delete("/segments/<segment_id>", tags=["segments"], summary="Delete a custom segment definition")
def delete_segment(segment_id: PathId) -> Response[None]:
    segment_store.delete_definition(segment_id)
    return Response(status_code=HTTPStatus.NO_CONTENT)


@app.get(
    "/segments/<segment_id>/members", tags=["segments"], summary="Members of a segment, a page at a time",
    description="From the latest nightly run, less customers who objected or were erased since (a page may "
                "hold fewer than limit); pass next_cursor as ?cursor= for the next page.",
)
def segment_members(segment_id: PathId, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    cursor: Annotated[str | None, Query(max_length=2048)] = None) -> MemberPage:
    run, members, next_cursor = current_members(settings, segment_store, segment_id, limit, cursor)
    return MemberPage(segment_id=segment_id, run=run, next_cursor=next_cursor, members=[Member(**m) for m in members])


# Under the service-wide MAX_BODY_BYTES: a definition is small, and refusing a larger body before it
# is parsed bounds the work of validating it.
BODY_LIMITS = {"POST /segments": MAX_DEFINITION_BODY_BYTES}


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    limit = BODY_LIMITS.get(event.get("routeKey", ""), settings.max_body_bytes)
    return resolve(app, event, context, min(limit, settings.max_body_bytes))
