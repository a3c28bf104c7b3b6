"""What a campaign asks for and what its status says: the shape of POST /campaigns and GET /campaigns/{id}.

The status follows Amazon Personalize's batch inference jobs where it makes sense: the same
status values (CREATE PENDING, CREATE IN_PROGRESS, ACTIVE, CREATE FAILED), the number of results
per line, an output location and a failure reason; and the same line shape in the JSON Lines
output (`{"input": {"userId": ...}, "output": {"recommendedItems": [...], "scores": [...]}}`),
with our reasons and display fields beside them.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, computed_field

from shared.consent import CONTACT_CHANNELS
from shared.events import Identifier, Moment

CampaignName = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=128, pattern=r"\S")]
ContactChannel = Literal[tuple(channel.value for channel in CONTACT_CHANNELS)]  # type: ignore[valid-type]
MAX_RESULTS = 50
MAX_CUSTOMERS = 1_000_000
CAMPAIGN_ID_PATTERN = r"^c-[0-9]{8}T[0-9]{6}-[0-9a-f]{8}$"
# A job is one invocation of the Campaigns function, never retried, that starts within
# START_WITHIN_SECONDS of the POST or not at all and lasts at most JOB_SECONDS (template.yaml:
# MaximumEventAgeInSeconds and Timeout). One still pending or in progress past them stopped without
# saving its status (a timeout, a crash, storage that refused the save): it is shown as failed.
START_WITHIN_SECONDS, JOB_SECONDS = 600, 900
_SLACK = timedelta(minutes=1)  # between the invocation's start and the job's first save
# A count in a stored status: whole, not negative, and one a float holds exactly (a status written
# by hand with a larger one does not read, rather than break the percent it shows).
Count = Annotated[int, Field(ge=0, le=2**53)]


class CampaignRequest(BaseModel):
    """Body of POST /campaigns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: CampaignName
    channel: ContactChannel = Field(description="email, sms or push: only customers who granted it, under its cap")
    segment_id: Identifier | None = Field(
        default=None, description="A segment's id (built-in or custom, as GET /segments lists them), computed "
                                  "fresh by the job; null: every customer")
    item_id: Identifier | None = Field(
        default=None, description="Who should hear about this item (new or restocked): an item audience, ranked "
                                  "by the model and by category affinity; null: each customer's own top items")
    num_results: Annotated[int, Strict(), Field(ge=1, le=MAX_RESULTS)] = Field(
        default=10, description="Items per line (recommendations)")
    max_customers: Annotated[int, Strict(), Field(ge=1, le=MAX_CUSTOMERS)] | None = Field(
        default=None, description="At most this many lines (an item audience keeps the most likely customers)")
    # Strict: "n" or 0 read as false wrote a real export where a preview was meant.
    dry_run: Annotated[bool, Strict()] = Field(default=False, description="Count the audience only (the marketer "
                                                                          "page's preview): no file is written")

    @property
    def kind(self) -> str:
        return "item_audience" if self.item_id else "recommendations"


class Status(StrEnum):
    PENDING = "CREATE PENDING"
    IN_PROGRESS = "CREATE IN_PROGRESS"
    ACTIVE = "ACTIVE"
    FAILED = "CREATE FAILED"


class Progress(BaseModel):
    customers_total: Count = 0
    customers_done: Count = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percent(self) -> float:
        return round(100.0 * self.customers_done / self.customers_total, 1) if self.customers_total else 0.0


class Counts(BaseModel):
    considered: Count = Field(default=0, description="Customers with a stored profile")
    in_segment: Count = Field(default=0, description="Of those, in the segment (all of them without one)")
    reachable: Count = Field(default=0, description="Of those, with consent for the channel and under its cap")
    written: Count = Field(default=0, description="Lines written")
    left_out: dict[str, Count] = Field(default_factory=dict,
                                     description="Customers of the segment not reachable, by reason")


class Campaign(BaseModel):
    campaign_id: str
    name: str
    kind: Literal["recommendations", "item_audience"]
    request: CampaignRequest
    status: Status
    # With a zone, in the years a stored time holds: a status written by hand otherwise does not read.
    created_at: Moment
    updated_at: Moment
    model_version: str | None = None
    progress: Progress = Field(default_factory=Progress)
    counts: Counts = Field(default_factory=Counts)
    output: dict[str, str] = Field(default_factory=dict, description="Where the lines are: jsonl and csv")
    failure_reason: str | None = None

    def as_of(self, now: datetime) -> Campaign:
        """The campaign as GET shows it at `now`: failed, when its job can no longer be running."""
        if self.status == Status.PENDING and now - self.created_at > timedelta(seconds=START_WITHIN_SECONDS) + _SLACK:
            reason = "the job did not start, or could not save its start; create the campaign again"
        elif self.status == Status.IN_PROGRESS and now - self.updated_at > timedelta(seconds=JOB_SECONDS) + _SLACK:
            reason = ("the job stopped before it finished (the function's time limit, or its progress could "
                      "not be saved); create the campaign again")
        else:
            return self
        return self.model_copy(update={"status": Status.FAILED, "failure_reason": reason})

    @classmethod
    def new(cls, request: CampaignRequest, now: datetime) -> Campaign:
        campaign_id = f"c-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        return cls(campaign_id=campaign_id, name=request.name, kind=request.kind, request=request,
                   status=Status.PENDING, created_at=now, updated_at=now)
