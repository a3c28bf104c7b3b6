"""docs/openapi.json: one OpenAPI document for the HTTP API that template.yaml deploys.

Each function's Powertools resolver describes its own routes from their signatures. This merges
them, checks that they are exactly template.yaml's routes, and adds what a resolver cannot know:
who may call each route (shared/auth.py), the error body every function answers with
(shared/api.py), and the statuses that handlers choose themselves or that their storage causes.

    python -m devstack.openapi           write docs/openapi.json
    python -m devstack.openapi --check   exit 1 when docs/openapi.json is out of date (CI)
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from pydantic import BaseModel, Field

from devstack.gateway import load_handler
from devstack.template import PROJECT_ROOT, Route, http_routes, load_template
from shared.auth import CLIENT_ROUTES, Access
from shared.config import get_settings

DOCUMENT_PATH = PROJECT_ROOT / "docs" / "openapi.json"
REGENERATE = "python -m devstack.openapi"
TITLE = "shop-recs API"
SCHEMAS = "#/components/schemas/"
RESPONSES = "#/components/responses/"

DESCRIPTION = """\
Recommendations and customer segments for online shops: events, the catalog and customer profiles
in; recommendations with reasons, similar items, rankings, popular items and segment tags out.

**Who may call.** The stack has two base URLs. The shop's own systems (backend, data pipeline,
marketers' tools) call the trusted API (`TrustedApiUrl`), signing every request with AWS SigV4
(`trustedIam`); it carries every route but a visitor's own. Browsers and apps call the public API
(`PublicApiUrl`), which carries only the routes listed for them, each with what it takes:
no credentials (catalog, popular items, similar and bought-together items, a new visitor:
cacheable, nothing personal), a visitor token (`visitorToken`, from `POST /visitors`: that
visitor's own events and recommendations), or a signed-in customer's bearer token
(`customerJwt`, from the shop's OIDC issuer: their own `user_id` only). Any other path there is
answered 404 by API Gateway.

**Errors.** Every error the functions answer has one shape (`Error`):
`{"error": {"code": "...", "message": "...", "fields": [{"field": "...", "message": "..."}]}}`.
When API Gateway answers itself (an authorizer refused the request, the function failed or timed
out), the body is `{"message": "..."}` (`GatewayError`). On 503, wait `Retry-After` seconds and
send the same request again.
"""

TAGS = {
    "events": "What customers did: views, carts, clicks, searches, purchases, returns",
    "catalog": "The shop's items",
    "customers": "Customer profiles",
    "recommendations": "Recommendations, similar items, rankings, popular items",
    "segments": "Segment tags of a customer; segment definitions and members",
    "privacy": "A customer's consent, access to their data, and erasure",
    "models": "Model versions: train, list, activate",
    "experiments": "Experiments between models and baselines, their results, and purchases credited to recommendations",
    "campaigns": "Campaign exports: an audience of reachable customers with their recommendations, or who "
                 "should hear about an item",
    "visitors": "Logged-out visitors: an anonymous id and its token; linking it to the customer who signs in",
}

SECURITY_SCHEMES = {
    "customerJwt": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A signed-in customer's token from the shop's OIDC issuer (e.g. Cognito), checked by "
                       "API Gateway's JWT authorizer. Routes about one customer accept it only for the "
                       "user_id in the token (the USER_ID_CLAIM claim, `sub` by default).",
    },
    "visitorToken": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A logged-out visitor's token from POST /visitors (HS256, an hour; renew at "
                       "POST /visitors/{visitor_id}/token), checked by the function: only for its own visitor_id.",
    },
    "trustedIam": {
        "type": "apiKey", "in": "header", "name": "Authorization",
        "x-amazon-apigateway-authtype": "awsSigv4",
        "description": "A request signed with AWS SigV4 by the shop's own systems, checked by API Gateway's "
                       "IAM authorizer. OpenAPI has no SigV4 type: this is how AWS describes one.",
    },
}

# Which API authenticates each scheme's callers (devstack.template.api_authentication's kinds).
SCHEME_AUTHENTICATION = {"customerJwt": "jwt", "trustedIam": "iam"}
# The public API's routes without an authorizer: what the function itself asks for.
SCHEME_OF_ACCESS = {Access.VISITOR: "visitorToken", Access.RENEWAL: "visitorToken"}

WHO_MAY_CALL = {
    None: "**Who may call:** the shop's own systems (SigV4) only. The route is not on the public API: "
          "there, browsers and apps get 404.",
    Access.CUSTOMER: "**Who may call:** the shop's own systems (SigV4), or a signed-in customer "
                     "for their own `user_id` only.",
    Access.PUBLIC: "**Who may call:** anyone, without credentials, on the public API (the answer is the same for "
                   "everyone and carries `Cache-Control` and an `ETag`); the shop's own systems (SigV4) too.",
    Access.VISITOR: "**Who may call:** a visitor with their token (`POST /visitors`), for their own `visitor_id` only.",
    Access.RENEWAL: "**Who may call:** a visitor with their token, valid or expired less than 30 days ago, for their "
                    "own `visitor_id` only.",
}

# Settings are validated when a function's module is imported (shared/config.py); no value shows
# in the document.
IMPORT_ENVIRONMENT = {
    "EVENTS_TABLE": "openapi-events",
    "ITEMS_TABLE": "openapi-items",
    "USERS_TABLE": "openapi-users",
    "SEGMENTS_TABLE": "openapi-segments",
    "MODEL_BUCKET": "openapi-models",
}


class OpenApiError(Exception):
    """The functions, template.yaml and shared/auth.py do not add up to one API."""


class FieldError(BaseModel):
    field: str = Field(description="The input that is wrong: events[3].price, limit, body, content-type")
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(description="For programs: invalid_request, not_found, forbidden, storage_unavailable, ...")
    message: str = Field(description="For people")
    fields: list[FieldError] = Field(default_factory=list, description="Each input that is wrong, when some are")


class Error(BaseModel):
    """The body of every error a function answers (shared/api.py)."""

    error: ErrorDetail


class GatewayError(BaseModel):
    """The body when API Gateway answers itself: an authorizer refused, the function failed or timed out."""

    message: str


def _json(description: str, *schemas: str, **extra: Any) -> dict[str, Any]:
    refs = [{"$ref": SCHEMAS + name} for name in schemas]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


# Error statuses -> the reusable responses operations refer to.
ERROR_RESPONSES: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("BadRequest", _json("The body is not valid JSON or not a JSON object, or a value is wrong in a way "
                              "its schema cannot say (e.g. a cursor from an older run)", "Error")),
    401: ("Unauthenticated", _json("Neither a customer's bearer token nor a SigV4 signature, or an invalid one",
                                   "Error", "GatewayError")),
    403: ("Forbidden", _json("The caller may not call this route, or not for this user_id",
                             "Error", "GatewayError")),
    404: ("NotFound", _json("The item, customer, model version, segment, campaign or experiment does not exist",
                            "Error")),
    409: ("Conflict", _json("The request is valid, but the resource's state forbids it", "Error")),
    413: ("PayloadTooLarge", _json("The body is larger than MAX_BODY_BYTES (2 MB by default)", "Error")),
    414: ("UriTooLong", _json("The URL is longer than API Gateway accepts", "GatewayError")),
    415: ("UnsupportedMediaType", _json("The body is not sent as application/json", "Error")),
    429: ("TooManyRequests", _json(
        "This token's event budget for the window is spent: wait Retry-After seconds", "Error",
        headers={"Retry-After": {"description": "Seconds until the next window",
                                 "schema": {"type": "integer", "minimum": 1}}})),
    422: ("ValidationFailed", _json("A parameter or a field is wrong: fields names each one", "Error")),
    500: ("InternalError", _json("The function failed; it has been logged", "Error", "GatewayError")),
    503: ("StorageUnavailable", _json(
        "DynamoDB or S3 is throttling or unreachable after retries (or the function timed out): "
        "wait Retry-After seconds and send the same request again", "Error", "GatewayError",
        headers={"Retry-After": {"description": "Seconds to wait before retrying",
                                 "schema": {"type": "integer", "minimum": 0}}})),
}
# Every route reads or writes DynamoDB or S3, so every route can answer 503.
EVERY_ROUTE_ERRORS = (401, 403, 414, 500, 503)
BODY_ERRORS = (400, 413, 415)  # shared/api.py resolve() refuses such bodies before routing


@dataclass(frozen=True)
class Outcomes:
    """What a route answers that Powertools cannot tell from its handler's signature."""

    success: tuple[int, ...] = (200,)  # the statuses its return type is sent with
    errors: tuple[int, ...] = ()  # the domain errors it raises (shared/errors.py)
    responses: dict[int, dict[str, Any]] = field(default_factory=dict)  # anything else, in full


BATCH_REJECTED = _json("Every entry was rejected (each listed in rejected), or the request itself is invalid",
                       "BatchResult", "Error")

OUTCOMES: dict[str, Outcomes] = {
    "POST /events": Outcomes(success=(200, 207), responses={422: BATCH_REJECTED}),
    "POST /items": Outcomes(success=(200, 207), responses={422: BATCH_REJECTED}),
    "GET /items/{item_id}": Outcomes(errors=(404,)),
    "GET /users/{user_id}": Outcomes(errors=(404,)),
    "GET /items/{item_id}/similar": Outcomes(errors=(404,)),
    "GET /items/{item_id}/bought-together": Outcomes(errors=(404,)),
    "POST /visitors": Outcomes(success=(201,)),
    "POST /visitors/{visitor_id}/events": Outcomes(success=(200, 207), errors=(429,), responses={422: BATCH_REJECTED}),
    "POST /users/{user_id}/events": Outcomes(success=(200, 207), errors=(429,), responses={422: BATCH_REJECTED}),
    "POST /users/{user_id}/visitors": Outcomes(errors=(400, 409)),
    "GET /segments": Outcomes(errors=(400,)),
    "POST /segments": Outcomes(success=(201,), errors=(409,)),
    "DELETE /segments/{segment_id}": Outcomes(success=(204,), errors=(404,)),
    "GET /segments/{segment_id}/members": Outcomes(errors=(400, 404)),
    "GET /users/{user_id}/export": Outcomes(errors=(400,)),
    "DELETE /users/{user_id}": Outcomes(success=(200, 202)),
    "POST /models/train": Outcomes(success=(202,), errors=(409,)),
    "POST /campaigns": Outcomes(success=(202,), errors=(404,)),
    "GET /campaigns/{campaign_id}": Outcomes(errors=(404,)),
    "POST /models/{version}/activate": Outcomes(errors=(404, 409)),
    "POST /experiments": Outcomes(success=(201,), errors=(404, 409)),
    "GET /experiments/{experiment_id}": Outcomes(errors=(404,)),
    "POST /experiments/{experiment_id}/stop": Outcomes(errors=(404, 409)),
    "POST /experiments/{experiment_id}/promote": Outcomes(errors=(404, 409)),
}


class Schemas:
    """components/schemas gathered from several sources: one name, one schema."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def add(self, name: str, schema: Any, source: str) -> None:
        if name in self.schemas and self.schemas[name] != schema:
            raise OpenApiError(
                f"components/schemas/{name}: {self.sources[name]} and {source} define different schemas "
                "of this name; rename one of the models")
        self.schemas.setdefault(name, schema)
        self.sources.setdefault(name, source)

    def add_models(self, *models: type[BaseModel]) -> None:
        for model in models:
            schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
            for name, nested in schema.pop("$defs", {}).items():
                self.add(name, nested, __name__)
            self.add(model.__name__, schema, __name__)

    def hoist_defs(self, node: Any, source: str) -> None:
        """Move "$defs" nested in a schema into components/schemas, where their $refs point.

        A model's JSON schema embedded in a field (ingest's EventBatchIn.events) keeps its own
        definitions inside it; Powertools leaves them there.
        """
        if isinstance(node, dict):
            for name, schema in node.pop("$defs", {}).items():
                self.add(name, schema, f"{source} (nested $defs)")
            for value in node.values():
                self.hoist_defs(value, source)
        elif isinstance(node, list):
            for value in node:
                self.hoist_defs(value, source)


@contextmanager
def _import_environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in IMPORT_ENVIRONMENT}
    os.environ.update(IMPORT_ENVIRONMENT)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def function_documents(routes: list[Route], version: str) -> dict[str, dict[str, Any]]:
    """Each HTTP function's own document, from its resolver, imported as the local gateway does."""
    first_route = {}
    for route in routes:
        first_route.setdefault(route.function, route)
    documents = {}
    with _import_environment():
        for function, route in first_route.items():
            module = sys.modules[load_handler(route).__module__]
            app = getattr(module, "app", None)
            if not isinstance(app, APIGatewayHttpResolver):
                raise OpenApiError(f"{function}: {module.__file__} has no APIGatewayHttpResolver named app")
            documents[function] = json.loads(app.get_openapi_json_schema(title=TITLE, version=version))
    return documents


def check_routes(template_routes: dict[str, set[str]], served: dict[str, set[str]]) -> None:
    """Each function's app serves exactly the routes template.yaml sends it (function -> route keys)."""
    problems = []
    for function in sorted(template_routes.keys() | served.keys()):
        expected, actual = template_routes.get(function, set()), served.get(function, set())
        problems += [f"template.yaml routes {key} to {function}, whose app has no such route"
                     for key in sorted(expected - actual)]
        problems += [f"{function}'s app serves {key}, but template.yaml does not route it there"
                     for key in sorted(actual - expected)]
    if problems:
        raise OpenApiError("\n".join(problems))


def check_public_api(routes: list[Route]) -> None:
    """The public API carries exactly the routes shared/auth.py lets customers call.

    The document's security comes from the template (which API serves a route); the description
    from shared/auth.py. Were they to disagree, the document would promise customers a route
    they cannot reach, or hide one they can.
    """
    public = {route.route_key for route in routes if route.authenticated_by & {"jwt", "none"}}
    problems = [f"template.yaml puts {key} on the public API, but shared/auth.py CLIENT_ROUTES does not "
                "list it" for key in sorted(public - CLIENT_ROUTES.keys())]
    problems += [f"shared/auth.py CLIENT_ROUTES lists {key}, but template.yaml does not put it on the public API"
                 for key in sorted(CLIENT_ROUTES.keys() - public)]
    open_routes = {route.route_key for route in routes if "none" in route.authenticated_by}
    problems += [f"template.yaml has no authorizer on {key}, but shared/auth.py says it needs a customer's token"
                 for key in sorted(open_routes) if CLIENT_ROUTES.get(key) is Access.CUSTOMER]
    problems += [f"template.yaml does not put {route.route_key} on the trusted API"
                 for route in routes if "iam" not in route.authenticated_by
                 and CLIENT_ROUTES.get(route.route_key) not in (Access.VISITOR, Access.RENEWAL)]
    if problems:
        raise OpenApiError("\n".join(problems))


def check_route_tables(route_keys: set[str]) -> None:
    """shared/auth.py and OUTCOMES name only routes that exist: a renamed route is not left behind."""
    problems = [f"{where} lists {key}, which template.yaml does not route"
                for where, table in (("shared/auth.py CLIENT_ROUTES", CLIENT_ROUTES),
                                     ("devstack/openapi.py OUTCOMES", OUTCOMES))
                for key in sorted(table.keys() - route_keys)]
    if problems:
        raise OpenApiError("\n".join(problems))


def _success(documented: dict[str, Any], status: int) -> dict[str, Any]:
    if status == HTTPStatus.NO_CONTENT:
        return {"description": HTTPStatus(status).phrase}
    if status == HTTPStatus.OK:
        return documented
    return {**documented, "description": HTTPStatus(status).phrase}


def complete_operation(route: Route, operation: dict[str, Any]) -> dict[str, Any]:
    """Powertools' operation plus who may call it and every status it can answer."""
    route_key = route.route_key
    operation = copy.deepcopy(operation)
    if operation.get("summary", route_key) == route_key:  # Powertools' default
        raise OpenApiError(f"{route_key} has no summary: add summary=... to its route decorator")
    unknown_tags = set(operation.get("tags") or ["(none)"]) - TAGS.keys()
    if unknown_tags:
        raise OpenApiError(f"{route_key} has tags {sorted(unknown_tags)}: use tags=[...] from "
                           f"{sorted(TAGS)} in its route decorator, or add a tag to TAGS in devstack/openapi.py")
    access = CLIENT_ROUTES.get(route_key)
    operation["security"] = [{scheme: []} for scheme, authentication in SCHEME_AUTHENTICATION.items()
                             if authentication in route.authenticated_by]
    if access in SCHEME_OF_ACCESS:
        operation["security"].append({SCHEME_OF_ACCESS[access]: []})
    elif access is Access.PUBLIC:
        operation["security"].append({})  # OpenAPI's "no credentials needed"
    operation["description"] = "\n\n".join(filter(None, [operation.get("description"), WHO_MAY_CALL[access]]))

    outcomes = OUTCOMES.get(route_key, Outcomes())
    powertools = operation["responses"]
    responses = {str(status): _success(powertools["200"], status) for status in outcomes.success}
    errors = {*EVERY_ROUTE_ERRORS, *outcomes.errors}
    if "parameters" in operation or "requestBody" in operation:
        errors.add(422)  # Powertools documents 422 for every route; only these validate anything
    if "requestBody" in operation:
        errors.update(BODY_ERRORS)
    responses.update({str(status): {"$ref": RESPONSES + ERROR_RESPONSES[status][0]} for status in errors})
    responses.update({str(status): response for status, response in outcomes.responses.items()})
    operation["responses"] = responses
    return operation


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _used_schemas(document: dict[str, Any]) -> set[str]:
    schemas = document["components"]["schemas"]
    roots = [document["paths"], document["components"]["responses"]]
    pending, used = [ref for root in roots for ref in _references(root)], set()
    while pending:
        name = pending.pop().removeprefix(SCHEMAS)
        if name in schemas and name not in used:
            used.add(name)
            pending.extend(_references(schemas[name]))
    return used


def _resolves(document: dict[str, Any], ref: str) -> bool:
    node: Any = document
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else [""]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_references(document: dict[str, Any]) -> None:
    dangling = {ref for ref in _references(document) if not _resolves(document, ref)}
    if dangling:
        raise OpenApiError(f"$refs that point nowhere: {', '.join(sorted(dangling))}")


def project_version() -> str:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]


