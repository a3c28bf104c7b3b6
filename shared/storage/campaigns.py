"""Campaigns: each one's status and its exported lines, in the campaign bucket (a local folder on
the local stack).

Layout:
    campaigns/<campaign_id>/status.json          what GET /campaigns/{id} answers, rewritten as the job goes
    campaigns/<campaign_id>/recommendations.jsonl  (or audience.jsonl) one line per reachable customer
    campaigns/<campaign_id>/recommendations.csv    (or audience.csv) the same, one row per customer

The exports name customers, so the bucket is kept apart from the model bucket (whose files hold
no personal data) and expires its objects (template.yaml, CampaignExportDays).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from shared.campaigns.spec import Campaign
from shared.errors import Conflict, NotFound
from shared.observability import logger
from shared.storage.blobs import Blobs, LocalBlobs, S3Blobs

PREFIX = "campaigns/"
STATUS_FILE = "status.json"


class CampaignStore:
    def __init__(self, blobs: Blobs, location: str) -> None:
        self.blobs = blobs
        self.location = location.rstrip("/")  # s3://bucket or a folder, for the output's address

    @classmethod
    def from_settings(cls, bucket: str, local_dir: str | None) -> CampaignStore:
        if local_dir:
            return cls(LocalBlobs(Path(local_dir)), str(Path(local_dir).resolve()))
        return cls(S3Blobs(bucket), f"s3://{bucket}")

    def save(self, campaign: Campaign) -> None:
        self.blobs.put(_key(campaign.campaign_id, STATUS_FILE), campaign.model_dump_json().encode())

    def get(self, campaign_id: str) -> Campaign:
        """As saved, or failed when its job can no longer be running (Campaign.as_of)."""
        try:
            saved = Campaign.model_validate_json(self.blobs.get(_key(campaign_id, STATUS_FILE)))
        except NotFound:
            raise NotFound(f"campaign {campaign_id!r} does not exist", field="campaign_id") from None
        except ValueError:
            raise Conflict(f"campaign {campaign_id!r}: its stored status does not read", field="campaign_id") from None
        return saved.as_of(datetime.now(timezone.utc))

    def recent(self, limit: int) -> list[Campaign]:
        """The newest campaigns first (ids start with their creation time)."""
        ids = sorted({key[len(PREFIX):].split("/", 1)[0] for key in self.blobs.keys(PREFIX)
                      if key.endswith("/" + STATUS_FILE)}, reverse=True)
        found: list[Campaign] = []
        for campaign_id in ids:  # until `limit` read: one that does not read takes no place
            if len(found) >= limit:
                break
            try:
                found.append(self.get(campaign_id))
            except NotFound:  # deleted by the bucket's expiry between the listing and the read
                continue
            except Conflict:  # never breaks the list for the others
                logger.error("a campaign's stored status does not read: left out of the list",
                             extra={"campaign_id": campaign_id})
        return found

    @contextmanager
    def output(self, campaign_id: str, name: str) -> Iterator[tuple[IO[str], str]]:
        """A text file to write lines to, and its address; stored in one piece when the block ends."""
        handle, path = tempfile.mkstemp(suffix="-" + name)
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
                yield file, f"{self.location}/{_key(campaign_id, name)}"
            self.blobs.put_file(_key(campaign_id, name), Path(path))
        finally:
            os.unlink(path)


def _key(campaign_id: str, name: str) -> str:
    return f"{PREFIX}{campaign_id}/{name}"
