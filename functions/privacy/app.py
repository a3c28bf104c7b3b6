"""Privacy function: a customer's consent, access to their data, and erasure.

Separate from ingest so that only this function holds delete rights over customer data.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from shared.api import create_app, resolve
from shared.config import get_settings
from shared.events import MAX_ID_LENGTH
from shared.observability import logger, metrics, tracer
from shared.storage.privacy import PrivacyStore
from shared.storage.users import user_from_row
from shared.users import Consent, User

settings = get_settings()
privacy = PrivacyStore(settings.events_table, settings.users_table, settings.segments_table)
app = create_app()
PathId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)]


class Erased(BaseModel):
    user_id: str
    erased: dict[str, int]


@app.put(
    "/users/<user_id>/consent", tags=["privacy"], summary="Record a customer's consent to personalization",
    description="personalization false (an objection): popular items only, declared-data segments only, "
                "and not trained on from the next run.",
)
def put_consent(user_id: PathId, consent: Consent) -> User:
    """false: no personalized recommendations or behavioural segments, not trained on from the next run."""
    logger.info("consent changed", extra={"user_id": user_id, "personalization": consent.personalization})
    return user_from_row(privacy.set_consent(user_id, consent.personalization))


@app.get(
    "/users/<user_id>/export", tags=["privacy"], summary="Everything held about a customer (access)",
    description="The profile, every event and the segment memberships.",
)
def export(user_id: PathId) -> dict[str, Any]:
    return privacy.export(user_id)


@app.delete(
    "/users/<user_id>", tags=["privacy"], summary="Erase a customer",
    description="Deletes their events, profile, purchase summary and segment memberships; "
                "the next training run no longer sees them.",
)
def erase(user_id: PathId) -> Erased:
    erased = privacy.erase(user_id)
    logger.info("customer erased", extra={"user_id": user_id, **erased})
    return Erased(user_id=user_id, erased=erased)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, settings.max_body_bytes)
