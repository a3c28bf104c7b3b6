"""The contact budget (issue 16): sends recorded as message_sent events, responses counted once per
campaign on the channel the message went out on, a measured response rate per channel, a
frequency cap per channel, fatigue, and the engagement tags read from all of it (moto)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from devstack.api_client import bearer
from shared.config import Settings
from shared.consent import Consent
from shared.contact import (
    FATIGUE_SENDS, ChannelLedger, ContactCaps, ContactLedger, contact_block, fatigued, fold_contacts,
)
from shared.events import Event, EventType
from shared.segments.features import customer_features
from shared.segments.tags import segment, segment_customer
from shared.storage import dynamo
from shared.storage import events as event_storage
from shared.storage.customers import load_customers
from shared.storage.events import EventStore
from shared.storage.users import UserStore, read_summaries, user_from_row
from shared.users import User
from tests.conftest import Api
from tests.factories import ago, event, iso

NOW = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
CAPS = ContactCaps.parse("email:2/7,sms:1/7,push:3/7")


def sent(event_id: str, campaign: str | None = "cmp-1", channel: str = "email", user_id: str = "u-1",
         **fields) -> dict:
    """A message_sent event as the shop's backend records it."""
    raw = {"event_id": event_id, "user_id": user_id, "event_type": "message_sent", "channel": channel,
           "timestamp": ago(hours=2), **fields}
    if campaign is not None:
        raw["campaign_id"] = campaign
    return raw


def answered(event_id: str, campaign: str = "cmp-1", user_id: str = "u-1", **fields) -> dict:
    """A click on the web, from a campaign's message."""
    return event(event_id, user_id, event_type="click", campaign_id=campaign, **{"channel": "web", **fields})


def contacts(api, user_id: str = "u-1") -> dict:
    status, user = api.json("GET", f"/users/{user_id}")
    assert status == 200, user
    return user["contacts"]


def engagement(api, user_id: str = "u-1") -> dict[str, str]:
    status, body = api.json("GET", f"/users/{user_id}/segments")
    assert status == 200, body
    return {t["name"]: t["reason"] for t in body["tags"] if t["family"] == "engagement"}


def at(days_ago: float) -> str:
    return iso(NOW - timedelta(days=days_ago))


def events(*raw: dict) -> list[Event]:
    return [Event.model_validate(r, context={"now": datetime(2100, 1, 1, tzinfo=timezone.utc)}) for r in raw]


# --- what a message_sent event is ---

def test_message_sent_is_appended_after_the_older_types_and_names_no_item():
    assert list(EventType)[7] is EventType.MESSAGE_SENT and EventType.MESSAGE_SENT == "message_sent"
    assert list(EventType)[:7] == ["view", "add_to_cart", "remove_from_cart", "purchase", "return", "click", "search"]


@pytest.mark.parametrize(("raw", "field"), [
    (sent("m-1", campaign=None), "campaign_id"),
    (sent("m-1", channel="web"), "channel"),
    (sent("m-1", channel="ios"), "channel"),
    (sent("m-1", item_id="sku-1"), "item_id"),
])
def test_a_message_sent_without_its_campaign_or_on_no_contact_channel_is_422_naming_the_field(api, raw, field):
    status, body = api.json("POST", "/events", {"events": [raw]})

    assert status == 422, body
    assert [[e["field"] for e in r["errors"]] for r in body["rejected"]] == [[field]]


def test_a_refused_send_leaves_its_neighbours_stored(api):
    status, body = api.json("POST", "/events", {"events": [
        event("v-1"), sent("m-bad", channel="web"), sent("m-ok", channel="sms")]})

    assert (status, body["accepted"]) == (207, 2), body
    assert body["rejected"][0]["event_id"] == "m-bad"
    assert "email, sms or push" in body["rejected"][0]["errors"][0]["message"]
    assert contacts(api)["sms"]["sends"] == 1 and contacts(api)["email"]["sends"] == 0


# --- the ledger, through ingest ---

