"""HTTP glue every function shares: the resolver, and domain errors -> JSON responses.

Every error body has one shape:
    {"error": {"code": "...", "message": "...", "fields": [{"field": "...", "message": "..."}]}}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.shared.json_encoder import Encoder
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.auth import ANONYMOUS, AccessDenied, Caller, CallerKind, authorize
from shared.config import get_settings
from shared.consent import Recorder
from shared.errors import (Conflict, DomainError, Forbidden, NotFound, PayloadTooLarge, StorageUnavailable,
                           TooManyRequests)
from shared.limits import TOO_LARGE
from shared.observability import logger
from shared.request_limits import body_problem
from shared.standard_json import finite
from shared.visitors import VisitorTokens

# Public answers (catalog, popularity: the same for everyone) may be kept this long by a CDN or
# browser; they change when a model or an item does, which the ETag tells a revalidating cache.
PUBLIC_MAX_AGE_SECONDS = 300

STATUS_BY_ERROR: dict[type[DomainError], HTTPStatus] = {
    NotFound: HTTPStatus.NOT_FOUND,
    Forbidden: HTTPStatus.FORBIDDEN,
    TooManyRequests: HTTPStatus.TOO_MANY_REQUESTS,
    Conflict: HTTPStatus.CONFLICT,
    PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    StorageUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
}


def error_body(code: str, message: str, fields: list[dict[str, str]] | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def error_response(
    status: HTTPStatus, code: str, message: str, fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON,
        body=error_body(code, message, fields), headers=headers,
    )


def json_response(status: int, body: Any) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _field_name(loc: tuple | list) -> str:
    """('body', 'events', 3, 'price') -> 'events[3].price'; ('query', 'limit') -> 'limit'."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _validation_error(error: RequestValidationError) -> Response:
    fields = []
    for item in error.errors():
        if item["type"] == "json_invalid":
            detail = item.get("ctx", {}).get("error", "invalid JSON")
            return error_response(
                HTTPStatus.BAD_REQUEST, "invalid_json", f"request body is not valid JSON: {detail}",
                [{"field": "body", "message": "not valid JSON"}],
            )
        message = item.get("msg", item["type"])
        if item["type"] == "extra_forbidden":
            message = "unknown field (it would be lost)"
        fields.append({"field": _field_name(item["loc"]), "message": message})
    names = ", ".join(sorted({f["field"] for f in fields}))
    # The size caps of shared/limits.py on what was sent in the body; an id in the path is simply invalid.
    if all(item["type"] == TOO_LARGE and item["loc"][:1] == ("body",) for item in error.errors()):
        return error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large", f"too large: {names}", fields)
    return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_request", f"invalid request: {names}", fields)


class _DecodedPathResolver(APIGatewayHttpResolver):
    """Hands routes the decoded ids: resolve() routes on a path whose ids are percent-encoded."""

    def _convert_matches_into_route_keys(self, match: re.Match) -> dict[str, str]:
        return {name: unquote(value) for name, value in match.groupdict().items()}


def answer_json(body: Any) -> str:
    """An answer's JSON, with a number that is not finite (a stored metric of an empty holdout, a
    record written by hand) as null: NaN is not JSON, and a browser's JSON.parse refuses the whole
    answer. Checked by json itself, so an answer without one costs no walk over it."""
    try:
        return json.dumps(body, separators=(",", ":"), cls=Encoder, allow_nan=False)
    except ValueError:
        return json.dumps(finite(body), separators=(",", ":"), cls=Encoder, allow_nan=False)