def build_document() -> dict[str, Any]:
    routes = http_routes(load_template())
    version = project_version()
    documents = function_documents(routes, version)

    schemas = Schemas()
    schemas.add_models(Error, GatewayError)
    operations: dict[str, dict[str, Any]] = {}
    served: dict[str, set[str]] = {}
    for function, document in documents.items():
        schemas.hoist_defs(document, function)
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            schemas.add(name, schema, function)
        for path, item in document["paths"].items():
            for method, operation in item.items():
                route_key = f"{method.upper()} {path}"
                served.setdefault(function, set()).add(route_key)
                operations[route_key] = operation
    template_routes: dict[str, set[str]] = {}
    for route in routes:
        template_routes.setdefault(route.function, set()).add(route.route_key)
    check_routes(template_routes, served)
    check_route_tables({route.route_key for route in routes})
    check_public_api(routes)

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = complete_operation(
            route, operations[route.route_key])
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    duplicates = sorted({i for i in operation_ids if operation_ids.count(i) > 1})
    if duplicates:
        raise OpenApiError(f"operationIds used by more than one route: {', '.join(duplicates)}")
    used_tags = {tag for item in paths.values() for op in item.values() for tag in op["tags"]}

    openapi_versions = {document["openapi"] for document in documents.values()}
    if len(openapi_versions) != 1:
        raise OpenApiError(f"the functions' documents disagree on the OpenAPI version: {sorted(openapi_versions)}")
    document = {
        "openapi": openapi_versions.pop(),
        "info": {"title": TITLE, "version": version, "description": DESCRIPTION},
        "servers": [{"url": "/", "description": "Where this document is served from: the local stack "
                                                "(./dev up, /docs), which serves both APIs at one address; on "
                                                "AWS, the stack's PublicApiUrl or TrustedApiUrl output"}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items() if name in used_tags],
        "paths": paths,
        "components": {
            "schemas": schemas.schemas,
            "responses": {name: response for name, response in ERROR_RESPONSES.values()},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    used = _used_schemas(document)  # drops Powertools' HTTPValidationError, which this API never answers
    document["components"]["schemas"] = {name: s for name, s in schemas.schemas.items() if name in used}
    _check_references(document)
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def stale_message(path: Path, fresh: str) -> str | None:
    """Why the document at path is not the fresh one, or None when it is."""
    try:
        committed = path.read_text()
    except FileNotFoundError:
        return f"{path.relative_to(PROJECT_ROOT)} does not exist: generate it with `{REGENERATE}`"
    if committed == fresh:
        return None
    diff = list(difflib.unified_diff(committed.splitlines(), fresh.splitlines(), "committed", "fresh",
                                     lineterm="", n=1))
    shown = "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else "")
    return (f"{path.relative_to(PROJECT_ROOT)} is out of date with the routes: regenerate it with "
            f"`{REGENERATE}` and commit it\n{shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.openapi", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the committed document is out of date")
    args = parser.parse_args(argv)
    try:
        fresh = render(build_document())
    except OpenApiError as error:
        print(f"cannot build the OpenAPI document:\n{error}", file=sys.stderr)
        return 1
    if args.check:
        message = stale_message(DOCUMENT_PATH, fresh)
        print(message or f"{DOCUMENT_PATH.relative_to(PROJECT_ROOT)} is up to date",
              file=sys.stderr if message else sys.stdout)
        return 1 if message else 0
    DOCUMENT_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOCUMENT_PATH.write_text(fresh)
    print(f"wrote {DOCUMENT_PATH.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