def test_sends_are_recorded_once_even_when_the_batch_is_sent_twice(api):
    batch = [sent("m-1", "cmp-1", timestamp=ago(days=3)), sent("m-2", "cmp-2", timestamp=ago(days=1)),
             sent("m-3", "cmp-2", channel="push", timestamp=ago(days=1))]
    assert api.json("POST", "/events", {"events": batch})[1]["accepted"] == 3
    again = api.json("POST", "/events", {"events": batch})[1]

    assert (again["accepted"], again["duplicates"]) == (0, 3)
    email = contacts(api)["email"]
    assert (email["sends"], email["recent_campaigns"], email["responses"]) == (2, ["cmp-2", "cmp-1"], 0)
    assert email["recent_sends"][0] == email["last_sent_at"] > email["recent_sends"][1]
    assert email["response_rate"] == 0 and contacts(api)["sms"]["response_rate"] is None
    assert contacts(api)["push"]["sends"] == 1


def test_a_response_counts_once_per_campaign_on_the_channel_the_message_went_out_on(api):
    api.json("POST", "/events", {"events": [sent("m-1", "cmp-1"), sent("m-2", "cmp-2", channel="push")]})
    # A click and a purchase from the same email, on the web; and a view from a campaign never sent.
    status, _ = api.json("POST", "/events", {"events": [
        answered("k-1"), event("p-1", event_type="purchase", campaign_id="cmp-1"),
        answered("k-2", "cmp-unsent")]})
    api.json("POST", "/events", {"events": [answered("k-3")]})  # a later batch: still the same campaign

    assert status == 200
    ledger = contacts(api)
    assert (ledger["email"]["responses"], ledger["email"]["responded"]) == (1, ["cmp-1"])
    assert ledger["email"]["response_rate"] == 1.0 and ledger["email"]["last_response_at"]
    assert ledger["push"]["responses"] == 0  # cmp-2 was not answered
    assert set(ledger) == {"email", "sms", "push"}  # never a "web" channel


def test_a_send_and_its_response_in_one_batch_count_whatever_their_order():
    later = fold_contacts(ContactLedger(), events(answered("k-1", timestamp=at(1)), sent("m-1", timestamp=at(2))))
    assert (later.email.sends, later.email.responses) == (1, 1)


def test_a_campaign_sent_on_two_channels_counts_a_response_on_each():
    ledger = fold_contacts(ContactLedger(), events(
        sent("m-1", "cmp-x", timestamp=at(3)), sent("m-2", "cmp-x", channel="push", timestamp=at(3)),
        answered("k-1", "cmp-x", timestamp=at(2))))
    assert (ledger.email.responses, ledger.push.responses, ledger.sms.responses) == (1, 1, 0)


def test_the_rate_is_responses_over_recorded_sends_never_above_one():
    ledger = fold_contacts(ContactLedger(), events(
        *(sent(f"m-{n}", f"cmp-{n}", timestamp=at(10 - n)) for n in range(4)),
        answered("k-1", "cmp-1", timestamp=at(1)), answered("k-2", "cmp-1", timestamp=at(1)),
        answered("k-3", "cmp-old", timestamp=at(1))))
    assert (ledger.email.sends, ledger.email.responses, ledger.email.response_rate) == (4, 1, 0.25)
    assert ChannelLedger().response_rate is None


def test_only_the_newest_sends_are_kept_but_every_send_counts():
    ledger = fold_contacts(ContactLedger(), events(*(sent(f"m-{n}", f"cmp-{n}", timestamp=at(60 - n))
                                                     for n in range(25))))
    assert ledger.email.sends == 25 and len(ledger.email.recent_sends) == 20
    assert ledger.email.recent_campaigns[0] == "cmp-24" and "cmp-4" not in ledger.email.recent_campaigns


def test_racing_batches_keep_both_sends(api, moto_tables, monkeypatch):
    """The ledger is written under the summary's version: a batch that read it before another
    batch wrote fails its condition, reads again and adds its send to the other's."""
    table = moto_tables["UsersTable"]
    stale = read_summaries(table, ["u-1"])  # before the first send: nothing
    assert api.json("POST", "/events", {"events": [sent("m-1", "cmp-1")]})[1]["accepted"] == 1
    reads = []

    def read_once_stale(users_table, user_ids):
        reads.append(user_ids)
        return stale if len(reads) == 1 else read_summaries(users_table, user_ids)

    monkeypatch.setattr(event_storage, "read_summaries", read_once_stale)
    outcome = EventStore(moto_tables["EventsTable"], table, 1).write(events(sent("m-2", "cmp-2", timestamp=ago(hours=1))))

    assert len(outcome.stored) == 1 and len(reads) == 2  # the version check failed once
    email = contacts(api)["email"]
    assert (email["sends"], email["recent_campaigns"]) == (2, ["cmp-2", "cmp-1"])