def create_app() -> APIGatewayHttpResolver:
    app = _DecodedPathResolver(enable_validation=True, serializer=answer_json)

    @app.exception_handler(RequestValidationError)
    def _invalid(error: RequestValidationError) -> Response:
        return _validation_error(error)

    @app.exception_handler(DomainError)
    def _domain(error: DomainError) -> Response:
        status = STATUS_BY_ERROR.get(type(error), HTTPStatus.BAD_REQUEST)
        fields = [{"field": error.field, "message": error.message}] if error.field else None
        headers = None
        if isinstance(error, StorageUnavailable):
            logger.warning("storage unavailable", extra={"reason": error.message})
        if isinstance(error, (StorageUnavailable, TooManyRequests)):
            headers = {"Retry-After": str(error.retry_after_seconds)}
        return error_response(status, error.code, error.message, fields, headers)

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(
            HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error",
            "the service failed to handle this request; it has been logged",
        )

    @app.not_found
    def _no_route(_: Exception) -> Response:
        event = app.current_event
        return error_response(
            HTTPStatus.NOT_FOUND, "no_route", f"no route for {event.http_method} {event.path}"
        )

    return app


def _body_bytes(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()


def _early_error(status: HTTPStatus, code: str, message: str, field: str | None = None,
                 detail: str = "") -> dict[str, Any]:
    fields = [{"field": field, "message": detail}] if field else None
    return {
        "statusCode": status.value,
        "headers": {"Content-Type": content_types.APPLICATION_JSON, "Cache-Control": "no-store"},
        "body": json.dumps(error_body(code, message, fields)),
        "isBase64Encoded": False,
    }


def _content_type(event: dict[str, Any]) -> str:
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    return headers.get("content-type", "").split(";")[0].strip().lower()


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(body: bytes) -> bool:
    """JSON may spell half a UTF-16 pair ("\\udbd1"), which no store can encode: refuse it early."""
    if not _SURROGATE_ESCAPE.search(body):  # the usual case: no parse needed
        return False
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except ValueError:
        return False  # not JSON at all: the resolver says so, naming the position
    return False


_PATH_PARAMETER = re.compile(r"\{([^}]+)\}")


def _json_media_type(event: dict[str, Any]) -> dict[str, Any]:
    """The event with a JSON body's content type as Powertools reads one: it parses a body only
    under 'application/json' spelled in lower case, yet media types are case-insensitive
    (Application/JSON) and text/json and '+json' types are JSON too (_body_refusal let through
    only JSON types, and checked the body is UTF-8)."""
    headers = event.get("headers") or {}
    names = [name for name in headers if name.lower() == "content-type"]
    media_type = _content_type(event)  # '' for a header without one (';charset=utf-8'): read as JSON, as no header is
    if not names or not (media_type.endswith("json") or not media_type) or (
            names == ["content-type"] and headers["content-type"].startswith("application/json")):
        return event
    kept = {name: value for name, value in headers.items() if name not in names}
    return {**event, "headers": {**kept, "content-type": "application/json"}}


def _routable(event: dict[str, Any]) -> dict[str, Any]:
    """The event with rawPath rebuilt from its route and its ids, each percent-encoded.

    API Gateway matches the route on the path as sent, then hands the function pathParameters
    and rawPath both decoded: an id holding '/' no longer fits its route, and a decoded '?'
    cuts rawPath short. Powertools routes on rawPath, so it gets each id as one encoded
    segment, and _DecodedPathResolver hands the route the same decoded id auth.py checked.
    """
    _, _, template = (event.get("routeKey") or "").partition(" ")
    parameters = event.get("pathParameters") or {}
    if not parameters or "{" not in template:
        return event
    try:
        path = _PATH_PARAMETER.sub(lambda found: quote(parameters[found.group(1)], safe=""), template)
    except KeyError:  # a greedy {proxy+} or a parameter API Gateway did not send: route as sent
        return event
    stage = (event.get("requestContext") or {}).get("stage")
    if stage and stage != "$default":  # Powertools strips "/<stage>" from rawPath
        path = f"/{stage}{path}"
    return {**event, "rawPath": path}


def caller(app: APIGatewayHttpResolver) -> Caller:
    """Who is calling this request, as resolve() authorised them."""
    return app.context.get("caller", ANONYMOUS)


def recorder(app: APIGatewayHttpResolver) -> Recorder:
    """Who records a consent change: the caller kind, and a trusted system's identity."""
    who = caller(app)
    return Recorder(who.kind.value, who.principal if who.trusted else None)


def resolve(app: APIGatewayHttpResolver, event: dict[str, Any], context: LambdaContext,
            max_body_bytes: int, visitor_tokens: Callable[[], VisitorTokens] | None = None) -> dict[str, Any]:
    """Refuse callers who may not call this route, then oversized, non-JSON and non-object
    bodies before anything parses them, then route.

    A body sent as a form (curl -d without a content type) would otherwise be parsed as form
    fields and answered with a confusing list of missing ones.
    """
    try:
        who = authorize(event, get_settings().user_id_claim, visitor_tokens)
    except AccessDenied as denied:
        logger.info("access denied", extra={"route": event.get("routeKey"), "code": denied.code})
        return _early_error(HTTPStatus(denied.status), denied.code, denied.message)
    except StorageUnavailable as unavailable:  # the visitor token key could not be read
        logger.warning("storage unavailable", extra={"reason": unavailable.message})
        answer = _early_error(HTTPStatus.SERVICE_UNAVAILABLE, unavailable.code, unavailable.message)
        answer["headers"]["Retry-After"] = str(unavailable.retry_after_seconds)
        return answer
    logger.append_keys(caller=who.kind.value)
    problem = _body_refusal(event, max_body_bytes)
    if problem is not None:
        return problem
    app.append_context(caller=who)
    return _cache_headers(event, who, app.resolve(_routable(_json_media_type(event)), context))


def _body_refusal(event: dict[str, Any], max_body_bytes: int) -> dict[str, Any] | None:
    body = _body_bytes(event)
    if len(body) > max_body_bytes:
        limit = f"at most {max_body_bytes} bytes"
        return _early_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large",
                            f"request body is too large ({limit})", "body", limit)
    content_type = _content_type(event)
    if body and content_type and not content_type.endswith("json"):
        return _early_error(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
            f"request bodies must be JSON, got content-type {content_type}",
            "content-type", "send 'content-type: application/json'",
        )
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return _early_error(HTTPStatus.BAD_REQUEST, "invalid_json",
                            f"request body is not UTF-8 (byte {error.start})", "body", "not valid UTF-8")
    # Before the surrogate check, which parses the body.
    if problem := body_problem(body):
        return _early_error(*problem)
    if _has_lone_surrogate(body):
        return _early_error(HTTPStatus.BAD_REQUEST, "invalid_json",
                            "request body has a \\u escape that is half of a UTF-16 pair (not a character)",
                            "body", "not valid Unicode")
    # Powertools validates a top-level JSON array element by element against the body model,
    # which would report the array's contents as unknown fields.
    if body.strip() and not body.lstrip().startswith(b"{"):
        return _early_error(HTTPStatus.BAD_REQUEST, "invalid_request",
                            "request body must be a JSON object", "body", "must be a JSON object")
    return None


