"""POST /events as a shop's backend sees it: what is stored, what is refused and why."""

from __future__ import annotations

import json

import pytest

from tests.factories import ago, event, purchase


def fields_of(rejection: dict) -> set[str]:
    return {error["field"] for error in rejection["errors"]}


def test_a_valid_batch_is_stored_and_counted(api):
    status, body = api.json("POST", "/events", {"events": [event("e-1"), purchase("e-2")]})

    assert status == 200
    assert body == {"accepted": 2, "duplicates": 0, "rejected": [], "refused_after_erasure": 0}
    _, user = api.json("GET", "/users/u-1")
    assert user["summary"]["purchase_count"] == 1


def test_valid_events_are_kept_when_others_in_the_batch_are_rejected(api):
    batch = [purchase("ok-1"), event("bad-1", event_type="wishlist"), purchase("ok-2", price=5)]

    status, body = api.json("POST", "/events", {"events": batch})

    assert status == 207
    assert body["accepted"] == 2
    assert body["rejected"] == [{"index": 1, "event_id": "bad-1", "errors": [
        {"field": "event_type", "message": body["rejected"][0]["errors"][0]["message"]}]}]
    assert "view" in body["rejected"][0]["errors"][0]["message"]
    _, user = api.json("GET", "/users/u-1")
    assert user["summary"]["purchase_count"] == 2
    assert float(user["summary"]["spend"]["EUR"]) == 15.0


def test_a_batch_where_every_event_is_bad_is_422(api):
    status, body = api.json("POST", "/events", {"events": [event("x", quantity=-1)]})

    assert status == 422
    assert body["accepted"] == 0
    assert fields_of(body["rejected"][0]) == {"quantity"}


def test_the_same_event_sent_twice_is_stored_and_counted_once(api):
    first = [purchase("e-1", price=20), purchase("e-1", price=20), event("e-2")]
    assert api.json("POST", "/events", {"events": first})[1] == {
        "accepted": 2, "duplicates": 1, "rejected": [], "refused_after_erasure": 0}

    status, body = api.json("POST", "/events", {"events": [purchase("e-1", price=20), purchase("e-3")]})

    assert (status, body["accepted"], body["duplicates"]) == (200, 1, 1)
    summary = api.json("GET", "/users/u-1")[1]["summary"]
    assert summary["purchase_count"] == 2
    assert float(summary["spend"]["EUR"]) == 30.0


def test_the_same_event_id_for_two_users_is_two_events(api):
    body = api.json("POST", "/events", {"events": [event("e-1", user_id="a"), event("e-1", user_id="b")]})[1]
    assert body["accepted"] == 2


def test_the_summary_tracks_first_and_last_purchase_and_spend_per_currency(api):
    api.json("POST", "/events", {"events": [
        purchase("p-1", timestamp="2026-03-01T10:00:00+02:00", price=10, quantity=3),
        purchase("p-2", timestamp="2026-01-15T09:00:00Z", price=4.5, currency="GBP"),
        event("v-1", timestamp="2025-12-01T00:00:00Z"),
    ]})

    summary = api.json("GET", "/users/u-1")[1]["summary"]

    assert summary["purchase_count"] == 2
    assert summary["units"] == 4
    assert {k: float(v) for k, v in summary["spend"].items()} == {"EUR": 30.0, "GBP": 4.5}
    assert summary["first_purchase_at"].startswith("2026-01-15T09:00:00")
    assert summary["last_purchase_at"].startswith("2026-03-01T08:00:00")


@pytest.mark.parametrize(("change", "field"), [
    ({"event_type": "wishlist"}, "event_type"),
    ({"timestamp": "2026-01-01T10:00:00"}, "timestamp"),
    ({"timestamp": ago(hours=-2)}, "timestamp"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"quantity": -2}, "quantity"),
    ({"quantity": "2"}, "quantity"),
    ({"user_id": ""}, "user_id"),
    ({"item_id": "x" * 257}, "item_id"),
    ({"event_id": 17}, "event_id"),
    ({"channel": "fax"}, "channel"),
    ({"colour": "red"}, "colour"),
    ({"price": -1, "currency": "EUR"}, "price"),
    ({"price": 3, "currency": "euro"}, "currency"),
    # Not ISO 4217: spend is summed per currency, so a typo (or a made-up code) would split it.
    ({"price": 3, "currency": "RMB"}, "currency"),
    ({"price": 3, "currency": "ZZZ"}, "currency"),
])
def test_each_kind_of_bad_event_is_rejected_naming_its_field(api, change, field):
    bad = {**event("bad"), **change}
    status, body = api.json("POST", "/events", {"events": [bad, event("good")]})

    assert status == 207
    assert body["accepted"] == 1
    assert field in fields_of(body["rejected"][0])


def test_a_currency_withdrawn_since_2000_is_taken_for_imported_history(api):
    sent = [purchase("p-1", price=100, currency="HRK", timestamp="2022-06-01T10:00:00Z"),
            purchase("p-2", price=5, currency="EUR")]

    assert api.json("POST", "/events", {"events": sent})[0] == 200
    assert api.json("GET", "/users/u-1")[1]["summary"]["spend"] == {"HRK": "100", "EUR": "5"}


