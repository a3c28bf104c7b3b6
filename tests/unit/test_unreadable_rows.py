"""A customer's stored row that does not validate (written by hand, or by a version that checked
less) never breaks a read or a write of that customer, or anyone's nightly run; a consent that
does not read counts as every purpose withdrawn."""

from __future__ import annotations

import pytest

from shared.config import get_settings
from shared.storage import dynamo
from shared.storage.customers import load_customers
from shared.storage.history import recent_history
from tests.factories import ago, event, purchase

DAMAGE = {
    "a country that is a number": {"country": {"N": "12"}},
    "a consent that is a text": {"consent": {"S": "yes"}},
    "a purpose's consent that is not a yes or no": {"consent": {"M": {"email": {"M": {"granted": {"S": "maybe"}}}}}},
    "a summary field that is a text": {"lines": {"S": "many"}},
    "a purchase date that is no date": {"first_purchase_at": {"S": "yesterday"}},
    "a contact ledger that is a text": {"contacts": {"S": "x"}},
    "linked visitors that are a text": {"linked_visitors": {"S": "v_1"}},
    "a summary version that is a text": {"summary_version": {"S": "x"}},
    "a summary version that is not whole": {"summary_version": {"N": "1.5"}},
    "a summary version that is a list": {"summary_version": {"L": []}},
    "an erasure status that is a number": {"erasure_status": {"N": "1"}},
}


def damage(user_id: str, attributes: dict) -> None:
    names = {f"#a{n}": name for n, name in enumerate(attributes)}
    dynamo.client().update_item(
        TableName=get_settings().users_table, Key={"user_id": {"S": user_id}},
        UpdateExpression="SET " + ", ".join(f"#a{n} = :v{n}" for n in range(len(attributes))),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={f":v{n}": value for n, value in enumerate(attributes.values())})


