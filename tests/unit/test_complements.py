"""Complements: counted in baskets and customers, ranked, variants demoted, stored in the artifact,
served for one item and for a cart with honest reasons, and reachable by the right callers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from shared.catalog import Item
from shared.serving.answers import Because, PopularItems, Recommendation
from shared.serving.complements import FALLBACK, BoughtTogetherRules, ComplementData, ComplementSources
from shared.training.complements import (
    Complements, are_variants, basket_keys_by_day, complements_for_artifact, compute_complements,
    from_artifact_arrays, title_words,
)
from shared.users import Consent, User
from tests.factories import item as item_fields
from tests.factories import purchase


class Baskets:
    """Purchase lines built basket by basket: add(customer, item indexes)."""

    def __init__(self) -> None:
        self.users: list[int] = []
        self.items: list[int] = []
        self.baskets: list[int] = []

    def add(self, customer: int, *items: int, times: int = 1) -> Baskets:
        for _ in range(times):
            basket = len(set(self.baskets))
            for i in items:
                self.users.append(customer)
                self.items.append(i)
                self.baskets.append(basket)
        return self

    def complements(self, n_items: int, titles=None, **options) -> Complements:
        return compute_complements(np.array(self.users), np.array(self.items), np.array(self.baskets),
                                   n_items, titles, **options)


def shop() -> Baskets:
    """Item 0 goes with 1 (5 customers) and with 2 (3 customers); 3 is in half of all baskets."""
    lines = Baskets()
    for customer in range(5):
        lines.add(customer, 0, 1)
        lines.add(customer, 3, 4)
    for customer in range(5, 8):
        lines.add(customer, 0, 2, 3)
    for customer in range(8, 14):
        lines.add(customer, 3)
        lines.add(customer, 2)
    return lines


# -- the computation


def test_counts_are_distinct_customers_and_distinct_baskets():
    lines = Baskets().add(0, 0, 1, times=5).add(1, 0, 1).add(2, 0, 1).add(3, 2).add(4, 2)

    [found] = lines.complements(3).of(0)

    assert (found.item, found.customers, found.baskets) == (1, 3, 7)  # one customer's 5 orders: 1 customer
    assert lines.complements(3).of(1)[0].item == 0  # both directions


def test_a_pair_needs_the_minimum_number_of_customers():
    lines = Baskets().add(0, 0, 1, times=10).add(1, 0, 1).add(2, 5).add(3, 5)

    assert lines.complements(6).of(0) == []  # 11 baskets, but 2 customers
    assert [c.item for c in lines.complements(6, min_customers=2).of(0)] == [1]


def test_ranked_by_likelihood_ratio_or_lift_and_only_above_chance():
    complements = shop().complements(5)

    assert [c.item for c in complements.of(0)] == [1, 2]  # 3 (0 with 3: 3 customers) is below chance
    assert complements.of(0)[0].score > complements.of(0)[1].score > 0
    by_lift = shop().complements(5, rank_by="lift")
    assert all(c.score > 1 for c in by_lift.of(0))
    with pytest.raises(ValueError, match="rank_by"):
        shop().complements(5, rank_by="confidence")


def test_lift_prefers_the_rarer_pair_and_the_likelihood_ratio_the_surer_one():
    lines = Baskets()
    for customer in range(30):
        lines.add(customer, 0, 1)  # common pair: 30 customers
        lines.add(customer, 1)
        lines.add(customer, 0)
    for customer in range(30, 33):
        lines.add(customer, 0, 2)  # rare pair: 2 is bought only with 0, by 3 customers
    for customer in range(40, 400):
        lines.add(customer, 5)

    assert [c.item for c in lines.complements(6, rank_by="lift").of(0)] == [2, 1]
    assert [c.item for c in lines.complements(6).of(0)] == [1, 2]


def test_variants_of_the_same_product_come_after_the_other_complements():
    lines = Baskets()
    for customer in range(6):
        lines.add(customer, 0, 1, 2)  # 0 and 1 are variants, bought together by everyone
    for customer in range(6, 9):
        lines.add(customer, 0, 2)
    for customer in range(9, 20):
        lines.add(customer, 3)
    titles = ["JUMBO BAG RED RETROSPOT", "JUMBO BAG PINK POLKADOT", "Oak chopping board", "Candle"]

    found = lines.complements(4, titles).of(0)

    assert [(c.item, c.variant) for c in found] == [(2, False), (1, True)]
    assert found[1].customers == 6  # the real counts stay
    assert [c.item for c in lines.complements(4).of(0)][0] in (1, 2)  # without titles nothing is demoted
    undemoted = lines.complements(4, titles, variant_penalty=1.0).of(0)
    assert [c.item for c in undemoted] == [c.item for c in lines.complements(4).of(0)]
    assert [c.variant for c in undemoted if c.item == 1] == [True]


@pytest.mark.parametrize(("a", "b", "variants"), [
    ("JUMBO BAG RED RETROSPOT", "JUMBO BAG PINK POLKADOT", True),
    ("GREEN REGENCY TEACUP AND SAUCER", "ROSES REGENCY TEACUP AND SAUCER", True),
    ("Oak chopping board", "Oak chopping board, large (40 cm)", True),
    ("ALARM CLOCK BAKELIKE RED", "ALARM CLOCK BAKELIKE GREEN", True),
    ("JUMBO BAG RED RETROSPOT", "JUMBO BAG STRAWBERRY", True),
    ("LUNCH BAG RED RETROSPOT", "JUMBO BAG RED RETROSPOT", False),
    ("JUMBO STORAGE BAG SUKI", "JUMBO BAG RED RETROSPOT", False),
    ("Oak chopping board", "Chef's knife", False),
    ("REGENCY CAKESTAND 3 TIER", "REGENCY TEACUP AND SAUCER", False),
])
def test_the_variant_rule_on_titles(a, b, variants):
    assert are_variants(title_words(a), title_words(b)) is variants


def test_big_baskets_are_left_out_of_the_pairs():
    lines = Baskets()
    for customer in range(5):
        lines.add(customer, *range(10))
    for customer in range(5, 20):
        lines.add(customer, 10)

    assert lines.complements(11, max_basket_items=9).of(0) == []
    assert len(lines.complements(11).of(0)) == 9 and len(lines.complements(11, top_n=4).of(0)) == 4


def test_without_an_order_id_a_basket_is_a_customers_day():
    day = 86_400.0
    keys = basket_keys_by_day(np.array([0, 0, 0, 1]), np.array([10 * day + 5, 10 * day + 80_000, 11 * day, 10 * day]))
    assert keys[0] == keys[1] and len(set(keys.tolist())) == 3


def test_the_artifact_arrays_round_trip_and_a_mismatch_is_refused():
    complements = shop().complements(5)
    arrays = complements_for_artifact(complements)

    assert set(arrays) == {f"complements_{n}" for n in ("indptr", "indices", "customers", "baskets", "scores", "variant")}
    back = from_artifact_arrays(arrays, 5)
    assert back is not None and back.of(0) == complements.of(0)
    assert from_artifact_arrays(arrays, 6) is None  # another model's items
    assert from_artifact_arrays({}, 5) is None  # a version trained before complements
    assert Complements.empty(3).of(1) == [] and complements.of(99) == []


def test_no_purchases_give_no_complements():
    empty = np.zeros(0, np.int64)
    assert compute_complements(empty, empty, empty, 4).n_items == 4


# -- serving


def item(item_id: str, category: str = "kitchen", **fields) -> Item:
    return Item(item_id=item_id, title=f"Title {item_id}", category=category, **fields)


class FakeCatalog:
    def __init__(self, *items: Item) -> None:
        self.items = {i.item_id: i for i in items}

    def details(self, item_ids):
        return {i: self.items[i] for i in item_ids if i in self.items}


def data(complements: Complements, item_ids: list[str]) -> ComplementData:
    return ComplementData("v1", item_ids, complements)


def rules(catalog: FakeCatalog, complements: ComplementData | None, popular=("p1", "p2", "p3"),
          purchased=frozenset(), profile=None, read=None) -> BoughtTogetherRules:
    def popular_items(limit, category):
        shown = [i for i in popular if catalog.items[i].in_stock and (category is None or catalog.items[i].category == category)]
        return PopularItems(model_version="v-pop", strategy="popular", items=[
            Recommendation.of(catalog.items[i], None, Because(text="popular right now", items=[])) for i in shown[:limit]])

    def bought(user_id):
        if read is not None:
            read.append(user_id)
        return purchased

    return BoughtTogetherRules(ComplementSources(complements=lambda: complements, catalog=catalog,
                                                 popular=popular_items, profile=lambda _: profile, purchased=bought))


IDS = ["a", "b", "c", "d", "e"]
CATALOG = [item("a"), item("b"), item("c"), item("d"), item("e"), item("p1"), item("p2", "garden"), item("p3")]


def test_bought_together_quotes_the_customers_who_did():
    answer = rules(FakeCatalog(*CATALOG), data(shop().complements(5), IDS)).bought_together(item("a"), 2)

    assert answer.strategy == "complements" and answer.model_version == "v1"
    assert [(r.item_id, r.reason.text) for r in answer.items] == [
        ("b", "bought together by 5 customers"), ("c", "bought together by 3 customers")]
    assert answer.items[0].reason.items == ["a"]


def test_bought_together_skips_what_cannot_be_shown_and_fills_with_popular_in_its_category():
    catalog = FakeCatalog(item("a"), item("b", in_stock=False), item("c", retired=True), *CATALOG[3:])

    answer = rules(catalog, data(shop().complements(5), IDS)).bought_together(item("a"), 3)

    assert answer.strategy == FALLBACK  # it has complements, but none that may be shown
    assert [(r.item_id, r.reason.text) for r in answer.items] == [
        ("p1", "popular in kitchen"), ("p3", "popular in kitchen"), ("p2", "popular right now")]


@pytest.mark.parametrize("complements", [None, data(Complements.empty(5), IDS)], ids=["no model", "no complements"])
def test_without_complements_it_is_popular_in_the_items_category_and_says_so(complements):
    answer = rules(FakeCatalog(*CATALOG), complements, popular=("a", "p2", "p1")).bought_together(item("a"), 1)

    assert answer.strategy == FALLBACK
    assert [(r.item_id, r.reason.text) for r in answer.items] == [("p1", "popular in kitchen")]  # never itself


def cart_data() -> ComplementData:
    """a -> b (5 customers), a -> c (3); d -> c (4 customers), d -> e (3)."""
    lines = shop()
    for customer in range(20, 24):
        lines.add(customer, 5, 2)
    for customer in range(24, 27):
        lines.add(customer, 5, 6)
    for customer in range(30, 60):
        lines.add(customer, 7)
    return data(lines.complements(8), ["a", "b", "c", "x", "y", "d", "e", "z"])


BASKET_CATALOG = [*CATALOG, item("x"), item("y"), item("z")]


def test_a_cart_adds_up_its_items_complements_and_leaves_the_cart_out():
    answer = rules(FakeCatalog(*BASKET_CATALOG), cart_data()).basket(["a", "d", "a"], 3)

    assert answer.cart == ["a", "d"] and answer.strategy == "complements"
    assert [r.item_id for r in answer.items] == ["b", "e", "c"]  # x, with a only and weakly, is 4th
    both = answer.items[2]  # with a and with d: the scores add up, the reason names the strongest
    assert both.score == pytest.approx(sum(c.score for seed in (0, 5) for c in cart_data().complements.of(seed)
                                           if c.item == 2), rel=1e-5)
    assert both.reason.text == "often bought with Title d (4 customers)" and both.reason.items == ["d", "a"]
    assert answer.items[0].reason.text == "often bought with Title a (5 customers)"


def test_a_customers_purchases_are_left_out_unless_they_objected():
    read: list[str] = []
    kept = rules(FakeCatalog(*BASKET_CATALOG), cart_data(), purchased=frozenset({"c"}), read=read)
    assert "c" not in {r.item_id for r in kept.basket(["a", "d"], 3, user_id="u-1").items}
    assert read == ["u-1"]

    objected = User(user_id="u-1", consent=Consent(personalization=False))
    private = rules(FakeCatalog(*BASKET_CATALOG), cart_data(), purchased=frozenset({"c"}), profile=objected, read=read)
    answer = private.basket(["a", "d"], 3, user_id="u-1")
    assert "c" in {r.item_id for r in answer.items} and read == ["u-1"]  # their history was not read
    assert answer.user_id == "u-1"


def test_a_cart_without_complements_gets_popular_in_its_categories():
    answer = rules(FakeCatalog(*BASKET_CATALOG), None).basket(["a", "p1"], 2)

    assert answer.strategy == FALLBACK and answer.model_version == "v-pop"
    assert [(r.item_id, r.reason.text) for r in answer.items] == [("p3", "popular in kitchen"),
                                                                  ("p2", "popular right now")]


# -- the routes


def recommend_module():
    return next(m for name, m in sys.modules.items() if name.startswith("lambda_RecommendFunction"))


def put(api, *items):
    assert api.json("POST", "/items", {"items": [item_fields(i, **f) for i, f in items]})[0] == 200


def test_bought_together_through_the_api(api, monkeypatch):
    put(api, ("sku-1", {}), ("sku-2", {}), ("sku-3", {"in_stock": False}))
    status, body = api.json("GET", "/items/sku-1/bought-together?limit=3")
    assert status == 200, body
    assert body["strategy"] == FALLBACK  # no model yet

    lines = Baskets()
    for customer in range(4):
        lines.add(customer, 0, 1, 2)
    lines.add(9, 3)
    found = data(lines.complements(4), ["sku-1", "sku-2", "sku-3", "sku-9"])
    monkeypatch.setattr(recommend_module().bought_together_rules.sources, "complements", lambda: found)

    status, body = api.json("GET", "/items/sku-1/bought-together?limit=3")
    assert status == 200, body
    assert body["strategy"] == "complements"
    assert [(i["item_id"], i["reason"]["text"]) for i in body["items"]] == [("sku-2", "bought together by 4 customers")]
    assert api.json("GET", "/items/nope/bought-together")[0] == 404


def bought_together_by_four(api, monkeypatch) -> None:
    """sku-1, sku-2 and sku-3, each bought with the others by four customers, as the function's complements."""
    put(api, ("sku-1", {}), ("sku-2", {}), ("sku-3", {}))
    api.json("GET", "/items/sku-1/bought-together")  # loads the function
    lines = Baskets()
    for customer in range(4):
        lines.add(customer, 0, 1, 2)
    lines.add(9, 3)
    found = data(lines.complements(4), ["sku-1", "sku-2", "sku-3", "sku-9"])
    monkeypatch.setattr(recommend_module().bought_together_rules.sources, "complements", lambda: found)