def test_the_ledger_is_in_the_export_and_an_erasure_keeps_none_of_it(api, moto_tables):
    api.json("POST", "/events", {"events": [sent("m-1"), answered("k-1")]})
    profile = api.json("GET", "/users/u-1/export")[1]["profile"]
    assert profile["contacts"]["email"]["sends"] == 1

    assert api.json("DELETE", "/users/u-1")[0] == 200
    row = dynamo.client().get_item(TableName=moto_tables["UsersTable"], Key={"user_id": {"S": "u-1"}})["Item"]
    assert "contacts" not in row and "erased_at" in row
    user = UserStore(moto_tables["UsersTable"]).get("u-1")
    assert user.contacts == ContactLedger()
    assert contact_block(user, "email", CAPS, datetime.now(timezone.utc)) == "erased"


# --- the cap and consent ---

def reachable(ledger: ContactLedger, **consent) -> User:
    return User(user_id="u-1", contacts=ledger, consent=Consent(**{
        purpose: {"granted": granted, "at": at(100), "source": "web-signup"} for purpose, granted in consent.items()}))


def test_two_emails_within_seven_days_block_a_third_and_the_eighth_day_frees_it():
    ledger = fold_contacts(ContactLedger(), events(sent("m-1", "cmp-1", timestamp=at(6)),
                                                   sent("m-2", "cmp-2", timestamp=at(1))))
    user = reachable(ledger, email=True, push=True)

    assert contact_block(user, "email", CAPS, NOW) == "cap reached: 2 emails in the last 7 days"
    assert contact_block(user, "push", CAPS, NOW) is None  # the cap is per channel
    assert contact_block(user, "email", CAPS, NOW + timedelta(days=1, hours=1)) is None  # the first is 7 days old
    assert contact_block(user, "email", ContactCaps.parse("push:1/1"), NOW) is None  # email not capped


def test_no_consent_or_withdrawn_consent_blocks_whatever_the_budget():
    assert contact_block(None, "email", CAPS, NOW) == "no email consent"  # known only by their events
    assert contact_block(reachable(ContactLedger()), "sms", CAPS, NOW) == "no sms consent"  # never opted in
    assert contact_block(reachable(ContactLedger(), push=False), "push", CAPS, NOW) == "no push consent"
    assert contact_block(reachable(ContactLedger(), sms=True), "sms", CAPS, NOW) is None


def test_consent_withdrawn_through_the_api_blocks(api, moto_tables):
    assert api.json("PUT", "/users/u-1/consent", {"email": {"granted": True}, "source": "web-signup"})[0] == 200
    store = UserStore(moto_tables["UsersTable"])
    assert contact_block(store.get("u-1"), "email", CAPS, datetime.now(timezone.utc)) is None

    assert api.as_customer("u-1").json("PUT", "/users/u-1/consent", {"email": {"granted": False}})[0] == 200
    assert contact_block(store.get("u-1"), "email", CAPS, datetime.now(timezone.utc)) == "no email consent"


@pytest.mark.parametrize(("text", "message"), [
    ("fax:1/7", "no contact channel"), ("email:21/7", "0 to 20"), ("email:2/0", "1 to 90"),
    ("email:2/91", "1 to 90"), ("email=2/7", "channel:count/days"), ("email:2/7,email:3/7", "capped twice"),
    ("email:-1/7", "channel:count/days"),
])
def test_bad_caps_are_refused_naming_the_part(text, message):
    with pytest.raises(ValueError, match=message):
        ContactCaps.parse(text)


