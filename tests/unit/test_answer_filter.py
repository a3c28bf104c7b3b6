"""One filter decides what every answer may show: in stock, not retired, in the category asked
for, not excluded (given, bought, or already in the answer)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from shared.catalog import Item, ItemUpsert
from shared.serving.filters import AnswerFilter
from shared.serving.popular import PopularLists
from shared.serving.recommender import Recommender, Sources
from shared.storage.catalog import CatalogStore, newest_in_category


def item(item_id: str, category: str = "kitchen", **fields) -> Item:
    return Item(item_id=item_id, title=item_id.upper(), category=category, **fields)


def test_an_item_in_stock_not_retired_nor_excluded_is_shown():
    assert AnswerFilter().allows(item("a"))
    assert AnswerFilter.of("kitchen", ["b"]).allows(item("a"))


@pytest.mark.parametrize("shown", [
    item("a", in_stock=False),
    item("a", retired=True),
    item("a", category="garden"),
    item("gone"),
    None,  # not in the catalog
], ids=["out of stock", "retired", "other category", "excluded", "unknown"])
def test_an_item_is_refused_for_each_rule(shown):
    assert not AnswerFilter.of("kitchen", ["gone"]).allows(shown)


def test_without_a_category_every_category_is_in():
    assert AnswerFilter().in_category("garden") and AnswerFilter.of(None, ["x"]).allows(item("a", "garden"))
    assert not AnswerFilter.of("kitchen").in_category("garden")


def test_taking_ids_gives_a_new_filter_and_leaves_the_first_as_it_was():
    asked = AnswerFilter.of("kitchen", ["a"])
    taken = asked.taking(i for i in ["b", "c"])

    assert taken.excluded == {"a", "b", "c"} and taken.category == "kitchen"
    assert asked.excluded == {"a"} and asked.allows(item("b"))
    with pytest.raises(AttributeError):
        asked.category = "garden"  # type: ignore[misc]


def test_only_ids_that_may_be_shown_are_worth_reading_in_their_order():
    assert AnswerFilter.of(None, ["b"]).worth_reading(["c", "b", "a"]) == ["c", "a"]


class FakeCatalog:
    def __init__(self, *items: Item) -> None:
        self.items = {i.item_id: i for i in items}
        self.read: list[str] = []

    def details(self, item_ids):
        self.read += list(item_ids)
        return {i: self.items[i] for i in item_ids if i in self.items}

    def newest(self, category, limit):
        return []


def recommender(catalog: FakeCatalog, popular: list[str], profile=None) -> Recommender:
    return Recommender(Sources(model=lambda: None, catalog=catalog, history=lambda _: [],
                               profile=lambda _: profile,
                               cached_popular=lambda: PopularLists("v1", popular, {}, True)))


def test_popular_answers_keep_the_filter_rules():
    catalog = FakeCatalog(item("a"), item("b", in_stock=False), item("c", retired=True), item("d", "garden"),
                          item("e"))
    popular = ["a", "b", "c", "d", "e", "unknown"]

    assert [i.item_id for i in recommender(catalog, popular).popular(10, None, None).items] == ["a", "d", "e"]
    assert [i.item_id for i in recommender(catalog, popular).popular(10, "kitchen", None).items] == ["a", "e"]
    catalog.read.clear()
    cold = recommender(catalog, popular).recommend("someone", 10, "kitchen", exclude=["a"])
    assert [i.item_id for i in cold.items] == ["e"] and cold.strategy == "cold_start:popular:cached"
    assert "a" not in catalog.read  # an excluded id is not even read


def test_similar_items_without_a_model_are_popular_in_its_category_without_itself():
    catalog = FakeCatalog(item("a"), item("b"), item("c", "garden"))

    answer = recommender(catalog, ["a", "b", "c"]).similar(item("a"), 5)

    assert (answer.strategy, [i.item_id for i in answer.items]) == ("popular_in_category", ["b"])


def test_new_items_come_back_as_items_newest_first_with_their_stock(moto_tables):
    table = moto_tables["ItemsTable"]
    now = datetime.now(timezone.utc)
    CatalogStore(table).put_many([
        ItemUpsert(item_id="old", title="Old", category="kitchen", created_at=now - timedelta(days=40),
                   attributes={"colour": "red"}),
        ItemUpsert(item_id="new", title="New", category="kitchen", price=Decimal("9.5"), currency="EUR",
                   created_at=now - timedelta(days=1), in_stock=False),
        ItemUpsert(item_id="other", title="Other", category="garden", created_at=now),
    ])

    newest = newest_in_category(table, "kitchen", 10)

    assert [i.item_id for i in newest] == ["new", "old"] and all(isinstance(i, Item) for i in newest)
    assert (newest[0].price, newest[0].currency, newest[0].in_stock, newest[0].retired) == (
        Decimal("9.5"), "EUR", False, False)
    assert newest[0].created_at is not None and abs(newest[0].created_at - (now - timedelta(days=1))) < timedelta(
        seconds=1)
    assert newest[1].attributes == {}  # not projected into the index
