"""One training run started at a time, even when two requests to start one arrive together.

POST /models/train refuses a start while a run is in progress: a manifest says "training", or
the TrainingPipeline has a running execution. On its own that check leaves a window between
the check and the moment the new run shows in it, and on AWS the window is wide: the train
function writes its manifest only after its cold start, and Step Functions lists a new execution
eventually, not at once. Two requests in the window (a double click, a retried call) would both
start a run: Lambda would queue the second behind the first, the pipeline would run two.

The start claim closes it. Each start first writes START_KEY beside the model versions with a
conditional put (S3's If-None-Match / If-Match; a lock in the local folder), then checks, then
starts and names its run in the claim. A claim holds for CLAIM_SECONDS, long enough for any
start to show in the listings, or until its run is known to be over; after that the listings
are the check again. A second start meanwhile gets a 409, and of two writing the claim at once,
S3 lets one win.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import Conflict, NotFound, StorageUnavailable
from shared.observability import logger
from shared.storage.blobs import Blobs

START_KEY = "training-start.json"
CLAIM_SECONDS = 60


@dataclass(frozen=True)
class Claim:
    tag: str  # the claim as written: naming the run must not overwrite a later claim
    claimed_at: datetime


class TrainingStarts:
    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def claim(self, now: datetime, over: Callable[[str], bool]) -> Claim:
        """Claim the start, or Conflict while another start holds it. `over(run)`: whether the run a
        claim names is known to have finished (the claim then holds no longer)."""
        try:
            raw, tag = self.blobs.get_tagged(START_KEY)
        except NotFound:
            found = None
        else:
            found = tag
            held = _held_by(raw, now)
            if held is not None and (held[1] is None or not over(held[1])):
                claimed_at, run = held
                what = f"training run {run}" if run else "a training run"
                raise Conflict(f"{what} was started {max((now - claimed_at).total_seconds(), 0):.0f} s ago; follow it with "
                               "GET /models and start another when it has finished")
        body = json.dumps({"claimed_at": now.isoformat(), "run": None}).encode()
        written = self.blobs.put_if(START_KEY, body, found)
        if written is None:
            raw, tag = self.blobs.get_tagged(START_KEY)
            if raw != body:
                raise Conflict("another training run is being started; follow it with GET /models")
            written = tag  # ours: botocore tried the put again after S3 had taken it, and S3 refused the repeat
        return Claim(written, now)

    def release(self, claim: Claim) -> None:
        """Give the claim up: the start it was taken for started nothing (refused, or a fault). At
        best: a claim S3 does not take back holds CLAIM_SECONDS at most."""
        try:
            self.blobs.put_if(START_KEY, json.dumps({"released": claim.claimed_at.isoformat()}).encode(), claim.tag)
        except StorageUnavailable as error:
            logger.warning("a training start claim not released", extra={"reason": error.message})

    def name(self, claim: Claim, run: str) -> None:
        """Name the run the claim started. Skipped when the claim has been taken since: that can
        only be after CLAIM_SECONDS, when the listings show the run anyway."""
        body = json.dumps({"claimed_at": claim.claimed_at.isoformat(), "run": run}).encode()
        self.blobs.put_if(START_KEY, body, claim.tag)


def _held_by(raw: bytes, now: datetime) -> tuple[datetime, str | None] | None:
    """(when claimed, the run it named) of a claim that still holds by its age; None for one past
    CLAIM_SECONDS, and for one that does not read (a damaged file holds nothing)."""
    try:
        body = json.loads(raw)
        claimed_at = datetime.fromisoformat(body["claimed_at"])
        run = body["run"]
        if claimed_at.tzinfo is None or not (run is None or isinstance(run, str)):
            return None
    except (ValueError, KeyError, TypeError, RecursionError):  # the last: nested past the parser's depth
        return None
    # A claim a little ahead of `now` holds too: a start that began a moment after this one, or on
    # an instance whose clock is ahead. One far ahead (by hand) holds nothing.
    if abs(now - claimed_at) >= timedelta(seconds=CLAIM_SECONDS):
        return None
    return claimed_at, run
