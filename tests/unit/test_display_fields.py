"""Catalog display fields (image_url, url): only safe https addresses are accepted, they are
stored and read back, and every answer that lists items carries them on each item."""

from __future__ import annotations

from collections import Counter

import pytest

from devstack.demo_data import generate_shop
from shared.catalog import ItemUpsert
from shared.storage import dynamo
from shared.storage.catalog import CatalogStore, catalog_details, newest_in_category
from shared.validation import validate_each
from tests.factories import item
from tests.training_data import A_MODEL_SERVES, END, store_events

IMAGE = "https://cdn.shop.example/images/sku-1.jpg?w=640"
PAGE = "https://shop.example/products/oak-board#reviews"


def body(**fields):
    return {k: v for k, v in item("sku-1", **fields).items() if k != "item_id"}


UNSAFE = [
    "http://shop.example/p/1",  # not https
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:image/png;base64,iVBORw0KGgo=",
    "/products/oak-board",  # relative
    "//shop.example/products/oak-board",  # scheme-relative
    "shop.example/products/oak-board",
    "https:///products/oak-board",  # no host
    "https:shop.example/products",
    "https://user:pass@shop.example/p/1",  # userinfo
    "https://user@shop.example/p/1",
    "https://shop.example/p 1",  # whitespace
    " https://shop.example/p/1",
    "https://shop.example/p/1\n",
    "https://shop.example/p/\t1",
    "https://shop.example/p/\x001",  # control characters
    "https://shop.example/p/\x7f",
    "https://shop.example/p/\u200b1",  # zero-width space
    "https://shop.example/p/\u00a01",  # no-break space
    "https://shop.example\\@evil.example/",  # a backslash browsers read as a slash
    'https://shop.example/p/"><script>',
    "https://shop.example:99999/p/1",  # port out of range
    "https://shop.example/p/%zz",  # broken percent-encoding
    "https://shop.example/" + "a" * 2048,  # over 2,048 characters
    "",
]


@pytest.mark.parametrize("address", UNSAFE)
@pytest.mark.parametrize("field", ["image_url", "url"])
def test_an_unsafe_address_is_refused_naming_the_field(field, address):
    checked = validate_each([item(**{field: address})], ItemUpsert, "item_id")

    assert not checked.valid, address
    assert [e.field for e in checked.rejected[0].errors] == [field]


@pytest.mark.parametrize("address", [UNSAFE[0], UNSAFE[1], UNSAFE[3], UNSAFE[9], UNSAFE[11], UNSAFE[-2]])
@pytest.mark.parametrize("field", ["image_url", "url"])
def test_the_api_answers_an_unsafe_address_with_a_422_naming_the_field(api, field, address):
    status, error = api.json("PUT", "/items/sku-1", body(**{field: address}))

    assert status == 422, address
    assert [f["field"] for f in error["error"]["fields"]] == [field]
    assert api.json("GET", "/items/sku-1")[0] == 404


@pytest.mark.parametrize("field", ["image_url", "url"])
def test_a_non_string_address_is_refused(api, field):
    status, error = api.json("PUT", "/items/sku-1", body(**{field: 42}))
    assert status == 422
    assert [f["field"] for f in error["error"]["fields"]] == [field]


@pytest.mark.parametrize("address", [
    IMAGE, PAGE, "https://shop.example", "HTTPS://shop.example/p/1", "https://shop.example:8443/p/1",
    "https://bücher.example/bücher/ä?q=ü", "https://shop.example/p/%20oak", "https://[2001:db8::1]/p/1",
    "https://shop.example/" + "a" * (2048 - len("https://shop.example/")),
])
def test_a_safe_https_address_is_accepted(address):
    assert ItemUpsert.model_validate(item(url=address, image_url=address)).url == address


def test_a_catalog_batch_names_the_bad_entry_and_field(api):
    batch = [item("a", image_url=IMAGE), item("b", url="http://shop.example/b"), item("c", url=PAGE)]

    status, answer = api.json("POST", "/items", {"items": batch})

    assert status == 207
    assert [(r["index"], r["item_id"], [e["field"] for e in r["errors"]]) for r in answer["rejected"]] == [
        (1, "b", ["url"])]


