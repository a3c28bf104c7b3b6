"""Orders, not lines; returns net of spend; the already-bought set kept at ingest (moto)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import quote

import numpy as np
import pytest

from shared.events import Event, EventType
from shared.purchases import MAX_ITEM_KEYS, PurchasedItems, item_key, order_key
from shared.storage import dynamo
from shared.storage.users import (PURCHASES_SUFFIX, PurchaseKeys, all_user_rows, purchased_items,
                                  read_summaries)
from shared.users import PurchaseSummary, User, fold_purchases
from tests.factories import ago, event, purchase


def summary_of(api, user_id: str = "u-1") -> dict:
    return api.json("GET", f"/users/{user_id}")[1]["summary"]


def returned(event_id: str, user_id: str = "u-1", item_id: str = "sku-1", **fields) -> dict:
    return event(event_id, user_id, item_id, "return", **{"price": 10.0, "currency": "EUR", "quantity": 1, **fields})


# --- the domain ---

def test_return_comes_after_the_first_four_event_types():
    # Appended, not inserted: training encodes types by position (click and search came after it).
    assert list(EventType)[4] is EventType.RETURN and EventType.RETURN == "return"


def test_a_return_needs_a_price():
    from pydantic import ValidationError
    with pytest.raises(ValidationError, match="price"):
        Event.model_validate({**returned("r"), "price": None})


@pytest.mark.parametrize(("price", "currency", "stored"), [
    (2.0700000000000003, "EUR", "2.07"), (0.1 + 0.2, "USD", "0.30"), (1234.5, "JPY", "1235"),
    (1.23456, "KWD", "1.235"), (19.999, "GBP", "20.00"), ("3.14159", "BHD", "3.142"),
])
def test_a_price_is_rounded_to_its_currency(price, currency, stored):
    e = Event.model_validate({**event("e", event_type="purchase"), "price": price, "currency": currency})
    assert str(e.price) == stored


@pytest.mark.parametrize("price", [10**10, -0.01, "NaN", 1e300])
def test_a_price_out_of_range_is_refused(price):
    from pydantic import ValidationError
    with pytest.raises(ValidationError) as error:
        Event.model_validate({**event("e", event_type="purchase"), "price": price})
    assert error.value.errors()[0]["loc"] == ("price",)


def test_a_row_from_before_orders_were_counted_loads():
    legacy = PurchaseSummary.model_validate({"purchase_count": 7, "units": 9, "spend": {"EUR": Decimal("70")}})
    assert (legacy.orders, legacy.lines, legacy.units, legacy.returns, legacy.returned) == (7, 7, 9, 0, {})
    assert legacy.model_dump()["purchase_count"] == 7  # still shown, as lines
    assert User.model_validate({"user_id": "u", "summary": {"purchase_count": 2}}).summary.orders == 2


def test_orders_are_distinct_order_ids_or_purchase_days():
    day = datetime(2025, 3, 1, 9, tzinfo=timezone.utc)

    def line(n, order=None, at=day, kind="purchase", quantity=1):
        return Event.model_validate({**event(f"e-{n}", event_type=kind, price=2, currency="EUR", quantity=quantity),
                                     "timestamp": at, "order_id": order}, context={"now": day + timedelta(days=9)})

    events = [line(1, "A"), line(2, "A"), line(3, "B"), line(4), line(5, at=day + timedelta(hours=5)),
              line(6, at=day + timedelta(days=1)), line(7, "A", kind="return", quantity=2)]
    summary = fold_purchases(PurchaseSummary(), events)
    assert (summary.orders, summary.lines, summary.units, summary.returns) == (4, 6, 6, 1)
    assert summary.spend == {"EUR": Decimal(8)} and summary.returned == {"EUR": Decimal(4)}
    # orders counted before are not counted again
    again = fold_purchases(summary, [line(8, "B")], {order_key("B", day)})
    assert (again.orders, again.lines) == (4, 7)


def test_purchased_items_answers_for_any_id():
    bought = PurchasedItems.of(["a", "b", "é/ü?#"])
    assert "a" in bought and "é/ü?#" in bought and "c" not in bought and 3 not in bought
    assert len(bought) == 3 and item_key("a") in bought.keys and len(item_key("a")) == 8
    catalog = np.array([item_key(i) for i in ["x", "a", "b"]], dtype="S8")
    mask = np.isin(catalog, np.array(sorted(bought.keys), dtype="S8"))
    assert mask.tolist() == [False, True, True]


def test_the_item_set_stops_at_its_cap_and_says_so():
    near = PurchaseKeys(items=frozenset(item_key(f"i{n}") for n in range(MAX_ITEM_KEYS - 1)), version=3)
    events = [Event.model_validate(purchase(f"e{n}", item_id=f"new{n}")) for n in range(3)]
    after, add_items, _ = near.adding(events)
    assert len(add_items) == 1 and len(after.items) == MAX_ITEM_KEYS
    assert after.items_truncated and after.version == 4


# --- through the API, on moto ---

def test_orders_lines_units_and_net_spend_through_the_api(api):
    batch = [purchase("p1", order_id="o-1", quantity=2), purchase("p2", item_id="sku-2", order_id="o-1"),
             purchase("p3", item_id="sku-3", order_id="o-2", price=4.5)]
    assert api.json("POST", "/events", {"events": batch})[0] == 200
    summary = summary_of(api)
    assert (summary["orders"], summary["lines"], summary["units"]) == (2, 3, 4)
    assert float(summary["spend"]["EUR"]) == 34.5

    # a later batch: one more line of o-1 (no new order), a return of one unit of sku-1
    later = [purchase("p4", item_id="sku-4", order_id="o-1"), returned("r1", order_id="o-1")]
    assert api.json("POST", "/events", {"events": later})[0] == 200
    summary = summary_of(api)
    assert (summary["orders"], summary["lines"], summary["returns"]) == (2, 4, 1)
    assert (float(summary["spend"]["EUR"]), float(summary["returned"]["EUR"])) == (34.5, 10.0)


def test_a_retried_batch_never_counts_orders_returns_or_spend_twice(api):
    batch = [purchase("p1", order_id="o-1"), purchase("p2", item_id="sku-2", order_id="o-2"),
             returned("r1", order_id="o-1"), purchase("p3", item_id="sku-3")]
    api.json("POST", "/events", {"events": batch})
    first = summary_of(api)
    # the same batch again, and half of it with new events of the same orders
    assert api.json("POST", "/events", {"events": batch})[1]["duplicates"] == 4
    api.json("POST", "/events", {"events": batch[:2] + [purchase("p5", item_id="sku-5", order_id="o-2")]})
    after = summary_of(api)
    assert (first["orders"], first["lines"], first["returns"]) == (3, 3, 1)
    assert (after["orders"], after["lines"], after["returns"]) == (3, 4, 1)
    assert (float(first["spend"]["EUR"]), float(after["spend"]["EUR"])) == (20.0, 30.0)
    assert float(after["returned"]["EUR"]) == 10.0


def test_a_return_alone_updates_the_summary(api):
    api.json("POST", "/events", {"events": [returned("r1", quantity=3, price=2.5)]})
    summary = summary_of(api)
    assert (summary["returns"], float(summary["spend"]["EUR"]), float(summary["returned"]["EUR"])) == (1, -7.5, 7.5)
    assert (summary["orders"], summary["lines"]) == (0, 0)
    assert len(purchased_items(api_users_table(), "u-1")) == 0


def api_users_table() -> str:
    from shared.config import get_settings
    return get_settings().users_table


@pytest.fixture
def one_snapshot_per_transaction(monkeypatch):
    """moto backs up a table once per action of a transaction (a deep copy each: 100 copies of
    a 5,000-event table per transaction); one copy per table gives the same rollback in seconds."""
    import copy

    from moto.dynamodb import models

    taken: dict[int, object] = {}
    inside: list[bool] = []

    class OnceACall:
        @staticmethod
        def deepcopy(value, memo=None):
            if not inside:
                return copy.deepcopy(value, memo)
            if id(value) not in taken:
                taken[id(value)] = copy.deepcopy(value, memo)
            return taken[id(value)]

    original = models.DynamoDBBackend.transact_write_items

    def transact(self, items):
        taken.clear()
        inside.append(True)
        try:
            return original(self, items)
        finally:
            inside.clear()
            taken.clear()

    monkeypatch.setattr(models, "copy", OnceACall)
    monkeypatch.setattr(models.DynamoDBBackend, "transact_write_items", transact)


def test_every_item_of_5000_purchase_lines_is_in_the_set(api, one_snapshot_per_transaction):
    lines = [purchase(f"p{n}", item_id=f"sku-{n}", order_id=f"o-{n // 10}", timestamp=ago(hours=2, seconds=n))
             for n in range(5000)]
    for start in range(0, 5000, 1000):
        status, body = api.json("POST", "/events", {"events": lines[start:start + 1000]})
        assert (status, body["accepted"]) == (200, 1000)
    api.json("POST", "/events", {"events": lines[:1000]})  # a retry adds nothing

    bought = purchased_items(api_users_table(), "u-1")
    assert len(bought) == 5000 and not bought.truncated
    assert all(f"sku-{n}" in bought for n in range(5000)) and "sku-5000" not in bought
    summary = summary_of(api)
    assert (summary["orders"], summary["lines"], summary["units"]) == (500, 5000, 5000)
    assert all(row["user_id"] == "u-1" for row in all_user_rows(api_users_table()).values())


def test_an_unknown_customer_has_bought_nothing(api):
    assert len(purchased_items(api_users_table(), "nobody")) == 0


def test_no_customer_id_can_be_a_key_item(api):
    """Ids hold no NUL, so "<id>\x00purchases" is never a customer's own row."""
    api.json("POST", "/events", {"events": [purchase("p1")]})
    odd = "u-1" + PURCHASES_SUFFIX

    assert api.json("PUT", f"/users/{quote(odd, safe='')}", {"country": "DE"})[0] == 422
    assert api.json("POST", "/events", {"events": [purchase("p2", user_id=odd)]})[0] == 422
    assert "sku-1" in purchased_items(api_users_table(), "u-1")


