"""A small HTTP client of the service, for the demo, the importer and the end-to-end tests.

It behaves as we ask shops' clients to: batches of at most 1,000 events, and a 503 answered by
waiting Retry-After and sending the same batch again (safe: ingestion is idempotent). It calls
as the shop's backend does (every request SigV4-signed) or as a signed-in customer (a bearer
token): ``ApiClient.for_stack(state_dir)`` and ``.as_customer(user_id)`` on the local stack.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from devstack import stack
from devstack.local_auth import LocalAuth

# (method, url, headers, body) -> the headers to send: how a client proves who it is.
Credentials = Callable[[str, str, dict[str, str], bytes], dict[str, str]]

# (method, path, body) -> (status, body): any way of calling the service, over HTTP or in-process.
Request = Callable[[str, str, Any], tuple[int, Any]]

EVENT_BATCH = 1000
ITEM_BATCH = 500
# A run still "training" after this is listed as abandoned (shared/storage/models.py).
TRAINING_TIMEOUT_SECONDS = 16 * 60
MODELS_LISTED = "/models?limit=100"


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


def train_and_wait(request: Request, config: dict[str, Any] | None = None,
                   timeout: float = TRAINING_TIMEOUT_SECONDS, every: float = 1.0,
                   still_running: Callable[[], bool] | None = None) -> dict[str, Any]:
    """POST /models/train, then poll until the run it started has finished: its manifest.

    The start may answer without the run's version (on the export path the fit names it), so the
    run is the version GET /models did not list before. Its manifest has its outcome before the
    run ends: the run then activates an accepted model and materializes the customer segments.
    A client over HTTP sees the end in GET /segments (materialized at the run's start time or
    later); one that can see the run itself (still_running, an in-process gateway) waits for it
    to end, and learns at once of a run that died without an outcome.
    """
    status, before = request("GET", MODELS_LISTED, None)
    if status != 200:
        raise ApiError(ApiResponse(status, before, {}), "GET /models")
    known = {version["version"] for version in before["versions"]}
    status, started = request("POST", "/models/train", None if config is None else {"config": config})
    if status != 202:
        raise ApiError(ApiResponse(status, started, {}), "POST /models/train")
    deadline = time.monotonic() + timeout
    while True:
        alive = still_running() if still_running else None  # asked first: the run may end meanwhile
        status, listing = request("GET", MODELS_LISTED, None)
        if status != 200:
            raise ApiError(ApiResponse(status, listing, {}), "GET /models")
        run = next((v for v in listing["versions"] if v["version"] not in known), None)
        if run is not None and run["status"] != "training":
            if alive is False:
                return run
            if alive is None and _segments_materialized_since(request, run["started_at"]):
                listing = request("GET", MODELS_LISTED, None)[1]  # read again: now it is active if accepted
                return next(v for v in listing["versions"] if v["version"] == run["version"])
        if alive is False:
            raise RuntimeError(f"the training run ended without an outcome: {run or 'it has no version'}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"training did not finish within {timeout:.0f} s: {run or 'the run has no version yet'}")
        time.sleep(every)


def _segments_materialized_since(request: Request, started_at: str) -> bool:
    status, listing = request("GET", "/segments", None)
    if status != 200:
        raise ApiError(ApiResponse(status, listing, {}), "GET /segments")
    at = listing.get("materialized_at")
    return at is not None and datetime.fromisoformat(at) >= datetime.fromisoformat(started_at)


def signed_as_backend(auth: LocalAuth) -> Credentials:
    return lambda method, url, headers, body: auth.sign(method, url, headers, body)


def signed_with_aws_credentials(region: str | None = None) -> Credentials:
    """The caller's own AWS credentials (environment, profile, role), as the IAM authorizer wants."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = boto3.Session(region_name=region)
    if session.get_credentials() is None or session.region_name is None:
        raise ValueError("no AWS credentials or region: configure them (aws configure) or pass --region")

    def sign(method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        SigV4Auth(session.get_credentials().get_frozen_credentials(), "execute-api",
                  session.region_name).add_auth(request)
        return dict(request.headers.items())

    return sign


def bearer(token: str) -> Credentials:
    return lambda method, url, headers, body: {**headers, "authorization": f"Bearer {token}"}


class ApiClient:
    def __init__(self, base_url: str, credentials: Credentials | None = None, timeout: float = 60,
                 retries_on_503: int = 5, auth: LocalAuth | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.timeout = timeout
        self.retries_on_503 = retries_on_503
        self.auth = auth

    @classmethod
    def for_stack(cls, state_dir: Path = stack.DEFAULT_STATE_DIR, **options: Any) -> ApiClient:
        """The shop's backend talking to the local stack running from state_dir."""
        state, auth = stack.running(state_dir)
        return cls(state.url, signed_as_backend(auth), auth=auth, **options)

    def as_customer(self, user_id: str, expires_in: int = 3600) -> ApiClient:
        """The same service, called by user_id signed in (a token from the local issuer)."""
        if self.auth is None:
            raise ValueError("only a client of the local stack can mint customer tokens")
        token = self.auth.issue_token(user_id, expires_in)
        return ApiClient(self.base_url, bearer(token), self.timeout, self.retries_on_503, self.auth)

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> ApiResponse:
        url = self.base_url + path + (f"?{urlencode(query, doseq=True)}" if query else "")
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        sent_headers = {"content-type": "application/json", **(headers or {})}
        if self.credentials:
            sent_headers = self.credentials(method, url, sent_headers, data or b"")
        request = urllib.request.Request(url, data=data, method=method, headers=sent_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return _response(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as error:
            return _response(error.code, error.read(), error.headers)

    def train_and_wait(self, config: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        """A training run, started and followed to its outcome: its manifest (train_and_wait)."""
        def request(method: str, path: str, body: Any) -> tuple[int, Any]:
            response = self.request(method, path, body)
            return response.status, response.body

        return train_and_wait(request, config, **options)

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
