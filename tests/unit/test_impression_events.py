"""Impression and click events that refer to a recommendation: valid, stored, and harmless to every later read."""

from __future__ import annotations

import pytest

from shared.storage import dynamo
from shared.storage.history import recent_history
from tests.factories import event

RID = "r1.WyJyZWNvbW1lbmRhdGlvbnMiXQ.c2lnbmF0dXJl"


def impression(event_id: str = "i-1", user_id: str = "u-1", **fields):
    sent = {**event(event_id, user_id, event_type="impression"), "recommendation_id": RID, "items": ["sku-1", "sku-2"]}
    del sent["item_id"]
    return {**sent, **fields}


def test_the_impression_type_comes_last_so_stored_codes_keep_their_meaning():
    from shared.events import EventType
    from shared.training.interactions import EVENT_CODES

    assert list(EventType)[-2:] == [EventType.MESSAGE_SENT, EventType.IMPRESSION]
    assert EVENT_CODES[EventType.MESSAGE_SENT] == 7 and EVENT_CODES[EventType.IMPRESSION] == 8


def test_an_impression_and_a_click_with_the_answers_id_are_stored(api, moto_tables):
    click = {**event("k-1", "u-1", "sku-2", "click"), "recommendation_id": RID}
    status, body = api.json("POST", "/events", {"events": [impression(), click]})
    assert status == 200, body
    stored = {row["event_id"]["S"]: dynamo.deserialize(row)
              for row in dynamo.client().scan(TableName=moto_tables["EventsTable"])["Items"]}
    assert stored["i-1"]["items"] == ["sku-1", "sku-2"] and stored["i-1"]["recommendation_id"] == RID
    assert stored["k-1"]["recommendation_id"] == RID
    # An impression is no interaction: the history keeps the click only.
    assert [e.item_id for e in recent_history(moto_tables["EventsTable"], "u-1")] == ["sku-2"]


@pytest.mark.parametrize(("sent", "field"), [
    ({k: v for k, v in impression().items() if k != "recommendation_id"}, "recommendation_id"),
    ({k: v for k, v in impression().items() if k != "items"}, "items"),
    (impression(items=[]), "items"),
    (impression(items=[f"sku-{n}" for n in range(51)]), "items"),
    (impression(item_id="sku-1"), "item_id"),
    (impression(recommendation_id="not-an-id"), "recommendation_id"),
    ({**event(), "recommendation_id": RID}, "recommendation_id"),  # a view carries none
    ({**event(), "items": ["sku-1"]}, "items"),
])
def test_a_malformed_impression_is_refused_naming_the_field(api, sent, field):
    status, body = api.json("POST", "/events", {"events": [sent, event("ok-1")]})
    assert status == 207, body  # the good neighbour is stored
    assert [[e["field"] for e in r["errors"]] for r in body["rejected"]] == [[field]]


def test_a_visitors_page_sends_its_own_impressions_and_clicks(api):
    from tests.unit.test_visitors import new_visitor

    visitor_id, visitor = new_visitor(api)
    shown = {k: v for k, v in impression("i-9", visitor_id).items() if k != "user_id"}
    clicked = {k: v for k, v in {**event("k-9", visitor_id, "sku-1", "click"), "recommendation_id": RID}.items()
               if k != "user_id"}
    status, body = visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": [shown, clicked]})
    assert status == 200 and body["accepted"] == 2, body
