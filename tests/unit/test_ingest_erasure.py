"""Events stamped before an erasure are refused, whatever ingest read of the customer (moto).

The recent-activity item records the customer's last erasure, so a returning customer's events are
written with their item alone; an item that does not record it yet (a new one, or one written
before items recorded it) is written after checking it on the profile row."""

from __future__ import annotations

import pytest

from shared.config import get_settings
from shared.consent import Recorder
from shared.errors import Conflict
from shared.storage import dynamo
from shared.storage.privacy import COMPLETE, IN_PROGRESS, PrivacyStore
from shared.storage.users import RECENT_SUFFIX, UserStore, consent_key
from shared.users import UserProfileIn
from tests.factories import ago, event
from tests.unit.test_serving_reads import recent_item, tables


@pytest.fixture
def sent(monkeypatch) -> list[list[dict]]:
    """The transactions ingest sends, as sent."""
    client = dynamo.client()
    real, transactions = client.transact_write_items, []
    monkeypatch.setattr(client, "transact_write_items",
                        lambda **kwargs: transactions.append(kwargs["TransactItems"]) or real(**kwargs))
    return transactions


def kinds(transaction: list[dict]) -> list[str]:
    return [next(iter(action)) for action in transaction]


def erase(api, user_id: str) -> str:
    status, body = api.json("DELETE", f"/users/{user_id}")
    assert status == 200, body
    return body["erased_at"]


def erase_meanwhile(user_id: str) -> str:
    """An erasure while ingest is answering: on AWS the privacy function's own instance; here its
    store, as its handler calls it (the local gateway answers one request at a time, so a request
    sent from inside ingest's would wait for it)."""
    settings = get_settings()
    erasure = PrivacyStore(settings.events_table, settings.users_table, settings.segments_table).erase(
        user_id, lambda: 60.0)
    assert erasure.status == COMPLETE
    return erasure.erased_at


def test_a_returning_customers_views_are_written_with_their_recent_item_alone(api, sent):
    assert api.json("POST", "/events", {"events": [event("v-1", timestamp=ago(minutes=9))]})[1]["accepted"] == 1
    assert kinds(sent[0]) == ["Put", "Put", "ConditionCheck"]  # a new item: the erasure is checked once
    sent.clear()

    body = api.json("POST", "/events", {"events": [event("v-2", timestamp=ago(minutes=8)),
                                                   event("v-3", timestamp=ago(minutes=7))]})[1]

    assert body["accepted"] == 2
    assert kinds(sent[0]) == ["Put", "Put", "Put"]  # two events and the recent item: 2 write units fewer
    assert recent_item("u-1")["erased_at"] == {"S": ""}


def test_an_event_stamped_before_an_erasure_is_refused_after_the_customer_came_back(api, sent):
    api.json("POST", "/events", {"events": [event("v-0", timestamp=ago(hours=2))]})
    erased_at = erase(api, "u-1")
    assert api.json("POST", "/events", {"events": [event("v-1", timestamp=ago(seconds=-2))]})[1]["accepted"] == 1
    assert recent_item("u-1")["erased_at"] == {"S": erased_at}
    sent.clear()

    status, body = api.json("POST", "/events", {"events": [event("v-late", timestamp=ago(minutes=5)),
                                                           event("v-2", timestamp=ago(seconds=-3))]})

    assert (status, body["accepted"], body["refused_after_erasure"]) == (207, 1, 1)
    assert body["rejected"][0]["event_id"] == "v-late" and erased_at in body["rejected"][0]["errors"][0]["message"]
    assert all("ConditionCheck" not in kinds(transaction) for transaction in sent)


def test_an_item_written_before_items_recorded_erasures_learns_the_last_one(api):
    erased_at = erase(api, "u-1")
    # What ingest wrote before: an item started after the erasure, without it.
    dynamo.client().put_item(TableName=tables()[1], Item=dynamo.serialize(
        {"user_id": "u-1" + RECENT_SUFFIX, "recent_of": "u-1", "recent_version": 1, "count": 0}))

    status, body = api.json("POST", "/events", {"events": [event("v-late", timestamp=ago(minutes=5)),
                                                           event("v-1", timestamp=ago(seconds=-2))]})

    assert (status, body["accepted"], body["refused_after_erasure"]) == (207, 1, 1)
    assert recent_item("u-1")["erased_at"] == {"S": erased_at}


# Where ingest's last read of the customer is: the Query a new item starts from (after the
# erasure was read), or a returning customer's recent item.
@pytest.mark.parametrize("returning, last_read", [(False, "stored_recent_events"), (True, "read_recent")],
                         ids=["new item", "returning customer"])
def test_an_erasure_between_ingests_reads_and_its_write_refuses_the_events_from_before_it(api, monkeypatch,
                                                                                           returning, last_read):
    from shared.storage import events as event_storage

    if returning:
        api.json("POST", "/events", {"events": [event("v-0", timestamp=ago(hours=2))]})
    real_read, erased = getattr(event_storage, last_read), []

    def read_then_erase(*args):
        found = real_read(*args)
        if not erased:
            erased.append(erase_meanwhile("u-1"))  # after ingest read the customer, before it writes
        return found

    monkeypatch.setattr(event_storage, last_read, read_then_erase)

    status, body = api.json("POST", "/events", {"events": [event("v-late", timestamp=ago(minutes=5))]})

    assert (status, body["accepted"], body["refused_after_erasure"]) == (422, 0, 1)  # its only event
    assert erased[0] in body["rejected"][0]["errors"][0]["message"]
    assert api.json("GET", "/users/u-1/export")[1]["events"] == []