def test_erasure_forgets_the_purchase_keys(api):
    api.json("POST", "/events", {"events": [purchase("p1", order_id="o-1")]})
    assert "sku-1" in purchased_items(api_users_table(), "u-1")
    assert api.json("DELETE", "/users/u-1")[0] in (200, 202)
    assert len(purchased_items(api_users_table(), "u-1")) == 0
    key = dynamo.serialize({"user_id": "u-1" + PURCHASES_SUFFIX})
    assert "Item" not in dynamo.client().get_item(TableName=api_users_table(), Key=key)


def test_a_legacy_row_gets_orders_from_purchase_count_and_then_counts_on(api):
    table = api_users_table()
    dynamo.client().put_item(TableName=table, Item=dynamo.serialize({
        "user_id": "u-1", "purchase_count": 5, "units": 6, "spend": {"EUR": Decimal(50)},
        "first_purchase_at": "2025-01-01T00:00:00.000000Z", "last_purchase_at": "2025-01-02T00:00:00.000000Z",
        "summary_version": 4}))
    assert (summary_of(api)["orders"], summary_of(api)["purchase_count"]) == (5, 5)
    api.json("POST", "/events", {"events": [purchase("p1", order_id="new")]})
    summary = summary_of(api)
    assert (summary["orders"], summary["lines"], summary["units"]) == (6, 6, 7)
    state = read_summaries(table, ["u-1"])["u-1"]
    assert state.version == 5 and state.purchases.orders == {order_key("new", datetime.now(timezone.utc))}


