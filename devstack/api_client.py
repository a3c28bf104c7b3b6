"""A small HTTP client of the service, for the demo, the importer and the end-to-end tests.

It behaves as we ask shops' clients to: batches of at most 1,000 events, and a 503 answered by
waiting Retry-After and sending the same batch again (safe: ingestion is idempotent).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

EVENT_BATCH = 1000
ITEM_BATCH = 500


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class SendTotals:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def add(self, body: dict[str, Any], offset: int) -> None:
        self.accepted += body.get("accepted", 0)
        self.duplicates += body.get("duplicates", 0)
        self.rejected += [{**r, "index": r["index"] + offset} for r in body.get("rejected", [])]


class ApiError(RuntimeError):
    def __init__(self, response: ApiResponse, what: str) -> None:
        super().__init__(f"{what}: HTTP {response.status}: {json.dumps(response.body)[:500]}")
        self.response = response


class ApiClient:
    def __init__(self, base_url: str, timeout: float = 60, retries_on_503: int = 5) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries_on_503 = retries_on_503

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> ApiResponse:
        url = self.base_url + path + (f"?{urlencode(query, doseq=True)}" if query else "")
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"content-type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return _response(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as error:
            return _response(error.code, error.read(), error.headers)

    def call_retrying(self, method: str, path: str, body: Any = None) -> ApiResponse:
        """The request, sent again after Retry-After while the service answers 503."""
        for _ in range(self.retries_on_503):
            response = self.request(method, path, body)
            if response.status != 503:
                return response
            time.sleep(float(response.headers.get("retry-after", "1")))
        return response

    def send_events(self, events: Sequence[dict[str, Any]], batch_size: int = EVENT_BATCH,
                    progress: Callable[[int], None] | None = None) -> SendTotals:
        return self._send_batches("/events", "events", events, batch_size, progress)

    def put_items(self, items: Sequence[dict[str, Any]], batch_size: int = ITEM_BATCH,
                  progress: Callable[[int], None] | None = None) -> SendTotals:
        return self._send_batches("/items", "items", items, batch_size, progress)

    def put_users(self, users: Iterable[dict[str, Any]], concurrency: int = 8) -> int:
        def put(user: dict[str, Any]) -> None:
            profile = {k: v for k, v in user.items() if k != "user_id"}
            response = self.call_retrying("PUT", f"/users/{quote(user['user_id'], safe='')}", profile)
            if response.status != 200:
                raise ApiError(response, f"PUT /users/{user['user_id']}")

        with ThreadPoolExecutor(concurrency) as pool:
            return len(list(pool.map(put, users)))

    def _send_batches(self, path: str, key: str, entries: Sequence[dict[str, Any]],
                      batch_size: int, progress: Callable[[int], None] | None) -> SendTotals:
        totals = SendTotals()
        for start in range(0, len(entries), batch_size):
            response = self.call_retrying("POST", path, {key: list(entries[start : start + batch_size])})
            if response.status not in (200, 207, 422) or not isinstance(response.body, dict):
                raise ApiError(response, f"POST {path}")
            totals.add(response.body, start)
            if progress:
                progress(min(start + batch_size, len(entries)))
        return totals


def _response(status: int, payload: bytes, headers: Any) -> ApiResponse:
    try:
        body = json.loads(payload) if payload else None
    except json.JSONDecodeError:
        body = payload.decode(errors="replace")
    return ApiResponse(status, body, {k.lower(): v for k, v in headers.items()})