def test_basket_through_the_api_for_the_shop_and_for_a_customer(api, monkeypatch):
    bought_together_by_four(api, monkeypatch)
    assert api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-1", item_id="sku-3")]})[0] == 200

    status, body = api.json("POST", "/recommendations/basket?limit=5", {"item_ids": ["sku-1"]})
    assert status == 200, body
    assert {i["item_id"] for i in body["items"]} >= {"sku-2", "sku-3"}
    status, body = api.json("POST", "/recommendations/basket", {"item_ids": ["sku-1"], "user_id": "u-1"})
    assert "sku-3" not in {i["item_id"] for i in body["items"]}  # u-1 bought it

    customer = api.as_customer("u-1")
    status, body = customer.json("POST", "/users/u-1/basket-recommendations", {"item_ids": ["sku-1"]})
    assert status == 200, body
    assert body["user_id"] == "u-1" and "sku-3" not in {i["item_id"] for i in body["items"]}
    assert customer.json("POST", "/users/u-2/basket-recommendations", {"item_ids": ["sku-1"]})[0] == 403
    assert customer.json("POST", "/recommendations/basket", {"item_ids": ["sku-1"]})[0] == 404  # not public
    assert customer.json("GET", "/items/sku-1/bought-together")[0] == 200


def test_a_linked_visitor_id_of_a_customer_who_objected_gets_a_basket_from_the_cart_alone(api, monkeypatch):
    """The objection covers the visitor ids linked to the customer: their bought set is not read."""
    bought_together_by_four(api, monkeypatch)
    assert api.json("POST", "/events", {"events": [purchase("p-1", user_id="v_phone", item_id="sku-3")]})[0] == 200
    assert api.json("PUT", "/users/u-1", {"country": "DE"})[0] == 200
    assert api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_phone"})[0] == 200
    before = api.json("POST", "/recommendations/basket", {"item_ids": ["sku-1"], "user_id": "v_phone"})[1]
    assert {i["item_id"] for i in before["items"]} == {"sku-2"}  # the visitor bought sku-3: left out

    assert api.json("PUT", "/users/u-1/consent", {"personalization": False})[0] == 200

    status, body = api.json("POST", "/recommendations/basket", {"item_ids": ["sku-1"], "user_id": "v_phone"})
    assert status == 200 and "sku-3" in {i["item_id"] for i in body["items"]}, body


@pytest.mark.parametrize("body", [{"item_ids": []}, {"item_ids": [f"s-{i}" for i in range(101)]},
                                  {"item_ids": ["a"], "colour": 1}])
def test_a_bad_cart_is_refused(api, body):
    assert api.json("POST", "/recommendations/basket", body)[0] == 422
    assert api.json("POST", "/users/u-1/basket-recommendations", {**body, "user_id": "u-2"})[0] == 422
