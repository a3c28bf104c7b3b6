"""The catalog and customer profiles: upserts, reads, and refusals that name the field."""

from __future__ import annotations

import pytest

from tests.factories import event, item, purchase


def test_an_item_put_can_be_read_back(api):
    body = {k: v for k, v in item("sku-9", attributes={"recycled": True}).items() if k != "item_id"}

    status, stored = api.json("PUT", "/items/sku-9", body)

    assert status == 200
    _, read = api.json("GET", "/items/sku-9")
    assert read["title"] == "Item sku-9"
    assert read["attributes"] == {"recycled": True}
    assert read["in_stock"] is True
    assert read == stored


def test_a_second_put_replaces_the_item(api):
    api.json("PUT", "/items/sku-9", {"title": "Old", "category": "toys"})
    api.json("PUT", "/items/sku-9", {"title": "New", "category": "toys", "in_stock": False})
    _, read = api.json("GET", "/items/sku-9")
    assert (read["title"], read["in_stock"]) == ("New", False)


def test_an_unknown_item_is_a_404_naming_it(api):
    status, body = api.json("GET", "/items/nope")
    assert status == 404
    assert "nope" in body["error"]["message"]


def test_a_catalog_batch_stores_the_good_items_and_lists_the_bad(api):
    batch = [item("a"), item("b", price="cheap"), item("c"), {"title": "no id", "category": "x"}]

    status, body = api.json("POST", "/items", {"items": batch})

    assert status == 207
    assert body["accepted"] == 2
    assert [(r["index"], r["item_id"]) for r in body["rejected"]] == [(1, "b"), (3, None)]
    assert body["rejected"][0]["errors"][0]["field"] == "price"
    assert api.json("GET", "/items/c")[0] == 200


def test_an_item_with_an_unknown_field_is_refused_not_silently_trimmed(api):
    status, body = api.json("PUT", "/items/a", {"title": "t", "category": "c", "colour": "red"})
    assert status == 422
    assert body["error"]["fields"] == [{"field": "colour", "message": "unknown field (it would be lost)"}]


def test_a_profile_keeps_the_purchase_summary_and_consent(api):
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-7")]})
    api.json("PUT", "/users/u-7", {"country": "DE", "consent": {"personalization": False}})

    status, user = api.json("PUT", "/users/u-7", {"country": "FR", "attributes": {"age_band": "25-34"}})

    assert status == 200
    assert user["country"] == "FR"
    assert user["attributes"] == {"age_band": "25-34"}
    assert user["consent"]["personalization"]["granted"] is False
    assert user["consent"]["profiling"]["granted"] is False  # the single flag sets both
    assert user["summary"]["purchase_count"] == 1


def test_a_profiles_numbers_come_back_as_the_numbers_sent_and_rules_compare_them_as_sent(api):
    """DynamoDB gives numbers back as Decimal: a fraction was answered as a text ("12.5"), and a
    custom rule `share == 0.1` never matched the stored 0.1 (Decimal('0.1') != 0.1 in Python)."""
    sent = {"score": 12.5, "share": 0.1, "points": 12345678901234567890, "visits": 3, "vip": True}
    assert api.json("PUT", "/users/u-7", {"country": "DE", "attributes": sent})[1]["attributes"] == sent

    stored = api.json("GET", "/users/u-7")[1]["attributes"]
    assert stored == sent and {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in sent.items()}
    rule = {"name": "Share of a tenth", "rule": {"all": [{"field": "attribute", "attribute": "share", "op": "==",
                                                          "value": 0.1}]}}
    assert api.json("POST", "/segments", rule)[0] == 201
    assert "Share of a tenth" in {t["name"] for t in api.json("GET", "/users/u-7/segments")[1]["tags"]}


def test_a_bad_country_is_refused_naming_the_field(api):
    status, body = api.json("PUT", "/users/u-7", {"country": "Germany"})
    assert status == 422
    assert body["error"]["fields"][0]["field"] == "country"


def test_an_unknown_user_is_a_404(api):
    assert api.json("GET", "/users/nobody")[0] == 404


def test_numbers_dynamodb_cannot_hold_are_refused_naming_the_attribute(api):
    for value in (-2.33e294, 1e-200, 10**38 + 1, -(10**38)):  # a whole number past 38 digits was stored rounded
        status, body = api.json("PUT", "/users/u-1", {"attributes": {"score": value}})
        assert status == 422, (value, body)
        assert body["error"]["fields"][0]["field"].startswith("attributes.score")
    assert api.json("PUT", "/users/u-1", {"attributes": {"score": 9.5e125, "tiny": 1e-120}})[0] == 200


