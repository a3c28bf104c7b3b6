"""The active model, kept in memory across warm invocations and refreshed without a redeploy.

The pointer (active.json) is read at most every `refresh_seconds`. When it names a new version,
that version is loaded; if loading fails (missing or corrupted artifact, S3 down), the version
already in memory keeps serving, and the failure is logged and counted. A function that holds no
version yet because S3 refused the reads answers 503, not as if no model had been published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from aws_lambda_powertools.metrics import MetricUnit

from shared.errors import Conflict, DomainError, StorageUnavailable
from shared.observability import logger, metrics
from shared.refresh import Every
from shared.serving.popular import PopularLists
from shared.storage.models import ModelStore

if TYPE_CHECKING:
    from shared.training.artifact import ModelArtifact

T = TypeVar("T")


class ActiveModel(Generic[T]):
    """`build(version, artifact)` turns the artifact into what the function needs (and has `.version`)."""

    def __init__(self, store: ModelStore, refresh_seconds: float, build: Callable[[str, ModelArtifact], T]) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.build = build
        self.current: T | None = None
        self._failed_version: str | None = None
        self._refresh_when_due = Every(refresh_seconds, self._refresh, held=lambda: self.current)

    def get(self) -> T | None:
        self._refresh_when_due()
        return self.current

    def _refresh(self) -> None:
        try:
            pointer = self.store.active()
        except DomainError as error:
            logger.warning("cannot read the active model pointer", extra={"reason": error.message})
            metrics.add_metric("ModelPointerReadFailed", MetricUnit.Count, 1)
            if isinstance(error, StorageUnavailable):
                raise  # tried again soon (shared/refresh.py); a function holding nothing answers 503
            return
        if pointer is None or (self.current and self.current.version == pointer.version):
            return
        if pointer.version == self._failed_version:
            return  # already failed; retried when the pointer moves again
        try:
            artifact = self.store.load(self.store.manifest(pointer.version))
            self.current = self.build(pointer.version, artifact)
            self._failed_version = None
            logger.info("model loaded", extra={"version": pointer.version})
        except DomainError as error:
            if isinstance(error, Conflict):  # the artifact itself is bad: do not fetch it again
                self._failed_version = pointer.version
            logger.error("model load failed; the previous version keeps serving",
                         extra={"version": pointer.version, "reason": error.message,
                                "serving": self.current.version if self.current else None})
            metrics.add_metric("ModelLoadFailed", MetricUnit.Count, 1)
            if isinstance(error, StorageUnavailable):
                raise  # tried again soon (shared/refresh.py); a function holding nothing answers 503


class CachedPopular:
    """The small popular list written beside each active model, for when no model is loaded."""

    def __init__(self, store: ModelStore, refresh_seconds: float) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.current: PopularLists | None = None
        self._refresh_when_due = Every(refresh_seconds, self._refresh, held=lambda: self.current)

    def get(self) -> PopularLists | None:
        self._refresh_when_due()
        return self.current

    def _refresh(self) -> None:
        try:
            raw = self.store.cached_popular()
        except DomainError as error:
            logger.warning("cannot read the cached popular list", extra={"reason": error.message})
            if isinstance(error, StorageUnavailable):
                raise  # tried again soon (shared/refresh.py); a function holding nothing answers 503
            return
        if raw:
            self.current = PopularLists(raw["version"], raw["items"], raw["by_country"], cached=True,
                                        by_category=raw.get("by_category", {}),
                                        by_interest=raw.get("by_interest", {}))