def test_the_caps_setting_is_checked_at_cold_start():
    tables = {"EVENTS_TABLE": "ev-t", "ITEMS_TABLE": "it-t", "USERS_TABLE": "us-t", "SEGMENTS_TABLE": "se-t",
              "MODEL_BUCKET": "b"}
    assert str(Settings.model_validate(tables).contact_caps) == "email:2/7,sms:1/7,push:3/7"
    assert str(Settings.model_validate({**tables, "CONTACT_CAPS": " sms:0/30 "}).contact_caps) == "sms:0/30"
    with pytest.raises(ValidationError, match="CONTACT_CAPS"):
        Settings.model_validate({**tables, "CONTACT_CAPS": "email:2"})


# --- fatigue and the engagement tags ---

def test_fatigue_needs_five_sends_in_thirty_days_and_no_response_since_the_first():
    four = fold_contacts(ContactLedger(), events(*(sent(f"m-{n}", f"c-{n}", timestamp=at(5 * n + 1))
                                                   for n in range(FATIGUE_SENDS - 1))))
    assert not fatigued(four.email, NOW)
    five = fold_contacts(four, events(sent("m-old", "c-old", timestamp=at(29))))
    assert fatigued(five.email, NOW)
    assert not fatigued(five.email, NOW + timedelta(days=2))  # the oldest left the window
    answered_before = fold_contacts(five, events(answered("k-1", "c-old", timestamp=at(28))))
    assert not fatigued(answered_before.email, NOW)


def test_the_fatigue_tag_appears_after_five_unanswered_sends_and_goes_after_a_response(api):
    api.json("POST", "/events", {"events": [sent(f"m-{n}", f"cmp-{n}", timestamp=ago(days=4 * n + 1))
                                            for n in range(4)]})
    assert "Fatigued on email" not in engagement(api)
    api.json("POST", "/events", {"events": [sent("m-5", "cmp-5", timestamp=ago(days=20))]})
    tags = engagement(api)
    assert tags["Fatigued on email"] == "5 emails in 30 days, no response"
    status, body = api.json("GET", "/users/u-1/segments")
    assert "engagement:fatigued-on-email" in {t["segment_id"] for t in body["tags"]}

    api.json("POST", "/events", {"events": [answered("k-1", "cmp-2", timestamp=ago(hours=1))]})
    assert "Fatigued on email" not in engagement(api)


def test_prefers_and_responds_to_come_from_measured_rates(api, moto_tables):
    api.json("POST", "/events", {"events": [
        *(sent(f"e-{n}", f"mail-{n}", timestamp=ago(days=10 * n + 1)) for n in range(4)),
        *(sent(f"p-{n}", f"push-{n}", channel="push", timestamp=ago(days=10 * n + 1)) for n in range(5)),
        *(sent(f"s-{n}", f"sms-{n}", channel="sms", timestamp=ago(days=10 * n + 1)) for n in range(2))]})
    api.json("POST", "/events", {"events": [
        answered("k-1", "mail-0"), answered("k-2", "mail-2"), answered("k-3", "push-1"),
        answered("k-4", "sms-0")]})  # sms: 1 of 2 is no rate yet

    tags = engagement(api)
    assert tags == {"Responds to email": "2 of 4 emails answered (50%)",
                    "Responds to push": "1 of 5 push notifications answered (20%)",
                    "Prefers email": "2 of 4 emails answered (50%), the best of email, push"}
    # The nightly run reads the same stored ledger, so it tags the same.
    nightly = load_customers(moto_tables["EventsTable"], moto_tables["UsersTable"], moto_tables["ItemsTable"])
    _, _, again = segment_customer(nightly.users["u-1"], nightly.histories.get("u-1", []), nightly.categories, {},
                                   datetime.now(timezone.utc))
    assert {t.name: t.reason for t in again if t.family == "engagement"} == tags


def test_presence_of_a_campaign_event_is_no_longer_a_response():
    features = customer_features(User(user_id="u-1"), [], {}, NOW)
    assert [t for t in segment(features, {}, personalized=True) if t.family == "engagement"] == []


def test_ties_for_the_preferred_channel_go_by_name():
    ledger = fold_contacts(ContactLedger(), events(
        *(sent(f"m-{n}", f"c-{n}", channel=channel, timestamp=at(n + 1))
          for channel in ("push", "email") for n in range(3)),
        answered("k-1", "c-0", timestamp=at(0))))  # c-0 went out on both: one response each
    tags = segment(customer_features(User(user_id="u-1", contacts=ledger), [], {}, NOW), {}, personalized=True)
    assert [t.name for t in tags if t.family == "engagement"] == ["Responds to email", "Responds to push",
                                                                  "Prefers email"]


