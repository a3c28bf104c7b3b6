"""The active model version's customer statistics, as segmentation reads them: kept in memory
across warm invocations and refreshed like the model (shared/serving/active_model.py).

They come from the small statistics.json beside the model (shared/storage/models.py), not from
the artifact, so the Segments function ships no numpy.

A version published before statistics.json existed has none until it is activated again
(POST /models/{version}/activate) or the next nightly run writes it. Until then tags are computed
without statistics, as before any model was trained: no RFM or value tags, and
statistics_version null in the answer, in every warm function alike. Each refresh logs it
(SegmentStatisticsMissing) and looks again. A read that fails keeps the statistics in memory; a
function that holds none yet because S3 refused the reads answers 503 (shared/refresh.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from shared.errors import DomainError, StorageUnavailable
from shared.observability import logger, metrics
from shared.refresh import Every
from shared.storage.models import ModelStore


@dataclass(frozen=True)
class CustomerStatistics:
    version: str
    values: dict[str, Any]


class ActiveStatistics:
    def __init__(self, store: ModelStore, refresh_seconds: float) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.current: CustomerStatistics | None = None
        self._read = False  # whether a read has told what is active (current is None without statistics)
        self._refresh_when_due = Every(refresh_seconds, self._refresh, held=lambda: True if self._read else None)

    def get(self) -> CustomerStatistics | None:
        self._refresh_when_due()
        return self.current

    def _refresh(self) -> None:
        try:
            pointer = self.store.active()
            if pointer is None or (self.current and self.current.version == pointer.version):
                return
            values = self.store.statistics(pointer.version)
        except DomainError as error:
            logger.warning("cannot read the active model's customer statistics; those in memory are kept",
                           extra={"reason": error.message, "serving": self.current.version if self.current else None})
            metrics.add_metric("SegmentStatisticsReadFailed", MetricUnit.Count, 1)
            if isinstance(error, StorageUnavailable):
                raise  # tried again soon (shared/refresh.py); a function holding nothing answers 503
            return
        self._read = True
        if values is None:
            # Not the previous version's statistics: every warm function would then answer with
            # whichever version it happened to hold, and disagree with the nightly members.
            self.current = None
            logger.warning("the active model version has no statistics.json yet: no RFM or value tags until "
                           "it is activated again or the nightly run writes it", extra={"version": pointer.version})
            metrics.add_metric("SegmentStatisticsMissing", MetricUnit.Count, 1)
            return
        self.current = CustomerStatistics(pointer.version, values)
        logger.info("customer statistics loaded", extra={"version": pointer.version})
