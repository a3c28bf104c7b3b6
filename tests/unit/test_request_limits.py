"""Bodies that would crash the JSON parser are refused with 400 before it runs, on every route."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import request_limits
from shared.request_limits import MAX_NESTING, MAX_NUMBER_DIGITS, body_problem
from tests.factories import event, item, purchase

ROUTES = [("POST", "/events"), ("POST", "/items"), ("PUT", "/users/u-1"), ("POST", "/users/u-1/rank"),
          ("POST", "/models/train"), ("POST", "/segments")]


def assert_refused(response, detail: str) -> None:
    assert response.status == 400, response.body
    error = json.loads(response.body)["error"]
    assert error["code"] == "invalid_request"
    assert error["fields"] == [{"field": "body", "message": detail}]


def nested(levels: int, inner: Any = 1) -> bytes:
    """{"a": [{"a": [ ... ]}]}: `levels` levels of objects and arrays, the body itself the first."""
    value: Any = inner
    for level in range(levels - 1):
        value = [value] if level % 2 == 0 else {"a": value}
    return json.dumps({"a": value}).encode()


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_an_integer_past_pythons_4300_digits_is_a_400_not_a_500(api, method, path):
    response = api.call(method, path, raw=b'{"events": [{"quantity": ' + b"7" * 4400 + b"}]}")

    assert_refused(response, f"at most {MAX_NUMBER_DIGITS} digits")


def test_numbers_are_refused_past_the_documented_digits_and_digits_in_strings_never(api):
    def quantity(digits: int) -> bytes:
        body = json.dumps({"events": [purchase("p-1", quantity=0)]}).encode()
        return body.replace(b'"quantity": 0', b'"quantity": ' + b"9" * digits)

    at_limit = api.call("POST", "/events", raw=quantity(MAX_NUMBER_DIGITS))
    past_limit = api.call("POST", "/events", raw=quantity(MAX_NUMBER_DIGITS + 1))
    digits_as_text = {"code": "9" * (MAX_NUMBER_DIGITS + 1)}
    in_a_string = api.json("POST", "/items", {"items": [item("sku-1", attributes=digits_as_text)]})

    assert at_limit.status == 422  # through to the field's own rule, which names it
    assert json.loads(at_limit.body)["rejected"][0]["errors"][0]["field"] == "quantity"
    assert_refused(past_limit, f"at most {MAX_NUMBER_DIGITS} digits")
    assert in_a_string[0] == 200, in_a_string


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_json_nested_a_thousand_deep_is_a_400_not_a_500(api, method, path):
    assert_refused(api.call(method, path, raw=b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}"),
                   f"at most {MAX_NESTING} levels")


def test_nesting_is_refused_past_the_documented_levels_and_brackets_in_strings_never_count(api):
    deepest = api.call("POST", "/models/train", raw=nested(MAX_NESTING))
    too_deep = api.call("POST", "/models/train", raw=nested(MAX_NESTING + 1))
    brackets_in_text = {"items": [item("sku-1", title="[" * 40 + '{"\\' + "{" * 40)]}

    assert deepest.status == 422  # through to validation: "a" is not a training setting
    assert_refused(too_deep, f"at most {MAX_NESTING} levels")
    assert api.json("POST", "/items", brackets_in_text)[0] == 200


def test_a_deep_body_with_half_a_surrogate_pair_is_refused_before_anything_parses_it(api):
    body = b'{"events": [{"title": "\\udbd1"}, ' + b"[" * 5000 + b"]" * 5000 + b"]}"

    assert_refused(api.call("POST", "/events", raw=body), f"at most {MAX_NESTING} levels")


def test_a_large_ordinary_body_passes_the_checks():
    body = json.dumps({"events": [event(f"e-{n}", properties={"note": 'say "[hi]" \\ {'}) for n in range(5000)]})

    assert body_problem(body.encode()) is None


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


# Text full of what a scan could mistake for structure: brackets, quotes, backslashes.
TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\u00e9', max_size=6)
DOCUMENTS = st.recursive(st.none() | st.integers() | TRICKY_TEXT,
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY_TEXT, inner, max_size=3),
                         max_leaves=30)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(document=DOCUMENTS, limit=st.integers(min_value=1, max_value=6), ascii_only=st.booleans())
def test_the_scan_measures_nesting_as_the_parser_does(document, limit, ascii_only):
    body = json.dumps(document, ensure_ascii=ascii_only).encode()
    original = request_limits.MAX_NESTING
    request_limits.MAX_NESTING = limit  # hypothesis runs many examples per test: no monkeypatch fixture
    try:
        problem = body_problem(body)
    finally:
        request_limits.MAX_NESTING = original

    assert (problem is not None) == (depth(document) > limit)
