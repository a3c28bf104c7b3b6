"""A local stand-in for API Gateway (HTTP API): template.yaml's routes -> the same handlers.

Requests become API Gateway v2 (payload format 2.0) events and are passed, in-process, to each
function's ``lambda_handler`` exactly as Lambda would, one request at a time for all of them: on
Lambda each instance has a process of its own, but here they share one, and Powertools' resolver
keeps the request being answered in class state (BaseRouter.current_event) that every function's
app reads. Two functions answering at once answered each other's requests ("no route for POST
/events" to a GET, "body: Field required" to a POST).

Authentication is API Gateway's, with local keys (devstack.local_auth): a bearer token is
checked as the public API's JWT authorizer checks it, a SigV4 signature as the trusted API's
IAM authorizer does, and the function receives the same requestContext.authorizer. Three
endpoints exist only here, for the demo pages: POST /dev/token ("sign in as" a customer),
/dev/trusted/<path> (a request forwarded as the shop's backend, which signs on AWS), and GET /dev/bus
reads the local event bus (docs/triggers.md) for the tests and the marketer page. They open
only with the stack's secret (the x-devstack-secret header, or the cookie the demo pages come
with), never to another origin's page.

There is no train function to invoke: the admin function is given a trainer that runs
TrainFunction's handler in a background thread (devstack.local_trainer), so training answers
at once and goes on as it does on AWS.

Paths are decoded as API Gateway decodes them: the route is matched on the path as sent, where a
parameter is one encoded segment, and the function gets pathParameters and rawPath decoded.
"""

from __future__ import annotations

import base64
import hmac
import importlib.util
import json
import os
import re
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from devstack.docs_site import docs_response
from devstack.http_response import HttpResponse
from devstack.web_site import PAGES, web_response
from devstack.local_auth import LocalAuth, Rejected, host_url, trusted_context
from devstack.local_jobs import LocalJobs
from devstack.local_trainer import LocalTrainer
from devstack.template import PROJECT_ROOT, Route, http_routes, resources
from shared.config import Settings
from shared.observability import metrics
from shared.storage.bus import LocalBus

DEV_PREFIX = "/dev/"
DEV_TRUSTED_PREFIX = "/dev/trusted"
DEV_SECRET_HEADER = "x-devstack-secret"
DEV_SECRET_COOKIE = "devstack_secret"
# A client that stops sending (a Content-Length it never fills, an idle connection) is dropped.
REQUEST_TIMEOUT_SECONDS = 10.0
_DIGITS = re.compile(r"[0-9]+")
DEV_TOKEN_SECONDS = 3600
# What the page's scripts may read of an answer (CorsConfiguration.ExposeHeaders in template.yaml).
EXPOSED_HEADERS = "etag,retry-after"
TEXT_TYPES = ("application/json", "text/", "application/x-www-form-urlencoded")


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int = 512
    timeout_ms: int = 29_000
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.timeout_ms - int((time.monotonic() - self.started) * 1000))


# Powertools keeps the resolver's current request and the metric set in class state, which every
# function loaded in this process shares (on Lambda each instance has a process of its own).
_INVOKING = threading.Lock()  # one invocation at a time, whichever gateway and function
INVOCATION_WAIT_SECONDS = 120.0
_METRIC_SET = threading.RLock()  # re-entered: the provider's methods call one another
_METRIC_SET_CHANGES = ("add_metric", "add_dimension", "add_metadata", "clear_metrics")


def metrics_changed_one_at_a_time() -> None:
    """Background work (the local trainer, campaign jobs, the catalog snapshot's loads) adds
    metrics outside the invocations' lock: every change to the shared set takes this one lock, so
    none iterates the set while another changes it (add_metric serializes it at a metric's 100th
    value)."""
    provider = metrics.provider
    for name in _METRIC_SET_CHANGES:
        change = getattr(provider, name)
        if getattr(change, "one_at_a_time", False):
            continue

        def locked(*args: Any, _change: Callable[..., Any] = change, **kwargs: Any) -> Any:
            with _METRIC_SET:
                return _change(*args, **kwargs)

        locked.one_at_a_time = True  # type: ignore[attr-defined]
        setattr(provider, name, locked)


def forget_metrics() -> None:
    """Empty the metric set after an invocation, as Powertools' flush does on Lambda. With metrics
    disabled, as they are here, no flush ever empties it: left to grow, the 100th value of a
    metric made add_metric serialize the set while another function's thread added to it, and
    that request answered 500 ("dictionary changed size during iteration")."""
    metrics.clear_metrics()


