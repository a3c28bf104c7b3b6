"""The model artifact: one self-describing npz file, written and read without pickle.

It holds nothing about any one customer: item factors and ids, popular items, aggregates of the
customer base and the parameters. Serving folds each customer in from their history, so the
user factors ALS fits are dropped, and with them the customer ids. Artifacts written before
this still carry `user_ids` and `user_factors`; they load, and those arrays are never read, so
they leave the store only when retention prunes those versions (shared/storage/models.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class CorruptArtifact(Exception):
    """The bytes are not a model this code wrote: truncated, altered or of another shape."""


@dataclass(frozen=True)
class ModelArtifact:
    item_ids: list[str]
    item_factors: np.ndarray  # float32 (n_items, factors)
    popular_items: list[str]  # best first, over the recent popularity window
    popular_by_country: dict[str, list[str]] = field(default_factory=dict)
    customer_statistics: dict[str, Any] = field(default_factory=dict)  # for segmentation
    parameters: dict[str, Any] = field(default_factory=dict)  # what serving needs to fold users in

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = {"popular_by_country": self.popular_by_country,
                "customer_statistics": self.customer_statistics, "parameters": self.parameters}
        np.savez(buffer, item_ids=np.array(self.item_ids, dtype=str),
                 item_factors=self.item_factors.astype(np.float32),
                 popular_items=np.array(self.popular_items, dtype=str),
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, expected_sha256: str | None = None) -> ModelArtifact:
        if expected_sha256 is not None and sha256(data) != expected_sha256:
            raise CorruptArtifact("checksum mismatch: the artifact is not the one that was published")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                artifact = cls(
                    item_ids=arrays["item_ids"].tolist(), item_factors=arrays["item_factors"],
                    popular_items=arrays["popular_items"].tolist(),
                    **json.loads(arrays["meta"].tobytes()),
                )
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise CorruptArtifact(f"unreadable model artifact: {error}") from error
        if artifact.item_factors.shape[0] != len(artifact.item_ids):
            raise CorruptArtifact("item factors and item ids disagree in length")
        return artifact


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