def test_engagement_tags_follow_profiling_consent(api):
    api.json("POST", "/events", {"events": [*(sent(f"m-{n}", f"cmp-{n}", timestamp=ago(days=n + 1)) for n in range(5)),
                                            answered("k-1", "cmp-0")]})
    assert "Prefers email" in engagement(api)
    assert api.json("PUT", "/users/u-1/consent", {"profiling": {"granted": False}})[0] == 200
    assert engagement(api) == {}


# --- who may record a send ---

def test_a_client_token_cannot_record_a_send(api):
    customer = api.as_customer("u-1")
    status, body = customer.json("POST", "/users/u-1/events", {"events": [sent("m-1")]})
    assert status == 422 and body["rejected"][0]["errors"][0]["field"] == "event_type"
    assert "backend" in body["rejected"][0]["errors"][0]["message"]

    visitor = api.anonymous().json("POST", "/visitors")[1]
    status, body = Api(api.gateway, bearer(visitor["token"])).json("POST", f"/visitors/{visitor['visitor_id']}/events",
                                  {"events": [{k: v for k, v in sent("m-2").items() if k != "user_id"}]})
    assert status == 422 and body["rejected"][0]["errors"][0]["field"] == "event_type"
    assert contacts(api)["email"]["sends"] == 0


def test_sends_kept_without_their_campaigns_still_count_after_the_next_send():
    from shared.consent import Consent
    from shared.contact import ChannelLedger, ContactCaps, ContactLedger, contact_block, fold_contacts
    from shared.events import Event, format_timestamp
    from shared.users import User

    now = datetime.now(timezone.utc)
    # As a second writer left it: the sends' times without their campaigns.
    stored = ContactLedger(email=ChannelLedger(sends=2, recent_sends=[format_timestamp(now - timedelta(days=d))
                                                                      for d in (1, 2)]))
    send = Event.model_validate({"event_id": "s-3", "user_id": "u-1", "event_type": "message_sent", "channel": "email",
                                 "campaign_id": "weekly-3", "timestamp": format_timestamp(now - timedelta(hours=1))})

    after = fold_contacts(stored, [send])

    assert (after.email.sends, len(after.email.recent_sends), after.email.recent_campaigns) == (3, 3, ["weekly-3", "", ""])
    user = User(user_id="u-1", consent=Consent.model_validate({"email": {"granted": True}}), contacts=after)
    assert contact_block(user, "email", ContactCaps.parse("email:2/7"), now) == "cap reached: 3 emails in the last 7 days"


def test_a_channel_that_does_not_read_stays_at_its_cap_through_other_writes_until_a_send_on_it(api):
    from shared.config import get_settings

    assert api.json("POST", "/events", {"events": [event("m-1", event_type="message_sent", item_id=None,
                                                         channel="email", campaign_id="c-1")]})[0] == 200
    dynamo.client().update_item(TableName=get_settings().users_table, Key={"user_id": {"S": "u-1"}},
                                UpdateExpression="SET contacts.sms = :v",
                                ExpressionAttributeValues={":v": {"M": {"sends": {"S": "one"}}}})
    caps = ContactCaps.parse("sms:3/7")

    def blocked() -> str | None:
        row = UserStore(get_settings().users_table).row("u-1")
        user = user_from_row(row).model_copy(update={"consent": Consent.model_validate({"sms": {"granted": True}})})
        return contact_block(user, "sms", caps)

    assert api.json("POST", "/events", {"events": [event("p-1", event_type="purchase", price=5, currency="EUR"),
                                                   event("m-2", event_type="message_sent", item_id=None,
                                                         channel="email", campaign_id="c-2")]})[0] == 200
    assert blocked() == "cap reached: the sms contact record does not read (until a send is recorded)"
    assert api.json("GET", "/users/u-1")[1]["contacts"]["email"]["sends"] == 2

    assert api.json("POST", "/events", {"events": [event("m-3", event_type="message_sent", item_id=None,
                                                         channel="sms", campaign_id="c-3")]})[0] == 200
    assert blocked() is None  # one sms recorded since, under a cap of three