def _cache_headers(event: dict[str, Any], who: Caller, result: dict[str, Any]) -> dict[str, Any]:
    """Public GET answers are cacheable by anyone, with an ETag (a matching If-None-Match gets
    304); everything else is personal or the shop's own, and no cache may keep it."""
    headers = result.setdefault("headers", {})
    public = who.kind is CallerKind.ANONYMOUS and event.get("routeKey", "").startswith("GET ")
    if not public or result.get("statusCode") != HTTPStatus.OK:
        headers["Cache-Control"] = "no-store"  # an error (a 503 above all) must not be kept either
        return result
    raw = result.get("body") or ""
    etag = '"' + hashlib.sha256(raw.encode() if isinstance(raw, str) else raw).hexdigest()[:32] + '"'
    headers.update({"Cache-Control": f"public, max-age={PUBLIC_MAX_AGE_SECONDS}", "ETag": etag,
                    "Vary": "Origin"})
    asked = {name.lower(): value for name, value in (event.get("headers") or {}).items()}.get("if-none-match", "")
    if etag in {tag.strip().removeprefix("W/") for tag in asked.split(",")} or asked.strip() == "*":
        return {**result, "statusCode": HTTPStatus.NOT_MODIFIED.value, "body": "", "isBase64Encoded": False}
    return result
