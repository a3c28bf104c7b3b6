"""Every id fits every key built from it, and one oversized entry fails alone, never its batch."""

from __future__ import annotations

import pytest

from shared.catalog import ItemUpsert
from shared.limits import MAX_ATTRIBUTES_BYTES, MAX_ID_BYTES, MAX_PROPERTIES_BYTES
from shared.storage.catalog import CatalogStore
from tests.factories import event, item, purchase

FOUR_BYTES = "𝄞"  # one character, four bytes in UTF-8


def big_attributes(total_bytes: int) -> dict[str, list[str]]:
    """Attributes of about `total_bytes` stored bytes, each part within the per-field limits."""
    values = ["é" * 250] * 50  # 500 bytes a value
    return {f"a{n}": values for n in range(total_bytes // 25_000 + 1)}


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
def test_an_id_is_limited_in_utf8_bytes_not_characters(api, field):
    fits, too_long = "a" * MAX_ID_BYTES, FOUR_BYTES * (MAX_ID_BYTES // 4 + 1)  # 65 characters, 260 bytes

    status, body = api.json("POST", "/events", {"events": [{**event("e-1"), field: fits},
                                                            {**event("e-2"), field: too_long}]})

    assert status == 207 and body["accepted"] == 1
    [rejected] = body["rejected"]
    assert rejected["index"] == 1
    assert rejected["errors"] == [{"field": field, "message": f"at most {MAX_ID_BYTES} bytes in UTF-8 (260 given)"}]


def test_a_path_id_over_the_byte_limit_is_refused_naming_the_limit(api):
    status, body = api.json("GET", "/users/" + "%F0%9D%84%9E" * 65)  # 65 four-byte characters
    assert status == 422
    assert body["error"]["fields"][0]["field"] == "user_id"
    assert "256 bytes" in body["error"]["fields"][0]["message"]


def test_one_oversized_event_is_refused_alone_and_its_neighbours_are_stored(api):
    huge = {f"k{n}": "€" * 1000 for n in range(10)}  # 30 KB stored, over the 16 KB cap
    batch = [purchase("p-1", user_id="u-1"), event("v-2", user_id="u-1", properties=huge),
             event("v-3", user_id="u-1")]

    status, body = api.json("POST", "/events", {"events": batch})

    assert status == 207 and body["accepted"] == 2
    [rejected] = body["rejected"]
    assert (rejected["index"], rejected["event_id"]) == (1, "v-2")
    assert rejected["errors"][0]["field"] == "properties"
    assert f"at most {MAX_PROPERTIES_BYTES}" in rejected["errors"][0]["message"]
    assert api.json("GET", "/users/u-1")[1]["summary"]["purchase_count"] == 1


def test_one_oversized_item_fails_alone_in_a_catalog_batch(api):
    batch = [item("a"), item("b", attributes=big_attributes(MAX_ATTRIBUTES_BYTES)), item("c")]

    status, body = api.json("POST", "/items", {"items": batch})

    assert status == 207 and body["accepted"] == 2
    assert [(r["index"], r["item_id"], r["errors"][0]["field"]) for r in body["rejected"]] == [(1, "b", "attributes")]
    assert api.json("GET", "/items/a")[0] == 200 and api.json("GET", "/items/c")[0] == 200
    assert api.json("GET", "/items/b")[0] == 404


def test_an_oversized_single_item_or_profile_is_a_413_naming_the_field(api):
    attributes = big_attributes(MAX_ATTRIBUTES_BYTES)

    item_status, item_body = api.json("PUT", "/items/b", {"title": "t", "category": "c", "attributes": attributes})
    user_status, user_body = api.json("PUT", "/users/u-1", {"attributes": attributes})

    for status, body in ((item_status, item_body), (user_status, user_body)):
        assert status == 413
        assert body["error"]["code"] == "payload_too_large"
        assert body["error"]["fields"][0]["field"] == "attributes"
        assert f"at most {MAX_ATTRIBUTES_BYTES}" in body["error"]["fields"][0]["message"]


def test_an_item_the_store_refuses_fails_alone_and_the_others_are_stored(moto_tables):
    """Validation keeps entries far under DynamoDB's 400 KB; should one still be refused (a limit
    of DynamoDB's that validation did not foresee), it alone is reported, not its neighbours."""
    store = CatalogStore(moto_tables["ItemsTable"])
    good = ItemUpsert.model_validate(item("good"))
    oversized = ItemUpsert.model_construct(**{**good.model_dump(), "item_id": "bad",
                                              "attributes": {f"a{n}": ["x" * 256] * 50 for n in range(40)}})

    written = store.put_many([good, oversized, good.model_copy(update={"item_id": "good-2"})])

    assert [i.item_id for i in written.stored] == ["good", "good-2"]
    assert list(written.refused) == [1]
    assert "refused by the store" in written.refused[1]
