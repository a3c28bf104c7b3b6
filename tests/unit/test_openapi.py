"""docs/openapi.json: up to date with the routes, complete, and a valid OpenAPI 3 document."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from schemathesis.core.result import Err

from devstack import openapi
from devstack.template import http_routes, load_template
from shared.api import error_body
from shared.auth import CLIENT_ROUTES, Access

ROUTES = http_routes(load_template())


@pytest.fixture(scope="module")
def fresh() -> dict[str, Any]:
    """Built once: building imports every function."""
    return openapi.build_document()


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return json.loads(openapi.DOCUMENT_PATH.read_text())


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{method.upper()} {path}": operation
            for path, item in document["paths"].items() for method, operation in item.items()}


def test_the_committed_document_is_up_to_date(fresh: dict[str, Any]) -> None:
    message = openapi.stale_message(openapi.DOCUMENT_PATH, openapi.render(fresh))
    if message:
        pytest.fail(message, pytrace=False)


def test_check_fails_on_a_stale_document_and_says_how_to_regenerate(
    fresh: dict[str, Any], tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(openapi, "build_document", lambda: fresh)
    stale = tmp_path / "openapi.json"
    stale.write_text(openapi.render({**fresh, "paths": {}}))
    monkeypatch.setattr(openapi, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(openapi, "DOCUMENT_PATH", stale)

    assert openapi.main(["--check"]) == 1
    assert f"regenerate it with `{openapi.REGENERATE}`" in capsys.readouterr().err

    assert openapi.main([]) == 0
    assert openapi.main(["--check"]) == 0
    assert stale.read_text() == openapi.render(fresh)
    assert stale.read_text().endswith("}\n")


def test_every_template_route_is_documented_with_who_may_call_it(committed: dict[str, Any]) -> None:
    documented = operations(committed)
    assert documented.keys() == {route.route_key for route in ROUTES}
    expected = {None: [{"trustedIam": []}], Access.CUSTOMER: [{"customerJwt": []}, {"trustedIam": []}],
                Access.PUBLIC: [{"trustedIam": []}, {}], Access.VISITOR: [{"visitorToken": []}],
                Access.RENEWAL: [{"visitorToken": []}]}
    for route_key, operation in documented.items():
        access = CLIENT_ROUTES.get(route_key)
        assert operation["security"] == expected[access], route_key
        assert operation["summary"] != route_key, f"{route_key}: Powertools' placeholder summary"
        assert "**Who may call:**" in operation["description"], route_key
        if access is None:  # not on the public API at all, so no 403 for browsers there
            assert "browsers and apps get 404" in operation["description"], route_key


def test_the_documented_security_follows_the_apis_the_template_puts_a_route_on() -> None:
    route = next(r for r in ROUTES if r.route_key == "GET /users/{user_id}/recommendations")
    operation = {"summary": "Popular items", "tags": ["recommendations"], "responses": {"200": {}}}

    on_both = openapi.complete_operation(route, operation)
    trusted_only = openapi.complete_operation(dataclasses.replace(route, authenticated_by=frozenset({"iam"})),
                                              operation)

    assert on_both["security"] == [{"customerJwt": []}, {"trustedIam": []}]
    assert trusted_only["security"] == [{"trustedIam": []}]


def test_the_public_api_must_carry_exactly_the_routes_customers_may_call() -> None:
    openapi.check_public_api(ROUTES)
    public_by_mistake = [dataclasses.replace(r, authenticated_by=frozenset({"jwt", "iam"})) for r in ROUTES]
    with pytest.raises(openapi.OpenApiError, match="puts POST /events on the public API, but shared/auth.py"):
        openapi.check_public_api(public_by_mistake)
    customers_left_out = [dataclasses.replace(r, authenticated_by=frozenset({"iam"})) for r in ROUTES]
    with pytest.raises(openapi.OpenApiError, match="lists GET /popular, but template.yaml does not put it on the"):
        openapi.check_public_api(customers_left_out)
    trusted_left_out = [dataclasses.replace(r, authenticated_by=frozenset({"jwt"})) for r in ROUTES]
    with pytest.raises(openapi.OpenApiError, match="does not put POST /events on the trusted API"):
        openapi.check_public_api(trusted_left_out)


def test_security_schemes_are_a_customer_jwt_and_aws_sigv4(committed: dict[str, Any]) -> None:
    schemes = committed["components"]["securitySchemes"]
    assert schemes["customerJwt"] | {"description": ""} == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": ""}
    assert schemes["trustedIam"] | {"description": ""} == {
        "type": "apiKey", "in": "header", "name": "Authorization",
        "x-amazon-apigateway-authtype": "awsSigv4", "description": ""}


def test_every_operation_documents_its_errors_with_the_error_body(committed: dict[str, Any]) -> None:
    responses = committed["components"]["responses"]
    for route_key, operation in operations(committed).items():
        statuses = operation["responses"]
        assert {"401", "403", "500", "503"} <= statuses.keys(), route_key
        if "parameters" in operation or "requestBody" in operation:
            assert "422" in statuses, route_key
        for status, response in statuses.items():
            # 414 comes from API Gateway itself, before any function: its body is GatewayError.
            if int(status) >= 400 and "$ref" in response and status != "414":
                schema = responses[response["$ref"].rsplit("/", 1)[1]]["content"]["application/json"]["schema"]
                assert {"$ref": "#/components/schemas/Error"} in [schema, *schema.get("anyOf", [])], route_key
    assert "Retry-After" in responses["StorageUnavailable"]["headers"]
    assert "HTTPValidationError" not in committed["components"]["schemas"]  # Powertools' 422 body, not ours


def test_the_error_schema_accepts_what_the_functions_send(committed: dict[str, Any]) -> None:
    error = jsonschema_rs.Draft202012Validator(
        {"$ref": "#/components/schemas/Error", "components": committed["components"]})
    error.validate(error_body("not_found", "item 'x' is not in the catalog"))
    error.validate(error_body("invalid_request", "invalid request: limit",
                              [{"field": "limit", "message": "too big"}]))
    assert not error.is_valid({"message": "Forbidden"})


def test_the_document_is_valid_openapi_3(committed: dict[str, Any]) -> None:
    assert committed["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(committed)
    schema.validate()  # against the OpenAPI specification's own schema
    failed = [str(result.err()) for result in schema.get_all_operations() if isinstance(result, Err)]
    assert failed == []
    for name, model in committed["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(model), name


def test_a_name_means_one_schema() -> None:
    schemas = openapi.Schemas()
    schemas.add("User", {"type": "object"}, "IngestFunction")
    schemas.add("User", {"type": "object"}, "PrivacyFunction")
    with pytest.raises(openapi.OpenApiError, match="IngestFunction and SegmentsFunction define different"):
        schemas.add("User", {"type": "string"}, "SegmentsFunction")


def test_routes_must_match_the_template_both_ways() -> None:
    template = {"IngestFunction": {"GET /items/{item_id}", "POST /events"}}
    openapi.check_routes(template, {"IngestFunction": {"GET /items/{item_id}", "POST /events"}})
    with pytest.raises(openapi.OpenApiError) as raised:
        openapi.check_routes(template, {"IngestFunction": {"GET /items/{item_id}", "POST /orders"}})
    assert "template.yaml routes POST /events to IngestFunction, whose app has no such route" in str(raised.value)
    assert "IngestFunction's app serves POST /orders, but template.yaml does not route it there" in str(raised.value)


def test_auth_may_not_list_a_route_the_template_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openapi, "CLIENT_ROUTES",
                        {**CLIENT_ROUTES, "GET /orders": Access.CUSTOMER})
    with pytest.raises(openapi.OpenApiError, match="CLIENT_ROUTES lists GET /orders, which template.yaml"):
        openapi.check_route_tables({route.route_key for route in ROUTES})
