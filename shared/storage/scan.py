"""Parallel Scan: the bulk read for training (never on a request path)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.storage import dynamo


def parallel_scan(table: str, segments: int, on_page: Callable[[list[dict[str, Any]]], None],
                  **scan_arguments: Any) -> None:
    """Scan `table` in `segments` parallel segments, handing each page (raw items) to `on_page`.

    Pages are handed over as they arrive, so the caller decides what to keep: a page is at most
    1 MB, whatever the table's size. `on_page` is called from several threads.
    """

    def scan_segment(segment: int) -> None:
        request = {"TableName": table, "Segment": segment, "TotalSegments": segments, **scan_arguments}
        while True:
            with dynamo.aws_faults("scan"):
                response = dynamo.bulk_client().scan(**request)
            on_page(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    with ThreadPoolExecutor(max_workers=segments) as pool:
        for future in [pool.submit(scan_segment, segment) for segment in range(segments)]:
            future.result()


def scan_by_key(table: str, key: str, convert: Callable[[dict[str, Any]], Any], segments: int = 4,
                **scan_arguments: Any) -> dict[str, Any]:
    """Every item of `table` as {item[key]: convert(deserialized item)}."""
    found: dict[str, Any] = {}
    lock = threading.Lock()

    def add_page(items: list[dict[str, Any]]) -> None:
        page = {item[key]["S"]: convert(dynamo.deserialize(item)) for item in items}
        with lock:
            found.update(page)

    parallel_scan(table, segments, add_page, **scan_arguments)
    return found
