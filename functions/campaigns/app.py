"""Campaigns function: start a campaign export (POST /campaigns), follow it (GET /campaigns/{id}),
and run it: the same function, invoked asynchronously by itself with {"campaign_id": ...}.

The API call answers 202 at once; the job reads the whole shop and may take minutes, so it runs
in its own invocation with the function's long timeout. On the local stack the gateway replaces
`runner` with one that runs the job in a thread (devstack/gateway.py).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from functools import lru_cache
from http import HTTPStatus
from typing import Annotated, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from shared.api import create_app, json_response, resolve
from shared.campaigns.job import fail_campaign, read_shop, run_campaign, start_campaign
from shared.campaigns.spec import CAMPAIGN_ID_PATTERN, Campaign, CampaignRequest
from shared.config import get_settings
from shared.errors import NotFound, StorageUnavailable
from shared.observability import logger, metrics, tracer
from shared.storage.campaigns import CampaignStore
from shared.storage.catalog import CatalogStore
from shared.storage.dynamo import CLIENT_CONFIG
from shared.storage.models import ModelStore
from shared.storage.segments import SegmentStore


@lru_cache(maxsize=1)
def lambda_client() -> Any:
    return boto3.client("lambda", config=CLIENT_CONFIG)


class LambdaRunner:
    """Runs a campaign in a new asynchronous invocation of this same function (the name in its own
    Lambda context): Lambda queues the event and answers at once."""

    def start(self, campaign_id: str) -> None:
        try:
            lambda_client().invoke(FunctionName=app.lambda_context.function_name, InvocationType="Event",
                                   Payload=json.dumps({"campaign_id": campaign_id}).encode())
        except (ClientError, BotoCoreError) as error:  # after botocore's own retries
            raise StorageUnavailable(f"the campaign job could not be started ({type(error).__name__}); "
                                     "start the campaign again") from error


settings = get_settings()
campaigns = CampaignStore.from_settings(settings.campaign_bucket, settings.local_campaign_dir)
models = ModelStore.from_settings(settings.model_bucket, settings.local_model_dir)
segment_store = SegmentStore(settings.segments_table)
runner = LambdaRunner()
app = create_app()

CampaignId = Annotated[str, Path(pattern=CAMPAIGN_ID_PATTERN, max_length=64)]


class CampaignList(BaseModel):
    campaigns: list[Campaign]


@app.post(
    "/campaigns", tags=["campaigns"], summary="Export an audience with each customer's recommendations",
    description="Starts a job and answers 202 with the campaign (status CREATE PENDING); GET /campaigns/{id} "
                "follows it to ACTIVE, with the output's addresses, or CREATE FAILED with the reason. 404 when "
                "item_id is not in the catalog or segment_id is neither a segment of the latest nightly run "
                "nor a custom definition.",
)
def create_campaign(request: CampaignRequest) -> Response[Campaign]:
    if request.item_id is not None:
        CatalogStore(settings.items_table).get(request.item_id)  # 404 naming item_id
    if request.segment_id is not None and not _known_segment(request.segment_id):
        raise NotFound(f"segment {request.segment_id!r} is neither in the latest nightly run nor a custom "
                       "definition (GET /segments lists them)", field="segment_id")
    campaign = start_campaign(campaigns, request, datetime.now(timezone.utc))
    try:
        runner.start(campaign.campaign_id)
    except StorageUnavailable as error:  # 503: the campaign says it never ran, and the caller may retry
        fail_campaign(campaigns, campaign.campaign_id, error.message)
        raise
    logger.info("campaign started", extra={"campaign_id": campaign.campaign_id, "kind": campaign.kind})
    return json_response(HTTPStatus.ACCEPTED, campaign.model_dump(mode="json"))


@app.get("/campaigns", tags=["campaigns"], summary="Recent campaigns, newest first")
def list_campaigns(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> CampaignList:
    return CampaignList(campaigns=campaigns.recent(limit))


@app.get("/campaigns/<campaign_id>", tags=["campaigns"], summary="A campaign's status, progress, counts and output")
def get_campaign(campaign_id: CampaignId) -> Campaign:
    return campaigns.get(campaign_id)


def _known_segment(segment_id: str) -> bool:
    return segment_store.in_latest_run(segment_id) or any(
        definition.segment_id == segment_id for definition in segment_store.definitions())


def run(campaign_id: str) -> Campaign:
    """The job itself: what the asynchronous invocation (or the local stack's thread) runs."""
    return run_campaign(campaign_id, campaigns, settings, lambda: read_shop(settings, models))


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if "requestContext" not in event and re.fullmatch(CAMPAIGN_ID_PATTERN, str(event.get("campaign_id"))):
        finished = run(event["campaign_id"])
        return {"campaign_id": finished.campaign_id, "status": finished.status}
    return resolve(app, event, context, settings.max_body_bytes)
