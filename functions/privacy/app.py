"""Privacy function: a customer's consent, access to their data, and erasure.

Separate from ingest so that only this function holds delete rights over customer data.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from shared.api import create_app, json_response, recorder, resolve
from shared.config import get_settings
from shared.http_params import PathId
from shared.observability import logger, metrics, tracer
from shared.storage.privacy import COMPLETE, IN_PROGRESS, PrivacyStore
from shared.consent import Consent, ConsentHistory, ConsentUpdate

settings = get_settings()
privacy = PrivacyStore(settings.events_table, settings.users_table, settings.segments_table)
app = create_app()
# Erasure stops deleting this long before the function's timeout, to answer in time.
ERASE_MARGIN_SECONDS = 5.0


def seconds_left(context: LambdaContext) -> Callable[[], float]:
    return lambda: context.get_remaining_time_in_millis() / 1000 - ERASE_MARGIN_SECONDS


class Erased(BaseModel):
    user_id: str
    status: str = Field(description="complete, or in_progress (202): the scheduled sweep finishes it")
    erased_at: str = Field(description="Events stamped before this are refused from now on")
    erased: dict[str, int] = Field(description="What this call deleted: events, segment_memberships")
    kept: str = Field(description="What is kept, and why")
    linked_visitors: list[str] = Field(default_factory=list,
                                       description="The customer's linked visitor ids, erased with them")


class Export(BaseModel):
    user_id: str
    profile: dict[str, Any] | None
    consent: Consent = Field(description="The current consent, every purpose")
    consent_history: ConsentHistory = Field(description="Every consent change recorded, oldest first")
    segment_memberships: list[dict[str, Any]]
    derived: dict[str, Any] = Field(description=(
        "What is kept from the events to serve fast: bought_set (counts of the one-way keys of the items "
        "bought and orders counted, which leave them out of recommendations), recent_activity (how many "
        "of the newest events are copied in one item); null where none is kept"))
    linked_derived: list[dict[str, Any]] = Field(default_factory=list, description=(
        "The same for each linked visitor id, oldest link first, each naming its user_id"))
    events: list[dict[str, Any]] = Field(description="A page of events; follow next_cursor for the rest")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class ConsentState(BaseModel):
    user_id: str
    consent: Consent = Field(description="Every purpose: granted, when, where, which text, who recorded it")


class ConsentRecord(ConsentState):
    history: ConsentHistory = Field(description="Every change recorded, oldest first (the newest 200)")


@app.put(
    "/users/<user_id>/consent", tags=["privacy"], summary="Record a customer's consent, per purpose and channel",
    description="Only the purposes sent change; each is recorded with its time, source, text version and "
                "who recorded it, and appended to the history. personalization withdrawn: popular items only, "
                "not trained on from the next run. profiling withdrawn: declared-data segments only (behavioural "
                "memberships end at once). Contact channels (email, sms, push) are not granted until opted in. "
                'The body of before, {"personalization": false}, sets personalization and profiling.',
)
def put_consent(user_id: PathId, update: ConsentUpdate) -> ConsentState:
    consent = privacy.set_consent(user_id, update, recorder(app))
    logger.info("consent changed", extra={"user_id": user_id,
                                          **{p.value: u.granted for p, u in update.updates().items()}})
    return ConsentState(user_id=user_id, consent=consent)


@app.get(
    "/users/<user_id>/consent", tags=["privacy"], summary="A customer's consent and its history",
    description="The current state of every purpose (defaults for those never recorded: personalization and "
                "profiling granted, contact channels not) and every change recorded.",
)
def get_consent(user_id: PathId) -> ConsentRecord:
    consent, history = privacy.consent(user_id)
    return ConsentRecord(user_id=user_id, consent=consent, history=history)


@app.get(
    "/users/<user_id>/export", tags=["privacy"], summary="Everything held about a customer (access)",
    description="The profile, the consent and its history, the segment memberships and the events, a page at a time (at most about 2 MB): "
                "the customer's own, then those of each visitor id linked to them.",
)
def export(user_id: PathId, cursor: Annotated[str | None, Query(max_length=2048)] = None) -> Export:
    return Export(**privacy.export(user_id, cursor))


@app.delete(
    "/users/<user_id>", tags=["privacy"], summary="Erase a customer",
    description="Deletes their events, profile, purchase summary and segment memberships, keeping only a "
                "suppression record (when, and their objections if any: each purpose withdrawn, with when, "
                "where, which text and who; the consent history goes). 200 when done; 202 when the "
                "function's time ran out first: a scheduled sweep finishes it (erasure_status in the record). "
                "Events stamped before the erasure are refused from then on.",
)
def erase(user_id: PathId) -> Response[Erased]:
    erasure = privacy.erase(user_id, seconds_left(app.lambda_context))
    logger.info("customer erased", extra={"user_id": user_id, "status": erasure.status, **erasure.erased})
    kept = "user_id and the time of the erasure" + (
        f", and the objections (consent withdrawn: {', '.join(erasure.objections_kept)})"
        if erasure.objections_kept else "")
    body = Erased(user_id=user_id, status=erasure.status, erased_at=erasure.erased_at, erased=erasure.erased,
                  kept=kept, linked_visitors=erasure.linked_visitors)
    status = HTTPStatus.OK if erasure.status == COMPLETE else HTTPStatus.ACCEPTED
    return json_response(status, body.model_dump())


def finish_erasures(context: LambdaContext) -> dict[str, int]:
    """The scheduled sweep: go on with every erasure that ran out of time, while time lasts. Each
    on its own: one that fails (logged, counted, tried again next hour) stops none of the others."""
    outcomes = {COMPLETE: 0, IN_PROGRESS: 0, "failed": 0}
    for user_id in privacy.pending_erasures():
        try:
            erasure = privacy.finish(user_id, seconds_left(context))
        except Exception:  # noqa: BLE001 - whatever one customer's data holds, the others' erasures go on
            logger.exception("an erasure could not be continued: tried again by the next sweep",
                             extra={"user_id": user_id})
            metrics.add_metric("ErasuresNotContinued", MetricUnit.Count, 1)
            outcomes["failed"] += 1
            continue
        if erasure is not None:
            outcomes[erasure.status] += 1
            logger.info("erasure continued", extra={"user_id": user_id, "status": erasure.status, **erasure.erased})
    return outcomes


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if event.get("task") == "finish_erasures":  # the schedule in template.yaml, not an HTTP request
        return finish_erasures(context)
    return resolve(app, event, context, settings.max_body_bytes)