# --- PUT /users/{id} and an erasure -------------------------------------------------------------

PROFILE = {"country": "DE", "region": "BY", "city": "Munich", "attributes": {"age_band": "30-39"}}
EMAIL = {"email": {"granted": True}, "source": "newsletter-form", "text_version": "2026-01"}


def stores() -> tuple[PrivacyStore, UserStore]:
    settings = get_settings()
    return (PrivacyStore(settings.events_table, settings.users_table, settings.segments_table),
            UserStore(settings.users_table))


def assert_erased(api, users: UserStore) -> None:
    row = users.row("u-1")
    assert row["erasure_status"] == COMPLETE
    assert not {"country", "region", "city", "attributes"} & row.keys(), row
    assert not (row.get("consent") or {}).get("email", {}).get("granted")
    assert dynamo.get_item(get_settings().users_table, consent_key("u-1"), "read", consistent=True) is None
    exported = api.json("GET", "/users/u-1/export")[1]["profile"]
    assert not {"country", "region", "city", "attributes"} & exported.keys(), exported


def test_a_profile_sent_while_the_erasure_deletes_is_refused_and_the_erasure_stands(api, monkeypatch):
    """It was stored between the suppression record and the erasure's "complete": data kept after it."""
    assert api.json("PUT", "/users/u-1", PROFILE)[0] == 200
    _, users = stores()
    real_delete, refused = PrivacyStore._delete_events, []

    def profile_meanwhile(self, erasure, seconds_left):
        try:  # the ingest function answering PUT /users/u-1 at that moment
            users.put_profile("u-1", UserProfileIn(**PROFILE), Recorder("trusted"))
        except Conflict as error:
            refused.append(error.message)
        return real_delete(self, erasure, seconds_left)

    monkeypatch.setattr(PrivacyStore, "_delete_events", profile_meanwhile)
    status, body = api.json("DELETE", "/users/u-1")

    assert (status, body["status"]) == (200, COMPLETE)
    assert refused and "being erased" in refused[0]
    assert_erased(api, users)


def test_a_profile_sent_while_an_erasure_is_in_progress_is_a_409_until_it_is_complete(api):
    assert api.json("PUT", "/users/u-1", PROFILE)[0] == 200
    privacy, users = stores()
    assert privacy.erase("u-1", lambda: 0.0).status == IN_PROGRESS  # answered 202: the sweep finishes it

    status, error = api.json("PUT", "/users/u-1", PROFILE)
    assert status == 409 and error["error"]["fields"][0]["field"] == "user_id"
    assert privacy.finish("u-1", lambda: 60.0).status == COMPLETE
    assert_erased(api, users)
    assert api.json("PUT", "/users/u-1", PROFILE)[0] == 200  # afterwards: a new profile


def test_a_profile_with_consent_split_by_an_erasure_records_nothing_after_it(api, monkeypatch):
    """The profile was written before the erasure and its consent after: grants on the erased record."""
    assert api.json("PUT", "/users/u-1", PROFILE)[0] == 200
    privacy, users = stores()
    real_set_consent, erasures = UserStore.set_consent, []

    def erased_first(self, user_id, update, recorder, **kwargs):
        if not erasures:
            erasures.append(privacy.erase(user_id, lambda: 60.0))  # DELETE /users/u-1 answered meanwhile
        return real_set_consent(self, user_id, update, recorder, **kwargs)

    monkeypatch.setattr(UserStore, "set_consent", erased_first)
    status, error = api.json("PUT", "/users/u-1", {**PROFILE, "consent": EMAIL})

    assert erasures[0].status == COMPLETE
    assert status == 409 and "erased while this request ran" in error["error"]["message"]
    assert_erased(api, users)


@pytest.mark.parametrize("stored", [{"erased_at": {"SS": ["2026-01-01T00:00:00.000000Z"]}}, {"erased_at": {"NULL": True}},
                                    {"erasure_status": {"M": {"x": {"NULL": True}}}}, {"erased_at": {"N": "3"}}])
def test_a_profile_over_an_erasure_record_written_by_hand_is_stored(api, stored):
    """Values read back that do not match themselves in a condition refused every PUT with a 409."""
    dynamo.client().put_item(TableName=get_settings().users_table, Item={"user_id": {"S": "u-1"}, **stored})

    status, body = api.json("PUT", "/users/u-1", {**PROFILE, "consent": EMAIL})

    assert status == 200, body
    assert body["country"] == "DE" and body["consent"]["email"]["granted"] is True


def test_consent_granted_while_an_erasure_is_in_progress_is_a_409_and_a_withdrawal_is_kept(api):
    assert api.json("PUT", "/users/u-1", PROFILE)[0] == 200
    privacy, users = stores()
    assert privacy.erase("u-1", lambda: 0.0).status == IN_PROGRESS

    status, error = api.json("PUT", "/users/u-1/consent", EMAIL)
    assert status == 409 and "being erased" in error["error"]["message"]
    withdrawn = {"email": {"granted": False}, "source": "unsubscribe-link", "text_version": "2026-01"}
    assert api.json("PUT", "/users/u-1/consent", withdrawn)[0] == 200
    assert privacy.finish("u-1", lambda: 60.0).status == COMPLETE

    consent = users.row("u-1")["consent"]
    assert consent["email"]["granted"] is False  # the objection, kept as proof