@pytest.mark.parametrize("attributes", DAMAGE.values(), ids=DAMAGE)
def test_every_route_of_a_customer_whose_row_does_not_read_answers(api, attributes):
    assert api.json("PUT", "/users/u-1", {"country": "DE", "city": "Berlin"})[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1", order_id="o-1")]})[0] == 200
    damage("u-1", attributes)

    for path in ("/users/u-1", "/users/u-1/recommendations", "/users/u-1/segments", "/users/u-1/export"):
        assert api.json("GET", path)[0] == 200, path
    assert api.json("POST", "/events", {"events": [purchase("p-2", item_id="sku-2", order_id="o-2"),
                                                   event("m-1", event_type="message_sent", item_id=None,
                                                         channel="email", campaign_id="c-1")]})[1]["accepted"] == 2
    assert api.json("PUT", "/users/u-1", {"country": "FR"})[0] == 200
    assert api.json("PUT", "/users/u-1/consent", {"email": {"granted": True}, "source": "web-signup"})[0] == 200
    assert load_customers(*(getattr(get_settings(), t) for t in ("events_table", "users_table", "items_table")))
    assert api.json("DELETE", "/users/u-1")[0] in (200, 202)


def test_a_consent_that_does_not_read_withdraws_every_purpose_until_recorded_again(api):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1")]})[0] == 200
    damage("u-1", DAMAGE["a consent that is a text"])

    consent = api.json("GET", "/users/u-1")[1]["consent"]
    assert {purpose: state["granted"] for purpose, state in consent.items()} == dict.fromkeys(consent, False)
    assert {state["source"] for state in consent.values()} == {"unreadable"}
    body = api.json("GET", "/users/u-1/recommendations")[1]
    assert body["personalized"] is False and body["strategy"].startswith("no_consent")
    assert api.json("GET", "/users/u-1/segments")[1]["tags"] == []
    assert api.json("GET", "/users/u-1/export")[1]["profile"]["consent"] == "yes"  # what is stored, shown

    # The customer records their choice again: it is stored readable, and it counts.
    assert api.json("PUT", "/users/u-1/consent", {"personalization": True})[0] == 200
    assert api.json("GET", "/users/u-1")[1]["consent"]["personalization"]["granted"] is True
    assert api.json("GET", "/users/u-1/recommendations")[1]["strategy"].startswith("no_consent") is False


def test_a_summary_that_does_not_read_starts_again_from_the_next_events(api):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1", order_id="o-1")]})[0] == 200
    damage("u-1", {"lines": {"S": "many"}, "first_purchase_at": {"S": "yesterday"}})
    assert api.json("GET", "/users/u-1")[1]["summary"]["orders"] == 0  # left out, not an error

    assert api.json("POST", "/events", {"events": [purchase("p-2", item_id="sku-2", order_id="o-2")]})[0] == 200

    summary = api.json("GET", "/users/u-1")[1]["summary"]
    assert (summary["orders"], summary["lines"]) == (1, 1) and summary["first_purchase_at"]


@pytest.mark.parametrize("stamp", [{"N": "5"}, {"S": "soon"}, {"L": []}], ids=["a number", "a text", "a list"])
def test_an_erasure_stamp_that_does_not_read_refuses_events_until_erased_again(api, stamp):
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-1", order_id="o-1")]})[0] == 200
    assert api.json("DELETE", "/users/u-1")[0] in (200, 202)
    damage("u-1", {"erased_at": stamp})

    # When they were erased cannot be told: every event is taken as from before it, refused and named.
    status, body = api.json("POST", "/events", {"events": [event("e-1", item_id="sku-2")]})
    assert status == 422 and (body["accepted"], body["refused_after_erasure"]) == (0, 1)
    assert "erased again" in body["rejected"][0]["errors"][0]["message"]
    for path in ("/users/u-1", "/users/u-1/recommendations", "/users/u-1/segments", "/users/u-1/export"):
        assert api.json("GET", path)[0] == 200, path

    # Erasing them again records a time that reads: their events after it are taken.
    assert api.json("DELETE", "/users/u-1")[0] in (200, 202)
    assert api.json("POST", "/events", {"events": [event("e-2", item_id="sku-3", timestamp=ago(seconds=-2))]}
                    )[1]["accepted"] == 1


EVENT_DAMAGE = {
    "a time that is not one": {"ts": {"S": "2026-11-20Tgarbage"}},
    "no time": {"ts": None},
    "an item that is a number": {"item_id": {"N": "7"}},
    "a type that is a number": {"event_type": {"N": "1"}},
    "a price that is a text": {"price": {"S": "cheap"}},
    "a channel that is a number": {"channel": {"N": "3"}},
    "a channel that is zero": {"channel": {"N": "0"}},
}


@pytest.mark.parametrize("attributes", EVENT_DAMAGE.values(), ids=EVENT_DAMAGE)
def test_a_stored_event_that_does_not_read_costs_the_customer_none_of_the_others(api, attributes):
    """Events stored before the recent-activity item (or by hand) are read by Query: one that does
    not read is left out of the customer's history, and every route answers with the rest."""
    stored = {"user_id": {"S": "u-2"}, "event_id": {"S": "e-good"}, "item_id": {"S": "sku-1"},
              "event_type": {"S": "purchase"}, "ts": {"S": ago(days=3)}, "quantity": {"N": "1"},
              "price": {"N": "10"}, "currency": {"S": "EUR"}, "channel": {"S": "web"}}
    bad = {**stored, "event_id": {"S": "e-bad"}, **attributes}
    for item in (stored, {name: value for name, value in bad.items() if value is not None}):
        dynamo.client().put_item(TableName=get_settings().events_table, Item=item)

    for path in ("/users/u-2/recommendations", "/users/u-2/segments", "/users/u-2/export"):
        assert api.json("GET", path)[0] == 200, path
    # The readable purchase is still the customer's history, as every route reads it.
    assert [(e.item_id, e.event_type) for e in recent_history(get_settings().events_table, "u-2")] == [
        ("sku-1", "purchase")]
    assert load_customers(*(getattr(get_settings(), t) for t in ("events_table", "users_table", "items_table")))
