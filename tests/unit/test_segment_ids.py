"""Segment ids: a shop that names its categories, cities or custom segments in any script gets one
segment per name, and the ids of names in ASCII are the ones they always were."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from shared.config import get_settings
from shared.limits import MAX_ID_BYTES
from shared.segments.families import segment_id_for
from shared.segments.service import materialize_segments
from shared.storage import dynamo
from shared.storage.segments import CUSTOM_PARTITION, SegmentStore
from shared.triggers import TRACKED_SEGMENTS
from tests.factories import ago, item, purchase


@pytest.mark.parametrize(("family", "name", "segment_id"), [
    ("rfm", "Can't Lose Them", "rfm:can-t-lose-them"),
    ("rfm", "At Risk", "rfm:at-risk"),
    ("lifecycle", "Declining", "lifecycle:declining"),
    ("value", "CLV: top 10%", "value:clv-top-10"),
    ("engagement", "Fatigued on sms", "engagement:fatigued-on-sms"),
    ("custom", "Kitchen fans in Germany", "custom:kitchen-fans-in-germany"),
    ("behaviour", "Likes home_and_garden", "behaviour:likes-home-and-garden"),
])
def test_names_in_ascii_keep_the_ids_campaigns_and_triggers_already_use(family, name, segment_id):
    assert segment_id_for(family, name) == segment_id


def test_the_segments_triggers_follow_are_still_named_by_their_tags():
    assert {segment_id_for("rfm", "At Risk"), segment_id_for("rfm", "Can't Lose Them"),
            segment_id_for("lifecycle", "Declining")} == set(TRACKED_SEGMENTS)


@pytest.mark.parametrize(("name", "segment_id"), [
    ("Likes 家具", "behaviour:likes-家具"),
    ("Likes 食品", "behaviour:likes-食品"),
    ("Likes Möbel", "behaviour:likes-möbel"),
    ("Likes हिन्दी किताबें", "behaviour:likes-हिन्दी-किताबें"),  # vowel signs are marks, kept with their letters
    ("LIKES ＦＯＯＤ", "behaviour:likes-food"),  # full-width letters are the letters
    ("Likes Straße", "behaviour:likes-strasse"),
])
def test_letters_of_every_script_are_kept(name, segment_id):
    assert segment_id_for("behaviour", name) == segment_id


def test_a_name_without_a_letter_or_digit_gets_an_id_of_its_own():
    ids = {segment_id_for("custom", name) for name in ("🎉", "🎁", "!!!", "***", "❤️", "\u0301")}
    assert len(ids) == 6 and all(i.startswith("custom:x") and i[len("custom:x"):].isalnum() for i in ids)
    assert segment_id_for("custom", "🎉") == segment_id_for("custom", "🎉 ")
    assert segment_id_for("custom", "!!!") == segment_id_for("custom", "！！！")  # full-width is the same name


def test_marks_count_with_their_letters_and_emoji_variation_selectors_are_dropped():
    assert segment_id_for("custom", "a\u0301 b") == "custom:á-b"  # composed, as NFKC writes it
    assert segment_id_for("custom", "❤️ fans") == "custom:fans"  # the emoji and its selector are not letters
    assert segment_id_for("custom", "fans \u0301") == "custom:fans"  # a mark on nothing is not kept


def materialize(tables: dict[str, str]) -> dict:
    return materialize_segments(get_settings(), SegmentStore(tables["SegmentsTable"]), {},
                                datetime.now(timezone.utc), run="r1")


def members(api, segment_id: str) -> list[str]:
    status, page = api.json("GET", f"/segments/{quote(segment_id, safe=':')}/members")
    assert status == 200, page
    return [m["user_id"] for m in page["members"]]


def test_customers_who_like_different_categories_named_in_japanese_are_in_different_segments(api, moto_tables):
    assert api.json("POST", "/items", {"items": [item("sofa", category="家具"), item("rice", category="食品")]})[0] == 200
    api.json("PUT", "/users/u-1", {"country": "JP"})
    api.json("PUT", "/users/u-2", {"country": "JP"})
    assert api.json("POST", "/events", {"events": [
        purchase("p-1", user_id="u-1", item_id="sofa", timestamp=ago(days=2)),
        purchase("p-2", user_id="u-2", item_id="rice", timestamp=ago(days=3))]})[0] == 200

    tags = {t["segment_id"] for t in api.json("GET", "/users/u-1/segments")[1]["tags"]}
    assert "behaviour:likes-家具" in tags and "behaviour:likes-食品" not in tags

    index = materialize(moto_tables)
    assert index["segments"]["behaviour:likes-家具"]["members"] == 1
    assert index["segments"]["behaviour:likes-食品"]["members"] == 1
    assert members(api, "behaviour:likes-家具") == ["u-1"]
    assert members(api, "behaviour:likes-食品") == ["u-2"]


def test_custom_segments_named_in_japanese_are_two_segments_not_a_conflict(api):
    tokyo = {"name": "東京 VIP", "rule": {"field": "city", "op": "==", "value": "東京"}}
    osaka = {"name": "大阪 VIP", "rule": {"field": "city", "op": "==", "value": "大阪"}}
    assert [api.json("POST", "/segments", body)[1]["segment_id"] for body in (tokyo, osaka)] == \
        ["custom:東京-vip", "custom:大阪-vip"]
    assert api.json("POST", "/segments", tokyo)[0] == 409
    assert api.call("DELETE", f"/segments/{quote('custom:大阪-vip', safe=':')}").status == 204
    assert [c["name"] for c in api.json("GET", "/segments")[1]["custom"]] == ["東京 VIP"]


def test_a_definition_stored_before_keeps_its_id_for_its_members_listing_and_deletion(api, moto_tables):
    # Stored by the version before: its id was made with every letter outside a-z dropped.
    dynamo.client().put_item(TableName=moto_tables["SegmentsTable"], Item={
        "segment_id": {"S": CUSTOM_PARTITION}, "sk": {"S": "custom:vip"}, "definition": {"S": json.dumps({
            "segment_id": "custom:vip", "name": "東京 VIP", "description": "", "created_at": ago(days=30),
            "rule": {"field": "city", "op": "==", "value": "東京"}})}})
    api.json("PUT", "/users/u-1", {"country": "JP", "city": "東京"})

    assert "custom:vip" in {t["segment_id"] for t in api.json("GET", "/users/u-1/segments")[1]["tags"]}
    index = materialize(moto_tables)
    assert index["segments"]["custom:vip"]["members"] == 1 and "custom:東京-vip" not in index["segments"]
    assert members(api, "custom:vip") == ["u-1"]
    assert [c["segment_id"] for c in api.json("GET", "/segments")[1]["custom"]] == ["custom:vip"]

    # Its name is taken, whichever id it has.
    status, body = api.json("POST", "/segments", {"name": "東京 VIP", "rule": {"field": "country", "op": "==",
                                                                                "value": "JP"}})
    assert status == 409 and body["error"]["fields"][0]["field"] == "name", body
    # And the id it has: a name that makes it is told whose id it is.
    status, body = api.json("POST", "/segments", {"name": "VIP", "rule": {"field": "country", "op": "==",
                                                                          "value": "JP"}})
    assert status == 409 and "which the segment '東京 VIP' has" in body["error"]["message"], body
    assert api.call("DELETE", "/segments/custom:vip").status == 204
    assert api.json("POST", "/segments", {"name": "VIP", "rule": {"field": "country", "op": "==",
                                                                  "value": "JP"}})[0] == 201
    assert api.call("DELETE", "/segments/custom:vip").status == 204
    assert api.json("GET", "/segments")[1]["custom"] == []


def test_an_id_is_never_longer_than_a_path_takes_and_long_names_stay_apart():
    long = "家具" * 128  # a category at its limit: 256 characters, 768 bytes
    ids = [segment_id_for("behaviour", f"Likes {long}{end}") for end in ("A", "B")]
    assert all(len(i.encode()) <= MAX_ID_BYTES for i in ids) and ids[0] != ids[1]
    assert ids[0].startswith("behaviour:likes-家具家具")
    ascii_long = "x" * 300
    assert len(segment_id_for("custom", ascii_long).encode()) <= MAX_ID_BYTES
    assert segment_id_for("behaviour", "Likes " + "x" * 200) == "behaviour:likes-" + "x" * 200  # fits: unchanged


def test_segments_of_long_category_names_are_listed_their_members_read_and_campaigns_reach_them(api, moto_tables):
    categories = {"pan": "台所用品と調理器具" * 28, "pot": "kitchen and cooking " * 12}  # 252 and 240 characters
    assert api.json("POST", "/items", {"items": [item(i, category=c) for i, c in categories.items()]})[0] == 200
    assert api.json("POST", "/events", {"events": [
        purchase("p-1", user_id="u-1", item_id="pan", timestamp=ago(days=2)),
        purchase("p-2", user_id="u-2", item_id="pot", timestamp=ago(days=2))]})[0] == 200

    liked = sorted(s for s in materialize(moto_tables)["segments"] if s.startswith("behaviour:likes-"))
    assert [members(api, segment_id) for segment_id in liked] == [["u-2"], ["u-1"]]
    for segment_id in liked:
        status, started = api.json("POST", "/campaigns", {"name": "Kitchen", "channel": "email",
                                                          "segment_id": segment_id, "dry_run": True})
        assert status == 202, started
        assert all(jobs.wait(120) for jobs in api.gateway.jobs.values())
        campaign = api.json("GET", f"/campaigns/{started['campaign_id']}")[1]
        assert campaign["counts"]["in_segment"] == 1, campaign