# --- training: a purchase returned in full is no positive ---

def test_the_training_loader_drops_purchases_returned_in_full():
    from shared.storage.training_data import net_of_returns
    from shared.training.interactions import EVENT_CODES, InteractionLog

    log = InteractionLog(limit=100)
    for user, item, kind, quantity in [("a", "x", "purchase", 2), ("a", "x", "purchase", 1), ("a", "y", "purchase", 2),
                                       ("b", "x", "purchase", 1), ("a", "x", "view", 1)]:
        log.add(user, item, kind, quantity, 0.0)
    interactions = log.finish()
    # a returned all 3 x (two lines), 1 of 2 y; b returned nothing; an unknown pair is ignored
    kept = net_of_returns(interactions, {("a", "x"): 3.0, ("a", "y"): 1.0, ("c", "z"): 1.0})
    rows = {(kept.user_ids[u], kept.item_ids[i], code) for u, i, code in zip(kept.users, kept.items, kept.event_codes)}
    purchase, view = EVENT_CODES[EventType.PURCHASE], EVENT_CODES[EventType.VIEW]
    assert rows == {("a", "y", purchase), ("b", "x", purchase), ("a", "x", view)}
    assert len(kept) == 3


def test_the_interaction_log_puts_purchases_in_baskets_and_refuses_ragged_pages():
    from shared.training.interactions import InteractionLog

    log = InteractionLog(limit=100)
    day = 86_400.0
    log.add_page(["a", "a", "a", "b", "a", "a"], ["x", "y", "z", "x", "x", "y"],
                 ["purchase", "purchase", "view", "purchase", "purchase", "purchase"], [1] * 6,
                 [10.0, 20.0, 30.0, 40.0, day + 5, day + 6], ["o1", "o1", None, "o1", None, None])
    baskets = log.finish().baskets.tolist()
    assert baskets[2] == -1  # a view is in no basket
    assert baskets[0] == baskets[1] != baskets[3]  # a's order o1; b's order o1 is another basket
    assert baskets[4] == baskets[5] and baskets[4] not in (baskets[0], baskets[3])  # no order id: a's day
    with pytest.raises(ValueError, match="every row"):
        log.add_page(["a", "b"], ["x"], ["view", "view"], [1, 1], [0.0, 0.0])


def test_returns_reach_training_as_no_interaction(api):
    from shared.config import get_settings
    from shared.storage.training_data import load_training_data
    from shared.training.config import TrainingConfig

    api.json("POST", "/events", {"events": [
        purchase("p1", quantity=2), purchase("p2", item_id="sku-2"), returned("r1", quantity=2),
        purchase("p3", user_id="u-2")]})
    settings = get_settings()
    data = load_training_data(settings.events_table, settings.users_table, TrainingConfig(),
                              datetime.now(timezone.utc), segments=1)
    i = data.interactions
    pairs = {(i.user_ids[u], i.item_ids[t]) for u, t in zip(i.users, i.items)}
    assert pairs == {("u-1", "sku-2"), ("u-2", "sku-1")}
