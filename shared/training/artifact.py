"""The model artifact: one self-describing npz file, written and read without pickle.

It holds nothing about any one customer: item factors and ids, the item neighbours and recent
popularity the served strategy blends in (shared/training/hybrid.py), popular items (overall, by
country, by category, by declared interest), aggregates of the customer base and the parameters.
A version whose strategy is "popular" carries no model: its item factors are an empty
(0, factors) array.

To add an array: a field here with a default, and its name in `ARRAYS` (or a sparse matrix in
`SPARSE`); artifacts written before it load with the default. Serving folds each customer in from their history, so the
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
from scipy.sparse import csr_matrix

from shared.training.complements import ARTIFACT_PREFIX as COMPLEMENTS


class CorruptArtifact(Exception):
    """The bytes are not a model this code wrote: truncated, altered or of another shape."""


@dataclass(frozen=True)
class ModelArtifact:
    item_ids: list[str]
    item_factors: np.ndarray  # float32 (n_items, factors); (0, factors) for the popular strategy
    popular_items: list[str]  # best first, by recent popularity
    popular_by_country: dict[str, list[str]] = field(default_factory=dict)
    customer_statistics: dict[str, Any] = field(default_factory=dict)  # for segmentation
    parameters: dict[str, Any] = field(default_factory=dict)  # what serving needs to fold users in
    strategy: str = "als"  # what serves: hybrid, als, knn or popular (artifacts before this: als)
    popular_by_category: dict[str, list[str]] = field(default_factory=dict)
    item_popularity: np.ndarray | None = None  # float32 (n_items,): recent popularity, for the blend
    neighbours: csr_matrix | None = None  # float32 (n_items, n_items): each item's nearest items
    # Bought together (shared/training/complements.py): flat arrays named complements_*, read by
    # shared.training.complements.from_artifact_arrays, which checks them against the items.
    complements: dict[str, np.ndarray] = field(default_factory=dict)
    # Declared interest (normalised, shared/training/interests.py) -> the items its customers buy
    # most; interests named like a category are served from that category's list instead.
    popular_by_interest: dict[str, list[str]] = field(default_factory=dict)

    # Dense arrays and sparse matrices besides the ids, optional: None when absent.
    ARRAYS = ("item_popularity",)
    SPARSE = ("neighbours",)
    META = ("popular_by_country", "customer_statistics", "parameters", "strategy", "popular_by_category",
            "popular_by_interest")

    @property
    def has_model(self) -> bool:
        return self.strategy != "popular" and self.item_factors.shape[0] > 0

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = {name: getattr(self, name) for name in self.META}
        arrays: dict[str, np.ndarray] = {name: np.asarray(getattr(self, name), dtype=np.float32)
                                         for name in self.ARRAYS if getattr(self, name) is not None}
        for name in self.SPARSE:
            matrix = getattr(self, name)
            if matrix is not None:
                matrix = csr_matrix(matrix, dtype=np.float32)
                arrays |= {f"{name}_data": matrix.data, f"{name}_indices": matrix.indices.astype(np.int32),
                           f"{name}_indptr": matrix.indptr.astype(np.int64),
                           f"{name}_shape": np.array(matrix.shape, dtype=np.int64)}
        np.savez(buffer, item_ids=np.array(self.item_ids, dtype=str),
                 item_factors=self.item_factors.astype(np.float32),
                 popular_items=np.array(self.popular_items, dtype=str),
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays,
                 **{name: values for name, values in self.complements.items() if name.startswith(COMPLEMENTS)})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, expected_sha256: str | None = None) -> ModelArtifact:
        if expected_sha256 is not None and sha256(data) != expected_sha256:
            raise CorruptArtifact("checksum mismatch: the artifact is not the one that was published")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                optional = {name: arrays[name] for name in cls.ARRAYS if name in arrays.files}
                for name in cls.SPARSE:
                    if f"{name}_data" in arrays.files:
                        optional[name] = csr_matrix(
                            (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
                            shape=tuple(arrays[f"{name}_shape"].tolist()))
                artifact = cls(
                    item_ids=arrays["item_ids"].tolist(), item_factors=arrays["item_factors"],
                    popular_items=arrays["popular_items"].tolist(),
                    **json.loads(arrays["meta"].tobytes()), **optional,
                    complements={name: arrays[name] for name in arrays.files if name.startswith(COMPLEMENTS)},
                )
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise CorruptArtifact(f"unreadable model artifact: {error}") from error
        n_items = len(artifact.item_ids)
        if artifact.item_factors.shape[0] not in (n_items, 0) or (artifact.item_factors.shape[0] == 0
                                                                  and artifact.strategy != "popular"):
            raise CorruptArtifact("item factors and item ids disagree in length")
        if artifact.item_popularity is not None and artifact.item_popularity.shape != (n_items,):
            raise CorruptArtifact("item popularity and item ids disagree in length")
        if artifact.neighbours is not None and artifact.neighbours.shape != (n_items, n_items):
            raise CorruptArtifact("item neighbours and item ids disagree in shape")
        return artifact


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
