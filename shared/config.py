"""Settings read once from the environment and validated at cold start.

A missing table name fails when the function starts, not on the first request that needs it.
"""

from __future__ import annotations

import os
from functools import lru_cache

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from shared.contact import DEFAULT_CONTACT_CAPS, ContactCaps, caps_from_text


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    events_table: str = Field(alias="EVENTS_TABLE", min_length=3)
    items_table: str = Field(alias="ITEMS_TABLE", min_length=3)
    users_table: str = Field(alias="USERS_TABLE", min_length=3)
    segments_table: str = Field(alias="SEGMENTS_TABLE", min_length=3)
    model_bucket: str = Field(alias="MODEL_BUCKET", min_length=1)

    # Where model versions live: the bucket on AWS, a folder on the local stack.
    local_model_dir: str | None = Field(alias="LOCAL_MODEL_DIR", default=None)
    # Where triggers are published (docs/triggers.md): an EventBridge bus on AWS, a JSON Lines file on
    # the local stack; with neither, publishing is off.
    event_bus_name: str | None = Field(alias="EVENT_BUS_NAME", default=None)
    local_bus_file: str | None = Field(alias="LOCAL_BUS_FILE", default=None)
    # Where campaign exports and their status live: a bucket on AWS (its objects expire: they name
    # customers), a folder on the local stack. Only the Campaigns function has them.
    campaign_bucket: str = Field(alias="CAMPAIGN_BUCKET", default="")
    local_campaign_dir: str | None = Field(alias="LOCAL_CAMPAIGN_DIR", default=None)
    # What the nightly run trains from (docs/operations.md, "Training past one Lambda"): "scan"
    # reads the tables with parallel Scans; "export" reads DynamoDB's exports to S3 (the
    # TrainingPipeline state machine takes them into EXPORT_BUCKET; on the local stack, `./dev export`
    # writes them into LOCAL_EXPORT_DIR).
    training_path: Literal["scan", "export"] = Field(alias="TRAINING_PATH", default="scan")
    export_bucket: str = Field(alias="EXPORT_BUCKET", default="")
    # Where ALS fits (shared/training/fit_device.py): the Batch job on GPU instances sets "gpu".
    fit_device: Literal["cpu", "gpu"] = Field(alias="FIT_DEVICE", default="cpu")
    local_export_dir: str | None = Field(alias="LOCAL_EXPORT_DIR", default=None)
    # Days the export bucket keeps an export: the events export chain starts again with a full
    # export before its full one would expire.
    export_retention_days: int = Field(alias="EXPORT_RETENTION_DAYS", default=7, ge=1, le=365)
    # The Glue database the TrainingPipeline's Athena queries make their per-run events table in.
    athena_database: str = Field(alias="ATHENA_DATABASE", default="shoprecs_exports", pattern=r"^[a-z0-9_]+$")
    # Attribution (docs/experiments.md): a purchase is credited to the newest click (or, with
    # "impression", impression or click) on that item by the same customer within this many days.
    attribution_basis: Literal["click", "impression"] = Field(alias="ATTRIBUTION_BASIS", default="click")
    attribution_window_days: int = Field(alias="ATTRIBUTION_WINDOW_DAYS", default=7, ge=1, le=30)
    # The TrainingPipeline state machine POST /models/train starts on the export path.
    training_pipeline_arn: str = Field(alias="TRAINING_PIPELINE_ARN", default="")
    # The function POST /models/train starts, asynchronously (the local stack runs it in a thread).
    train_function_name: str = Field(alias="TRAIN_FUNCTION_NAME", default="")

    # Retention after each training run: a version is deleted once it is outside the newest
    # MODEL_VERSIONS_KEPT models and older than MODEL_MAX_AGE_DAYS (the rule: ModelStore.prune).
    # The minimums are template.yaml's: always one version to roll back to, and a week to notice.
    model_versions_kept: int = Field(alias="MODEL_VERSIONS_KEPT", default=10, ge=2)
    model_max_age_days: int = Field(alias="MODEL_MAX_AGE_DAYS", default=90, ge=7)

    # How often serving checks which model version is active (seconds).
    model_refresh_seconds: float = Field(alias="MODEL_REFRESH_SECONDS", default=60, ge=0)

    # The mix of a recommendation list (shared/serving/recommender.py, Mix): at most this share of
    # the slots for items the customer only viewed or carted (showing them again is "recently
    # viewed", a client's own list), and at most this share for new items no model has seen yet.
    seen_items_share: float = Field(alias="SEEN_ITEMS_SHARE", default=0.2, ge=0, le=1)
    new_items_share: float = Field(alias="NEW_ITEMS_SHARE", default=0.2, ge=0, le=1)

    # Events stamped further in the future than this are rejected as clock errors.
    max_event_future_seconds: int = Field(alias="MAX_EVENT_FUTURE_SECONDS", default=300, ge=0)
    # Parallel DynamoDB transactions per ingest request; I/O bound, so more than the vCPUs.
    ingest_concurrency: int = Field(alias="INGEST_CONCURRENCY", default=16, ge=1, le=64)
    # The JWT claim that holds a signed-in customer's user_id (Cognito: "sub" or a custom claim).
    user_id_claim: str = Field(alias="USER_ID_CLAIM", default="sub", min_length=1)
    # The key that signs visitor tokens: a Secrets Manager secret's ARN on AWS; the key itself on
    # the local stack and under sam local (shared/storage/secrets.py).
    visitor_token_secret_arn: str = Field(alias="VISITOR_TOKEN_SECRET_ARN", default="")
    visitor_token_secret: str = Field(alias="VISITOR_TOKEN_SECRET", default="")
    # Events a visitor's or customer's own token may send (browsers and apps), per window.
    client_events_per_window: int = Field(alias="CLIENT_EVENTS_PER_WINDOW", default=600, ge=1)
    client_events_window_seconds: int = Field(alias="CLIENT_EVENTS_WINDOW_SECONDS", default=600, ge=1)
    # Request bodies above this are refused with 413 before any parsing.
    max_body_bytes: int = Field(alias="MAX_BODY_BYTES", default=2_000_000, ge=1024)
    # The contact budget (shared/contact.py): at most count messages per channel in days, e.g.
    # "email:2/7,sms:1/7,push:3/7"; a channel left out is not capped. Bad text fails at cold start.
    contact_caps: Annotated[ContactCaps, BeforeValidator(caps_from_text)] = Field(
        alias="CONTACT_CAPS", default_factory=lambda: ContactCaps.parse(DEFAULT_CONTACT_CAPS))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