def test_a_purchase_without_a_price_is_rejected(api):
    bad = purchase("p-1")
    del bad["price"], bad["currency"]
    body = api.json("POST", "/events", {"events": [bad]})[1]
    assert "price" in fields_of(body["rejected"][0])


def test_an_event_that_is_not_an_object_is_rejected_with_its_index(api):
    status, body = api.json("POST", "/events", {"events": [event("ok"), "nonsense"]})
    assert status == 207
    assert body["rejected"][0]["index"] == 1
    assert body["rejected"][0]["event_id"] is None


@pytest.mark.parametrize(("payload", "status", "field"), [
    ({"events": []}, 422, "events"),
    ({"events": [event(f"e-{i}") for i in range(1001)]}, 422, "events"),
    ({}, 422, "events"),
    ({"events": [event()], "source": "pos"}, 422, "source"),
    ({"events": "all of them"}, 422, "events"),
    ([event()], 400, "body"),
])
def test_a_malformed_batch_is_refused_naming_the_field(api, payload, status, field):
    got_status, body = api.json("POST", "/events", payload)

    assert got_status == status
    assert field in {f["field"] for f in body["error"]["fields"]}


def test_malformed_json_is_a_400_with_a_json_error(api):
    status, body = api.json("POST", "/events", raw=b'{"events": [')
    assert status == 400
    assert body["error"]["code"] == "invalid_json"


def test_an_oversized_body_is_refused_before_parsing(api):
    huge = json.dumps({"events": [event(properties={"blob": "x" * 1000})] * 3000}).encode()
    status, body = api.json("POST", "/events", raw=huge)
    assert status == 413
    assert body["error"]["fields"][0]["field"] == "body"


def test_a_form_encoded_body_is_refused_with_the_content_type_to_use(api):
    status, body = api.json("POST", "/events", raw=b"events=1",
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert status == 415
    assert body["error"]["fields"][0]["field"] == "content-type"


def test_an_unknown_route_is_a_json_404(api):
    response = api.call("GET", "/nowhere")
    assert response.status == 404
    assert json.loads(response.body)



def users_with_events(transaction: list[dict]) -> set[str]:
    return {action["Put"]["Item"]["user_id"]["S"] for action in transaction
            if "Put" in action and "event_id" in action["Put"]["Item"]}


def test_users_share_transactions_and_a_duplicate_of_one_costs_the_others_nothing(api, monkeypatch):
    from shared.storage import dynamo

    client = dynamo.client()
    real_transact, sent = client.transact_write_items, []
    monkeypatch.setattr(client, "transact_write_items",
                        lambda **kwargs: sent.append(kwargs["TransactItems"]) or real_transact(**kwargs))
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-1", price=4)]})
    sent.clear()
    batch = [purchase("p-1", user_id="u-1", price=4), *(purchase(f"p-{n}", user_id=f"u-{n}", price=n)
                                                        for n in range(2, 7))]

    status, body = api.json("POST", "/events", {"events": batch})

    assert (status, body["accepted"], body["duplicates"]) == (200, 5, 1)
    # One transaction for the six users, cancelled by u-1's duplicate; then one for the other five.
    assert [len(users_with_events(transaction)) for transaction in sent] == [6, 5]
    for n in range(1, 7):
        summary = api.json("GET", f"/users/u-{n}")[1]["summary"]
        assert (summary["purchase_count"], float(summary["spend"]["EUR"])) == (1, 4 if n == 1 else n)


@pytest.mark.parametrize("content_type", ["Application/JSON", "APPLICATION/JSON; charset=utf-8", "text/json",
                                          "application/vnd.api+json",
                                          # no media type before its parameters: read as JSON, as no header is
                                          ";application/json", "; charset=utf-8", " "])
def test_a_json_body_is_read_whatever_the_case_or_kind_of_its_json_media_type(api, content_type):
    status, body = api.json("POST", "/events", raw=json.dumps({"events": [event()]}).encode(),
                            headers={"content-type": content_type})
    assert (status, body["accepted"]) == (200, 1)


@pytest.mark.parametrize("price", ["5_000", " 5 ", "\uff15", "5.", "-1", "NaN", "1e400"])
def test_a_price_sent_as_a_text_that_is_no_plain_decimal_is_refused_naming_price(api, price):
    status, body = api.json("POST", "/events", {"events": [purchase("p-1", price=price), event("ok")]})

    assert (status, body["accepted"]) == (207, 1), body
    assert body["rejected"][0]["errors"][0]["field"] == "price", body
    status, body = api.json("PUT", "/items/sku-1", {"title": "t", "category": "c", "price": price, "currency": "EUR"})
    assert status == 422 and body["error"]["fields"][0]["field"] == "price", body


def test_an_item_read_can_be_sent_back_with_its_price_as_the_answer_gives_it(api):
    assert api.json("PUT", "/items/sku-1", {"title": "t", "category": "c", "price": 21.4, "currency": "EUR"})[0] == 200
    read = api.json("GET", "/items/sku-1")[1]
    assert read["price"] == "21.4000"  # a decimal's text, exact (four decimals stored)

    sent_back = {k: v for k, v in read.items() if k in ("title", "category", "price", "currency", "in_stock")}
    assert api.json("PUT", "/items/sku-1", sent_back)[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-1", price=read["price"])]})[1]["accepted"] == 1
