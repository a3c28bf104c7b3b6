"""What a personal list is made of: mostly items the customer has not seen, a bounded share of
items they only viewed or carted, a bounded share of new items, and never what they bought."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from shared.catalog import Item
from shared.history import HistoryEvent
from shared.purchases import PurchasedItems
from shared.serving.model import Scored
from shared.serving.recommender import Mix, Recommender, Sources

NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)


@dataclass
class Row:
    nnz: int


class RankedModel:
    """A model that ranks items in a fixed order: the recommender's rules are what is tested."""

    version = "v-test"
    strategy = "hybrid"
    personalized = True

    def __init__(self, order: list[str]) -> None:
        self.item_ids = order
        self.asked_to_leave_out: set[str] = set()

    def bought(self, purchased):
        return {item_id for item_id in self.item_ids if item_id in purchased}

    def user_row(self, history, now):
        return Row(nnz=len(history))

    def recommend(self, row, count, exclude):
        self.asked_to_leave_out = set(exclude)
        return [Scored(i, 1.0 - n / 1000) for n, i in enumerate(self.item_ids) if i not in exclude][:count]

    def explain(self, row, item_ids):
        return {i: [i] if i.startswith("seen") else ["bought-0"] for i in item_ids}


class Catalog:
    def __init__(self, items: list[Item], new: list[Item] = ()) -> None:
        self.items = {i.item_id: i for i in [*items, *new]}
        self.new = list(new)

    def details(self, item_ids):
        return {i: self.items[i] for i in item_ids if i in self.items}

    def newest(self, category, limit):
        return [i for i in self.new if i.category == category][:limit]


def item(item_id: str, **fields) -> Item:
    return Item(item_id=item_id, title=f"Title {item_id}", category="kitchen", **fields)


def event(item_id: str, kind: str, days_ago: float = 1) -> HistoryEvent:
    return HistoryEvent(item_id=item_id, event_type=kind, quantity=1, timestamp=(NOW - timedelta(days=days_ago)).timestamp())


SEEN = [f"seen-{n}" for n in range(8)]
FRESH = [f"fresh-{n}" for n in range(20)]
HISTORY = [event("bought-0", "purchase", 3)] + [event(i, "view" if n % 2 else "add_to_cart") for n, i in enumerate(SEEN)]


def recommender(mix: Mix | None = None, new: list[Item] = (), purchased=frozenset(), order=None) -> Recommender:
    order = order or [*SEEN, *FRESH]
    items = [item(i) for i in [*order, "bought-0"]]
    model = RankedModel(order)
    return Recommender(Sources(model=lambda: model, catalog=Catalog(items, new),
                               history=lambda _: HISTORY, profile=lambda _: None,
                               purchased=lambda _: purchased), mix)


def ids(answer) -> list[str]:
    return [i.item_id for i in answer.items]


def test_items_only_viewed_or_carted_take_at_most_their_share_of_the_list():
    answer = recommender().recommend("u", 10, now=NOW)

    assert ids(answer) == ["seen-0", "seen-1", *FRESH[:8]]  # the model ranked all eight seen items first
    assert [i.reason.text for i in answer.items[:2]] == ["in your cart, not bought yet", "you viewed this recently"]


@pytest.mark.parametrize(("share", "limit", "seen_shown"), [(0.0, 10, 0), (0.5, 10, 5), (0.2, 4, 0), (0.2, 5, 1)])
def test_the_seen_share_is_a_parameter_rounded_down(share, limit, seen_shown):
    answer = recommender(Mix(seen_share=share)).recommend("u", limit, now=NOW)

    assert sum(i.startswith("seen") for i in ids(answer)) == seen_shown and len(answer.items) == limit


def test_new_items_take_no_slot_when_one_item_is_asked_for_and_at_most_their_share_otherwise():
    new = [item(f"new-{n}", created_at=NOW - timedelta(days=2)) for n in range(5)]

    assert not [i for i in ids(recommender(new=new).recommend("u", 1, now=NOW)) if i.startswith("new")]
    ten = recommender(new=new).recommend("u", 10, now=NOW)
    assert [i for i in ids(ten) if i.startswith("new")] == ["new-0", "new-1"]
    assert ten.items[-1].reason.text == "new in kitchen, a category you buy often"


def test_everything_ever_bought_is_left_out_even_when_the_history_read_holds_none_of_it():
    bought_long_ago = [f"old-{n}" for n in range(5000)]
    order = [*bought_long_ago[::250], *FRESH]
    rec = recommender(purchased=PurchasedItems.of(bought_long_ago), order=order)

    answer = rec.recommend("u", 10, now=NOW)

    assert ids(answer) == FRESH[:10]
    # Left out by the model itself, so they do not crowd out the candidates it returns.
    assert set(bought_long_ago[::250]) <= rec.sources.model().asked_to_leave_out
    with_purchases = rec.recommend("u", 10, include_purchased=True, now=NOW)
    assert ids(with_purchases)[:2] == bought_long_ago[:500:250]