def test_display_fields_are_stored_and_read_back_and_dropped_by_a_replace(api, moto_tables):
    status, stored = api.json("PUT", "/items/sku-1", body(image_url=IMAGE, url=PAGE))

    assert status == 200
    assert (stored["image_url"], stored["url"]) == (IMAGE, PAGE)
    _, read = api.json("GET", "/items/sku-1")
    assert read == stored
    assert (catalog_details(moto_tables["ItemsTable"], ["sku-1"])["sku-1"].image_url) == IMAGE

    api.json("PUT", "/items/sku-1", body())  # a put replaces the whole item
    _, read = api.json("GET", "/items/sku-1")
    assert (read["image_url"], read["url"]) == (None, None)
    row = dynamo.get_item(moto_tables["ItemsTable"], {"item_id": "sku-1"}, "test")
    assert "image_url" not in row and "url" not in row  # no null attribute


def test_an_item_stored_before_the_display_fields_loads_with_none(api, moto_tables):
    dynamo.client().put_item(TableName=moto_tables["ItemsTable"], Item=dynamo.serialize({
        "item_id": "old", "title": "Old item", "category": "kitchen", "price": None, "currency": None,
        "in_stock": True, "retired": False, "created_at": "2024-01-01T00:00:00.000000Z", "attributes": {},
        "updated_at": "2024-01-01T00:00:00+00:00"}))

    status, read = api.json("GET", "/items/old")

    assert status == 200
    assert (read["image_url"], read["url"]) == (None, None)
    assert catalog_details(moto_tables["ItemsTable"], ["old"])["old"].url is None
    assert [i.item_id for i in newest_in_category(moto_tables["ItemsTable"], "kitchen", 10)] == ["old"]


def test_new_items_read_from_the_category_index_carry_their_display_fields(moto_tables):
    store = CatalogStore(moto_tables["ItemsTable"])
    store.put_many([ItemUpsert.model_validate(item("with", image_url=IMAGE, url=PAGE,
                                                   created_at="2025-02-01T00:00:00Z")),
                    ItemUpsert.model_validate(item("without", created_at="2025-01-01T00:00:00Z"))])

    newest = newest_in_category(moto_tables["ItemsTable"], "kitchen", 10)

    assert [(i.item_id, i.image_url, i.url, i.title) for i in newest] == [
        ("with", IMAGE, PAGE, "Item with"), ("without", None, None, "Item without")]


# Answers that list items, from a model trained on a small generated shop.

def display(item_fields: dict) -> tuple[str | None, str | None]:
    return item_fields.get("image_url"), item_fields.get("url")


@pytest.fixture
def shop_with_model(api, moto_tables):
    shop = generate_shop(seed=2, n_users=80, n_items=40, end=END)
    assert api.json("POST", "/items", {"items": shop.items})[0] == 200
    store_events(moto_tables["EventsTable"], shop.events)
    manifest = api.train_and_wait(A_MODEL_SERVES)
    assert manifest["active"], manifest["reason"]
    return shop


def assert_carried(answer: dict, catalog: dict[str, tuple[str | None, str | None]]) -> None:
    assert answer["items"]
    for listed in answer["items"]:
        assert (listed["image_url"], listed["url"]) == catalog[listed["item_id"]], listed


def test_every_answer_that_lists_items_carries_them(api, shop_with_model):
    catalog = {i["item_id"]: display(i) for i in shop_with_model.items}
    assert all(image and page for image, page in catalog.values())  # the demo's items all have both
    buyer = Counter(e["user_id"] for e in shop_with_model.events if e["event_type"] == "purchase").most_common(1)[0][0]

    popular = api.json("GET", "/popular?limit=5")[1]
    assert_carried(popular, catalog)
    first = popular["items"][0]["item_id"]
    assert_carried(api.json("GET", f"/items/{first}/similar?limit=5")[1], catalog)
    recommended = api.json("GET", f"/users/{buyer}/recommendations?limit=10")[1]
    assert recommended["personalized"], recommended["strategy"]
    assert_carried(recommended, catalog)
    assert_carried(api.json("GET", f"/items/{first}/bought-together?limit=5")[1], catalog)
    assert_carried(api.json("POST", "/recommendations/basket?limit=5", {"item_ids": [first]})[1], catalog)

    # An item replaced without them answers null for both.
    again = next(i for i in shop_with_model.items if i["item_id"] == first)
    assert api.json("PUT", f"/items/{first}", {k: v for k, v in again.items()
                                                if k not in ("item_id", "image_url", "url")})[0] == 200
    listed = {i["item_id"]: i for i in api.json("GET", "/popular?limit=5")[1]["items"]}
    assert {"image_url", "url"} <= set(listed[first])  # present, as null
    assert (listed[first]["image_url"], listed[first]["url"]) == (None, None)
