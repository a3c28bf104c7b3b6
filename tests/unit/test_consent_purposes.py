"""Consent per purpose and channel: each recorded with when, where, which text and who; a history
kept; the single flag of before still understood; every part honouring the purpose it touches."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.gateway import LambdaContext, load_handler
from devstack.template import PROJECT_ROOT, Route, resources
from shared.consent import HISTORY_LIMIT
from shared.segments.families import DECLARED
from shared.storage import dynamo
from shared.storage.users import consent_key
from tests.conftest import TEMPLATE
from tests.training_data import A_MODEL_SERVES, shop, store_events

PURPOSES = {"personalization", "profiling", "email", "sms", "push"}


def granted(body: dict[str, Any]) -> dict[str, bool]:
    return {purpose: state["granted"] for purpose, state in body["consent"].items()}


def test_a_customer_never_recorded_has_the_defaults_and_no_history(api):
    status, body = api.json("GET", "/users/u-new/consent")

    assert status == 200
    assert granted(body) == {"personalization": True, "profiling": True, "email": False, "sms": False, "push": False}
    assert {state["source"] for state in body["consent"].values()} == {"default"}
    assert body["history"] == {"changes": [], "dropped": 0}


def test_only_the_purposes_sent_change_each_with_when_where_which_text_and_who(api):
    status, body = api.json("PUT", "/users/u-1/consent", {
        "email": {"granted": True, "text_version": "newsletter-3"}, "sms": {"granted": True, "source": "checkout"},
        "source": "web-signup", "text_version": "privacy-7"})

    assert status == 200 and set(body["consent"]) == PURPOSES
    assert granted(body) == {"personalization": True, "profiling": True, "email": True, "sms": True, "push": False}
    email, sms = body["consent"]["email"], body["consent"]["sms"]
    assert (email["source"], email["text_version"], email["by"]) == ("web-signup", "newsletter-3", "trusted")
    assert (sms["source"], sms["text_version"]) == ("checkout", "privacy-7")
    assert email["at"] and body["consent"]["personalization"]["source"] == "default"

    customer = api.as_customer("u-1")
    assert customer.json("PUT", "/users/u-1/consent", {"email": {"granted": False}, "source": "app-settings"})[0] == 200
    status, record = customer.json("GET", "/users/u-1/consent")

    assert status == 200
    assert granted(record)["email"] is False and granted(record)["sms"] is True  # sms untouched
    changes = record["history"]["changes"]
    assert [(c["purpose"], c["granted"], c["source"], c["by"]) for c in changes] == [
        ("email", True, "web-signup", "trusted"), ("sms", True, "checkout", "trusted"),
        ("email", False, "app-settings", "customer")]
    assert changes[0]["text_version"] == "newsletter-3" and changes[2]["text_version"] is None
    assert changes[0]["principal"] and changes[2]["principal"] is None  # which system; a customer is themselves
    assert changes[0]["at"] <= changes[2]["at"] == record["consent"]["email"]["at"]
    # A customer sees only their own.
    assert customer.json("GET", "/users/u-2/consent")[0] == 403


def test_the_body_of_before_withdraws_personalization_and_profiling(api):
    status, body = api.json("PUT", "/users/u-1/consent", {"personalization": False})

    assert status == 200
    assert granted(body) == {"personalization": False, "profiling": False, "email": False, "sms": False, "push": False}
    assert body["consent"]["profiling"]["source"] == "unspecified"
    history = api.json("GET", "/users/u-1/consent")[1]["history"]["changes"]
    assert [(c["purpose"], c["granted"]) for c in history] == [("personalization", False), ("profiling", False)]
    # With profiling sent too, each says its own.
    body = api.json("PUT", "/users/u-1/consent", {"personalization": True, "profiling": {"granted": False}})[1]
    assert (granted(body)["personalization"], granted(body)["profiling"]) == (True, False)
    # And in a profile, as before.
    user = api.json("PUT", "/users/u-2", {"country": "DE", "consent": {"personalization": False}})[1]
    assert user["consent"]["profiling"]["granted"] is False
    assert len(api.json("GET", "/users/u-2/consent")[1]["history"]["changes"]) == 2


@pytest.mark.parametrize("body", [{}, {"source": "web"}, {"personalization": "no"}, {"email": True},
                                  {"email": {"granted": True}, "source": "has spaces"}, {"fax": {"granted": True}}])
def test_a_body_that_says_nothing_clear_is_refused(api, body):
    assert api.json("PUT", "/users/u-1/consent", body)[0] == 422


def test_a_row_stored_with_the_single_flag_loads_as_both_purposes_without_a_rewrite(api, moto_tables):
    client = dynamo.client()
    client.put_item(TableName=moto_tables["UsersTable"], Item=dynamo.serialize({
        "user_id": "u-old", "country": "FR", "consent": {"personalization": False},
        "consent_updated_at": "2024-03-01T10:00:00.000000Z"}))
    client.put_item(TableName=moto_tables["UsersTable"], Item=dynamo.serialize({
        "user_id": "u-older", "consent": {"personalization": True}}))

    body = api.json("GET", "/users/u-old/consent")[1]
    assert granted(body) == {"personalization": False, "profiling": False, "email": False, "sms": False, "push": False}
    assert body["consent"]["profiling"] == {"granted": False, "at": "2024-03-01T10:00:00.000000Z",
                                            "source": "migrated", "text_version": None, "by": None}
    assert api.json("GET", "/users/u-older/consent")[1]["consent"]["personalization"]["at"] is None
    assert api.json("GET", "/users/u-old/recommendations")[1]["strategy"].startswith("no_consent")
    assert api.json("GET", "/users/u-old")[1]["consent"]["personalization"]["source"] == "migrated"

    # The next change stores the new shape, the migrated purposes with it.
    api.json("PUT", "/users/u-old/consent", {"email": {"granted": True}, "source": "backend"})
    stored = dynamo.deserialize(client.get_item(TableName=moto_tables["UsersTable"],
                                                Key=dynamo.serialize({"user_id": "u-old"}))["Item"])["consent"]
    assert stored["personalization"]["source"] == stored["profiling"]["source"] == "migrated"
    assert stored["email"]["granted"] is True and "sms" not in stored


def test_the_history_keeps_the_newest_changes_and_counts_the_rest(api, monkeypatch):
    monkeypatch.setattr("shared.storage.users.HISTORY_LIMIT", 3)
    for n in range(5):
        api.json("PUT", "/users/u-1/consent", {"push": {"granted": n % 2 == 0}, "source": f"step-{n}"})

    history = api.json("GET", "/users/u-1/consent")[1]["history"]
    assert [c["source"] for c in history["changes"]] == ["step-2", "step-3", "step-4"]
    assert history["dropped"] == 2 and HISTORY_LIMIT == 200


def test_export_shows_the_consent_and_its_history(api):
    api.json("PUT", "/users/u-1/consent", {"email": {"granted": True}, "source": "web-signup"})

    export = api.json("GET", "/users/u-1/export")[1]

    assert export["consent"]["email"]["granted"] is True
    assert [c["purpose"] for c in export["consent_history"]["changes"]] == ["email"]


def test_erasure_keeps_the_objections_with_their_proof_and_drops_grants_and_history(api, moto_tables):
    api.json("PUT", "/users/u-1", {"country": "DE"})
    api.json("PUT", "/users/u-1/consent", {"profiling": {"granted": False, "text_version": "privacy-7"},
                                           "email": {"granted": True}, "sms": {"granted": False},
                                           "source": "app-settings"})

    status, erased = api.json("DELETE", "/users/u-1")

    assert status == 200 and "profiling, sms" in erased["kept"]
    body = api.json("GET", "/users/u-1/consent")[1]
    assert granted(body) == {"personalization": True, "profiling": False, "email": False, "sms": False, "push": False}
    assert (body["consent"]["profiling"]["source"], body["consent"]["profiling"]["text_version"]) == \
        ("app-settings", "privacy-7")
    assert body["consent"]["email"]["source"] == "default"  # the grant went
    assert body["history"]["changes"] == []
    history_item = dynamo.client().get_item(TableName=moto_tables["UsersTable"],
                                            Key=dynamo.serialize({"user_id": "u-1\x00consent"}))
    assert "Item" not in history_item


# --- every part honours the purpose it touches ---

def train_handler() -> Any:
    train = resources(TEMPLATE, "AWS::Serverless::Function")["TrainFunction"]
    return load_handler(Route("", "", "TrainFunction", PROJECT_ROOT / train["CodeUri"], train["Handler"], None))


@pytest.fixture
def trained(api, moto_tables) -> str:
    """A shop with a model; a customer with history (returned) whose tags include behavioural ones."""
    demo = shop(60, 40, seed=6)
    assert api.json("POST", "/items", {"items": demo.items})[0] == 200
    store_events(moto_tables["EventsTable"], demo.events)
    manifest = train_handler()({"config": A_MODEL_SERVES},
                               LambdaContext(function_name="TrainFunction"))
    assert manifest["status"] == "accepted", manifest["reason"]
    customer = demo.events[-1]["user_id"]
    api.json("PUT", f"/users/{customer}", {"country": "DE", "attributes": {"interests": ["cooking"]}})
    return customer


def families(api, user_id: str) -> set[str]:
    return {tag["family"] for tag in api.json("GET", f"/users/{user_id}/segments")[1]["tags"]}


def test_profiling_withdrawn_ends_behavioural_tags_but_recommendations_stay_personal(api, trained):
    assert families(api, trained) - set(DECLARED)  # behavioural tags before

    assert api.json("PUT", f"/users/{trained}/consent", {"profiling": {"granted": False}})[0] == 200

    segments = api.json("GET", f"/users/{trained}/segments")[1]
    assert segments["personalized"] is False and families(api, trained) == {"geography", "psychographic"}
    answer = api.json("GET", f"/users/{trained}/recommendations")[1]
    assert answer["personalized"] is True and not answer["strategy"].startswith("no_consent")


def test_personalization_withdrawn_gives_popular_items_but_segments_stay(api, trained):
    assert api.json("PUT", f"/users/{trained}/consent", {"personalization": {"granted": False}})[0] == 200

    answer = api.json("GET", f"/users/{trained}/recommendations")[1]
    assert answer["personalized"] is False and answer["strategy"].startswith("no_consent")
    assert families(api, trained) - set(DECLARED)  # profiling still granted: behavioural tags stay


HISTORY_DAMAGE = {
    "a version that is a text": {"consent_version": {"S": "two"}},
    "a version that is not whole": {"consent_version": {"N": "1.5"}},
    "no version": {"consent_version": None},
    "changes that are a text": {"changes": {"S": "email granted"}},
    "a change that does not read": {"changes": {"L": [{"M": {"purpose": {"N": "5"}}}]}},
}


@pytest.mark.parametrize("damage", HISTORY_DAMAGE.values(), ids=HISTORY_DAMAGE)
def test_a_consent_history_that_does_not_read_never_stops_a_customer_objecting(api, damage):
    """The right to object: before, each of these answered 500, or 503 on every retry."""
    from shared.config import get_settings
    from shared.storage.users import CONSENT_SUFFIX

    assert api.json("PUT", "/users/u-1/consent", {"email": {"granted": True}, "source": "web-signup"})[0] == 200
    key = {"user_id": {"S": "u-1" + CONSENT_SUFFIX}}
    row = dynamo.client().get_item(TableName=get_settings().users_table, Key=key)["Item"]
    damaged = {**row, **{name: value for name, value in damage.items() if value is not None}}
    for name in (name for name, value in damage.items() if value is None):
        damaged.pop(name)
    dynamo.client().put_item(TableName=get_settings().users_table, Item=damaged)

    customer = api.as_customer("u-1")
    status, body = customer.json("PUT", "/users/u-1/consent", {"email": {"granted": False}, "source": "app-settings"})

    assert status == 200, body
    status, record = customer.json("GET", "/users/u-1/consent")
    assert status == 200 and record["consent"]["email"]["granted"] is False
    assert record["history"]["changes"][-1]["source"] == "app-settings"
    assert customer.json("PUT", "/users/u-1/consent", {"sms": {"granted": True}})[0] == 200  # and again after


@pytest.mark.parametrize("stored", [{"SS": ["email"]}, {"S": "granted"}, {"N": "1"}])
def test_a_consent_stored_as_something_else_can_be_recorded_again_and_the_customer_erased(api, stored):
    """The docs say a consent that does not read counts as withdrawn until recorded again: the
    condition on it compared a set with a list, and it could never be recorded, nor erased."""
    from shared.config import get_settings

    assert api.json("PUT", "/users/u-1", {"country": "DE"})[0] == 200
    dynamo.client().update_item(TableName=get_settings().users_table, Key={"user_id": {"S": "u-1"}},
                                UpdateExpression="SET consent = :odd", ExpressionAttributeValues={":odd": stored})
    customer = api.as_customer("u-1")

    status, body = customer.json("PUT", "/users/u-1/consent", {"email": {"granted": True}, "source": "app"})
    assert status == 200 and body["consent"]["email"]["granted"] is True, body
    dynamo.client().update_item(TableName=get_settings().users_table, Key={"user_id": {"S": "u-1"}},
                                UpdateExpression="SET consent = :odd", ExpressionAttributeValues={":odd": stored})
    status, body = customer.json("DELETE", "/users/u-1")
    assert status == 200 and body["status"] == "complete", body


def test_a_profile_with_consent_reads_the_customer_row_once(api, monkeypatch):
    """The consent's first pass takes the row the profile's own write returned: a PUT /users with
    consent costs the row's read and the history's, not the row's twice."""
    reads: list[str] = []
    get_item = dynamo.get_item
    monkeypatch.setattr(dynamo, "get_item", lambda table, key, *a, **k: reads.append(key["user_id"]) or get_item(
        table, key, *a, **k))

    status, body = api.json("PUT", "/users/u-9", {"country": "DE", "consent": {"email": {"granted": True}}})

    assert status == 200 and body["consent"]["email"]["granted"] is True
    assert reads == ["u-9", consent_key("u-9")["user_id"]], reads  # the row (its erasure), then the history
    assert api.json("GET", "/users/u-9/consent")[1]["consent"]["email"]["granted"] is True
