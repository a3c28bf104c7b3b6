"""The nightly materialization: every customer's tags, by the same function as the request path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from shared.observability import logger
from shared.segments.tags import segment_customer
from shared.storage.history import all_histories
from shared.storage.scan import scan_by_key
from shared.storage.segments import SegmentStore
from shared.storage.users import user_from_row


def materialize_segments(events_table: str, users_table: str, items_table: str, store: SegmentStore,
                         statistics: dict[str, Any], now: datetime, run: str) -> dict[str, Any]:
    profiles = scan_by_key(users_table, "user_id", lambda row: user_from_row(row).model_dump(mode="json"))
    categories = scan_by_key(items_table, "item_id", lambda row: row["category"],
                             ProjectionExpression="item_id, category")
    histories = all_histories(events_table)
    custom = store.definitions()

    def members() -> Iterator[tuple[str, str, str, str, str]]:
        for user_id in profiles.keys() | histories.keys():
            _, _, tags = segment_customer(profiles.get(user_id), histories.get(user_id, []), categories,
                                          statistics, now, custom)
            for tag in tags:
                yield tag.segment_id, tag.family, tag.name, user_id, tag.reason

    index = store.write_run(run, now.isoformat(), members())
    logger.info("segments materialized", extra={"run": run, "segments": len(index["segments"]),
                                                "customers": len(profiles.keys() | histories.keys())})
    return index


def materialize_after_training(settings: Any, models: Any, now: datetime) -> dict[str, Any]:
    """With the statistics of whichever version is active after the run (none: no RFM or value tags).

    They are read from statistics.json, as the Segments function reads them. A version active
    since before that file existed gets it here (the train function ships numpy to read the
    artifact), so the Segments function has the statistics again after the next nightly run.
    """
    pointer = models.active()
    statistics = models.ensure_statistics(pointer.version) if pointer else {}
    return materialize_segments(settings.events_table, settings.users_table, settings.items_table,
                                SegmentStore(settings.segments_table), statistics, now,
                                run=now.strftime("%Y%m%dT%H%M%S"))