def test_large_floats_come_back_as_the_floats_sent_and_can_be_sent_again(api):
    sent = {"big": 1e38, "huge": 9.5e125, "negative": -3.5e40}
    assert api.json("PUT", "/users/u-1", {"attributes": sent})[0] == 200

    stored = api.json("GET", "/users/u-1")[1]["attributes"]

    assert stored == sent and all(type(value) is float for value in stored.values())
    assert api.json("PUT", "/users/u-1", {"attributes": stored})[0] == 200


def test_an_items_numbers_come_back_as_the_numbers_sent(api):
    """A whole number past 2^53 came back as a float (1152921504606846977 as 1.152921504606847e+18)."""
    sent = {"ean": 1152921504606846977, "weight": 0.1, "pack": 3, "fragile": True}
    assert api.json("PUT", "/items/sku-1", {"title": "t", "category": "c", "attributes": sent})[0] == 200
    assert api.json("POST", "/items", {"items": [item("sku-2", attributes=sent)]})[0] == 200

    for item_id in ("sku-1", "sku-2"):
        stored = api.json("GET", f"/items/{item_id}")[1]["attributes"]
        assert stored == sent and {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in sent.items()}


@pytest.mark.parametrize("value, message", [
    ({"x": 1}, "must be a text (up to 1,024 characters), true or false, a number, or a list of up to 50 texts"),
    (None, "must be a text (up to 1,024 characters), true or false, a number, or a list of up to 50 texts"),
    ("x" * 1025, "String should have at most 1024 characters"),
    (["ok", "x" * 257], "[1]: String should have at most 256 characters"),
    (["ok"] * 51, "List should have at most 50 items after validation, not 51"),
])
def test_an_attribute_of_the_wrong_kind_is_named_once_with_one_reason(api, value, message):
    """Not once per kind an attribute may be (attributes.l.bool, attributes.l.constrained-int, ...)."""
    status, body = api.json("PUT", "/users/u-1", {"attributes": {"ok": 1, "l": value}})

    assert status == 422, body
    assert body["error"]["fields"] == [{"field": "attributes.l", "message": message}]
    status, body = api.json("PUT", "/items/sku-1", {"title": "t", "category": "c", "attributes": {"l": value}})
    assert body["error"]["fields"] == [{"field": "attributes.l", "message": message}]


def test_an_event_property_of_the_wrong_kind_is_named_once_and_its_neighbours_are_stored(api):
    good = event("e-1", properties={"page": "home"})
    bad = event("e-2", properties={"page": ["home"]})

    status, body = api.json("POST", "/events", {"events": [good, bad]})

    assert status == 207 and body["accepted"] == 1, body
    assert body["rejected"][0]["errors"] == [
        {"field": "properties.page", "message": "must be a text (up to 1,024 characters), true or false, or a number"}]


def test_half_a_unicode_surrogate_pair_is_refused_as_invalid_json(api):
    response = api.call("PUT", "/users/u-1", raw=b'{"region": "\\udbd1"}')
    assert response.status == 400
    assert api.json("PUT", "/users/u-1", {"region": "\U0001F600"})[0] == 200  # a real pair is fine


def test_a_body_that_is_not_utf8_is_refused_as_invalid_json(api):
    response = api.call("POST", "/segments", raw=b'{\xff\xfe4eq\xe93')
    assert response.status == 400
    assert b"not UTF-8" in response.body


@pytest.mark.parametrize("created_at, why", [
    ("9999-12-31T23:59:59-01:00", "before the year 10000"),  # past the year 9999 in UTC
    ("0001-01-01T00:00:00+01:00", "the year 1000 or later"),  # before the year 1 in UTC
    ("0999-06-01T00:00:00Z", "the year 1000 or later"),  # a year a stored time cannot spell
])
def test_a_time_no_stored_text_can_hold_is_refused_naming_the_field_and_the_rest_are_stored(api, created_at, why):
    status, body = api.json("POST", "/items", {"items": [item("ok-1"), item("bad-1", created_at=created_at)]})

    assert status == 207 and body["accepted"] == 1
    assert [(r["item_id"], r["errors"][0]["field"]) for r in body["rejected"]] == [("bad-1", "created_at")]
    assert why in body["rejected"][0]["errors"][0]["message"]
    assert api.json("GET", "/items/ok-1")[0] == 200
    assert api.json("PUT", "/items/bad-1", {"title": "t", "category": "c", "created_at": created_at})[0] == 422