def load_handler(route: Route) -> Callable[[dict, Any], Any]:
    module_name, function_name = route.handler.rsplit(".", 1)
    path = Path(route.code_dir) / f"{module_name.replace('.', '/')}.py"
    spec = importlib.util.spec_from_file_location(f"lambda_{route.function}_{module_name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {route.function}'s handler from {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)  # cold start: settings are validated here
    return getattr(module, function_name)


def api_event(route: Route, method: str, raw_path: str, query: str, headers: dict[str, str],
              body: bytes, path_parameters: dict[str, str], source_ip: str,
              authorizer: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 event, as AWS would send it."""
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type", "application/json")
    is_text = not body or content_type.startswith(TEXT_TYPES)
    try:
        text_body = body.decode() if is_text else None
    except UnicodeDecodeError:
        text_body = None
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    now = datetime.now(timezone.utc)
    request_id = str(uuid.uuid4())
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": query,
        "headers": lowered,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "authorizer": authorizer,
            "domainName": lowered.get("host", "127.0.0.1"),
            "domainPrefix": "local",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1",
                     "sourceIp": source_ip, "userAgent": lowered.get("user-agent", "")},
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": text_body is None,
    }
    if "cookie" in lowered:
        event["cookies"] = [c.strip() for c in lowered["cookie"].split(";")]
    if params:
        event["queryStringParameters"] = {k: ",".join(v) for k, v in params.items()}
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body:
        event["body"] = text_body if text_body is not None else base64.b64encode(body).decode()
    return event


def lambda_result_to_http(result: Any) -> HttpResponse:
    """Lambda's return value -> HTTP, with HTTP API's rules for a result without statusCode."""
    if not isinstance(result, dict) or "statusCode" not in result:
        body = result if isinstance(result, str) else json.dumps(result)
        return HttpResponse(200, {"content-type": "application/json"}, body.encode())
    headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = ",".join(map(str, values))
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    response = HttpResponse(int(result["statusCode"]), headers, body)
    if result.get("cookies"):
        response.headers["set-cookie"] = "; ".join(result["cookies"])
    return response


class Gateway:
    """Routes HTTP requests to the template's functions, loading each on first use."""

    def __init__(self, template: dict[str, Any], allowed_origins: list[str], auth: LocalAuth) -> None:
        self.routes = http_routes(template)
        self.functions = resources(template, "AWS::Serverless::Function")
        self.allowed_origins = allowed_origins
        self.auth = auth
        self._handlers: dict[str, Callable[[dict, Any], Any]] = {}
        metrics_changed_one_at_a_time()
        self._load_lock = threading.Lock()
        self.trainer = self._local_trainer(template)
        self.jobs: dict[str, LocalJobs] = {}  # by function module: their background jobs

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route for a path as sent (percent-encoded), and its parameters decoded."""
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, {name: unquote(value) for name, value in found.groupdict().items()}
        return None

    def handler(self, route: Route) -> Callable[[dict, Any], Any]:
        with self._load_lock:
            if route.function not in self._handlers:
                handler = load_handler(route)
                self._compose(sys.modules[handler.__module__])
                self._handlers[route.function] = handler
            return self._handlers[route.function]

    def _compose(self, module: ModuleType) -> None:
        """What differs locally is injected into a function here; its code never asks where it runs."""
        if hasattr(module, "trainer"):  # the admin function: its AWS trainer invokes a Lambda
            module.trainer = self.trainer
        if hasattr(module, "runner"):  # the campaigns function: on AWS it invokes itself for the job
            module.runner = self.jobs.setdefault(module.__name__, LocalJobs(module.run))

    def _local_trainer(self, template: dict[str, Any]) -> LocalTrainer:
        """The function the admin function starts (its TRAIN_FUNCTION_NAME), run in-process."""
        starts = [variables["TRAIN_FUNCTION_NAME"]["Ref"] for variables in
                  ((props.get("Environment") or {}).get("Variables", {}) for props in self.functions.values())
                  if isinstance(variables.get("TRAIN_FUNCTION_NAME"), dict)]
        if len(set(starts)) != 1:
            raise ValueError(f"template.yaml: expected one function named by TRAIN_FUNCTION_NAME, found {starts}")
        name = starts[0]
        props = self.functions[name]
        timeout = props.get("Timeout") or template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
        route = Route("", "", name, PROJECT_ROOT / props["CodeUri"], props["Handler"], re.compile(""))
        return LocalTrainer(name, lambda: load_handler(route),
                            lambda: LambdaContext(function_name=name, timeout_ms=int(timeout) * 1000))

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes,
               source_ip: str = "127.0.0.1") -> HttpResponse:
        path = urlsplit(target).path
        if path.startswith(DEV_PREFIX):  # no CORS headers, whatever AllowedOrigins says
            return self._dev_helper(method, target, headers, body, source_ip)
        origin = {k.lower(): v for k, v in headers.items()}.get("origin")
        if method == "OPTIONS" and origin:
            return self._preflight(origin)
        page = (docs_response(path) or web_response(method, path)) if method == "GET" else None
        if page is not None:
            response = page
            if path in PAGES and page.status == 200:  # what lets the page's own scripts reach /dev/
                response.headers["set-cookie"] = (f"{DEV_SECRET_COOKIE}={self.auth.dev_secret}; "
                                                  "HttpOnly; SameSite=Strict; Path=/dev")
        else:
            response = self._call_api(method, target, headers, body, source_ip)
        self._add_cors(response, origin)
        return response

    def _dev_helper(self, method: str, target: str, headers: dict[str, str], body: bytes,
                    source_ip: str) -> HttpResponse:
        refused = self._dev_refusal(headers)
        if refused is not None:
            return refused
        path = urlsplit(target).path
        if path == "/dev/token" and method == "POST":
            return self._dev_token(body)
        if path == "/dev/bus" and method == "GET":
            return _dev_bus(urlsplit(target).query)
        if path.startswith(DEV_TRUSTED_PREFIX + "/"):
            # The backend signs its own requests: the browser's credentials stay here.
            dropped = ("authorization", "cookie", DEV_SECRET_HEADER)
            forwarded = {k: v for k, v in headers.items() if k.lower() not in dropped}
            return self._call_api(method, target[len(DEV_TRUSTED_PREFIX):], forwarded, body,
                                  source_ip, trusted_context())
        return _gateway_answer(404, "Not Found")

    def _dev_refusal(self, headers: dict[str, str]) -> HttpResponse | None:
        """Why a /dev/ request may not pass, or None: the helpers mint tokens and call as the
        backend, so only the stack's CLI, tests and own pages (the secret) may use them.

        A page on another port of this host is same-site, so its requests carry a SameSite=Strict
        cookie; the Origin check refuses it.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        origin = lowered.get("origin")
        if origin is not None and urlsplit(origin).netloc != lowered.get("host"):
            return _json(403, {"message": "the local stack's /dev/ helpers answer only its own pages"})
        presented = lowered.get(DEV_SECRET_HEADER) or _cookie(lowered.get("cookie", ""), DEV_SECRET_COOKIE)
        if not presented:
            return _json(401, {"message": f"the local stack's /dev/ helpers need its secret: send "
                                          f"{DEV_SECRET_HEADER} (devstack secret prints it)"})
        if not hmac.compare_digest(presented.encode(errors="replace"), self.auth.dev_secret.encode()):
            return _json(403, {"message": "that is not this local stack's secret"})
        return None

    def _call_api(self, method: str, target: str, headers: dict[str, str], body: bytes,
                  source_ip: str, authorizer: dict[str, Any] | None = None) -> HttpResponse:
        url = urlsplit(target)
        found = self.match(method, url.path)  # on the path as sent: an encoded '/' stays in its segment
        if found is None:
            return _gateway_answer(404, "Not Found")
        route, path_parameters = found
        if authorizer is None and _open_route(route, headers):
            authorizer = {}  # API Gateway checks nothing; the function sees no authorizer context
        elif authorizer is None:
            try:
                authorizer = self.auth.authorizer_context(method, host_url(headers, target), headers, body)
            except Rejected as rejected:
                return _gateway_answer(rejected.status, rejected.message, rejected.detail)
        if authorizer and not authorizer.keys() & route.authenticated_by:  # on AWS: a route the caller's API lacks
            return _gateway_answer(404, "Not Found")
        event = api_event(route, method, unquote(url.path), url.query, headers, body, path_parameters,
                          source_ip, authorizer)
        try:
            handler = self.handler(route)
            # No invocation here lasts longer than API Gateway's 29 s; one waiting past the limit is
            # most likely called from inside another (code under test calling the API back), which
            # would otherwise wait forever.
            if not _INVOKING.acquire(timeout=INVOCATION_WAIT_SECONDS):  # see the module's docstring
                return _gateway_answer(503, f"the local stack answers one request at a time and this one waited "
                                            f"{INVOCATION_WAIT_SECONDS:.0f} s: was it sent from inside another?")
            try:
                result = handler(event, LambdaContext(function_name=route.function))
            finally:
                forget_metrics()
                _INVOKING.release()
            return lambda_result_to_http(result)
        except Exception:  # noqa: BLE001 - what API Gateway answers when a function crashes
            traceback.print_exc()
            return _gateway_answer(500, "Internal Server Error")

    def _dev_token(self, body: bytes) -> HttpResponse:
        try:
            user_id = json.loads(body or b"{}").get("user_id")
        except (json.JSONDecodeError, AttributeError):
            user_id = None
        if not isinstance(user_id, str) or not user_id:
            return _json(400, {"error": {"code": "invalid_request", "message": "send {\"user_id\": \"...\"}",
                                         "fields": [{"field": "user_id", "message": "required"}]}})
        return _json(200, {"token": self.auth.issue_token(user_id, DEV_TOKEN_SECONDS),
                           "expires_in": DEV_TOKEN_SECONDS})

    def _cors_origin(self, origin: str | None) -> str | None:
        if origin and ("*" in self.allowed_origins or origin in self.allowed_origins):
            return origin
        return None

    def _add_cors(self, response: HttpResponse, origin: str | None) -> None:
        allowed = self._cors_origin(origin)
        if allowed:
            response.headers["access-control-allow-origin"] = allowed
            response.headers["access-control-expose-headers"] = EXPOSED_HEADERS

    def _preflight(self, origin: str) -> HttpResponse:
        response = HttpResponse(204, {}, b"")
        if self._cors_origin(origin):
            response.headers.update({
                "access-control-allow-origin": origin,
                "access-control-allow-methods": "GET,POST,PUT,DELETE,OPTIONS",
                "access-control-allow-headers": "content-type,authorization",
                "access-control-max-age": "600",
            })
        return response


def _open_route(route: Route, headers: dict[str, str]) -> bool:
    """A request the public API passes without an authorizer: the route has none there, and the
    request is not SigV4-signed for the trusted API's copy of it."""
    signed = {k.lower(): v for k, v in headers.items()}.get("authorization", "").startswith("AWS4-HMAC-SHA256")
    return "none" in route.authenticated_by and not (signed and "iam" in route.authenticated_by)


DEV_BUS_LIMIT = 1000


def _dev_bus(query: str) -> HttpResponse:
    """GET /dev/bus?detail_type=...&since=...&limit=...: the local bus's newest entries, newest last,
    as EventBridge would deliver them (Detail as JSON text). Empty when the stack has no bus file."""
    params = dict(parse_qsl(query))
    try:
        limit = int(params.get("limit", "100"))
        if not 1 <= limit <= DEV_BUS_LIMIT:
            raise ValueError
        if params.get("since"):
            datetime.fromisoformat(params["since"].replace("Z", "+00:00"))
    except ValueError:
        return _json(400, {"error": {"code": "invalid_request", "message": (
            f"limit: 1 to {DEV_BUS_LIMIT}; since: an ISO 8601 time")}})
    path = os.environ.get("LOCAL_BUS_FILE")
    entries = LocalBus(Path(path)).read(params.get("detail_type"), params.get("since"), limit) if path else []
    return _json(200, {"entries": entries})


def _cookie(header: str, name: str) -> str | None:
    for pair in header.split(";"):
        key, _, value = pair.strip().partition("=")
        if key == name:
            return value
    return None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json", **(headers or {})},
                        json.dumps(body).encode())


def _gateway_answer(status: int, message: str, detail: str | None = None) -> HttpResponse:
    """API Gateway's own answers: {"message": ...}; a JWT refusal says why in WWW-Authenticate."""
    headers = {}
    if status == 401 and detail:
        headers["www-authenticate"] = f'Bearer error="invalid_token" error_description="{detail}"'
    elif detail:
        message = detail
    return _json(status, {"message": message}, headers)


def body_limit() -> int:
    """What the functions accept (shared/config.py): the gateway need not read more than that."""
    return int(os.environ.get("MAX_BODY_BYTES") or Settings.model_fields["max_body_bytes"].default)


def make_server(gateway: Gateway, port: int) -> ThreadingHTTPServer:
    max_body = body_limit()

    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = REQUEST_TIMEOUT_SECONDS  # each read and write; a timeout closes the connection

        def _content_length(self) -> int | None:
            """The body's announced size; None once a 400 or 413 has answered it."""
            text = (self.headers.get("content-length") or "0").strip()
            if not _DIGITS.fullmatch(text):
                self.send_error(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes")
                return None
            if len(text.lstrip("0")) > len(str(max_body)) or int(text) > max_body:
                self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request bodies are at most {max_body} bytes")
                return None
            return int(text)

        def _serve(self) -> None:
            length = self._content_length()
            if length is None:
                return  # unread body: send_error closes the connection
            body = self.rfile.read(length) if length else b""
            response = gateway.handle(
                self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
            )
            self.send_response(response.status)
            for name, value in response.headers.items():
                if name not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # What the stdlib refuses itself (a URL over 64 KiB, a malformed request line),
            # answered as API Gateway answers: JSON, not the stdlib's HTML page.
            body = json.dumps({"message": message or HTTPStatus(code).phrase}).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200:
                self.wfile.write(body)

        def __getattr__(self, name: str) -> Any:
            # Any method reaches the gateway, which answers what API Gateway answers (404).
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            if os.environ.get("DEVSTACK_ACCESS_LOG"):
                super().log_message(format, *args)

    server = ThreadingHTTPServer(("127.0.0.1", port), RequestHandler)
    server.daemon_threads = True
    return server
