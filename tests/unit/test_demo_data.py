"""The demo shop has the structure the recommender and the segments must find."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from devstack.demo_data import generate_shop
from shared.catalog import ItemUpsert
from shared.events import Event
from shared.users import UserProfileIn

END = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def shop():
    return generate_shop(seed=3, n_users=400, n_items=300, end=END)


def test_everything_generated_passes_the_api_validation(shop):
    context = {"now": END, "max_future_seconds": 0}
    for event in shop.all_events():
        Event.model_validate(event, context=context)
    for item in shop.items:
        ItemUpsert.model_validate(item)
    for user in shop.users:
        UserProfileIn.model_validate({k: v for k, v in user.items() if k != "user_id"})
    everything = shop.all_events()
    assert len({(e["user_id"], e["event_id"]) for e in everything}) == len(everything)


def test_the_same_seed_gives_the_same_shop():
    first, again = (generate_shop(seed=5, n_users=50, n_items=40, end=END) for _ in range(2))
    assert first.events == again.events and first.items == again.items and first.messages == again.messages


def last_seen(shop, kind):
    by_user = defaultdict(list)
    for event in shop.events:
        if shop.archetypes[event["user_id"]] == kind:
            by_user[event["user_id"]].append(datetime.fromisoformat(event["timestamp"]))
    return by_user


def test_each_kind_of_customer_has_its_timing(shop):
    days_ago = lambda moment: (END - moment) / timedelta(days=1)  # noqa: E731
    assert all(days_ago(min(ts)) <= 30 for ts in last_seen(shop, "new").values())
    assert all(days_ago(max(ts)) >= 180 for ts in last_seen(shop, "churned").values())
    assert all(60 <= days_ago(max(ts)) for ts in last_seen(shop, "lapsing").values())
    loyal = last_seen(shop, "loyal").values()
    assert sum(days_ago(max(ts)) <= 30 for ts in loyal) > 0.8 * len(loyal)
    orders = defaultdict(set)
    for event in shop.events:
        if event["event_type"] == "purchase":
            orders[event["user_id"]].add(event["order_id"])
    one_off = [u for u, kind in shop.archetypes.items() if kind == "one-off" and u in last_seen(shop, "one-off")]
    assert all(len(orders[u]) == 1 for u in one_off)


def test_a_few_items_sell_most(shop):
    sales = Counter(e["item_id"] for e in shop.events if e["event_type"] == "purchase")
    top_tenth = sum(count for _, count in sales.most_common(len(shop.items) // 10))
    assert top_tenth > 0.4 * sum(sales.values())


def test_customers_mostly_buy_in_their_favourite_categories(shop):
    category = {item["item_id"]: item["category"] for item in shop.items}
    by_user = defaultdict(Counter)
    for event in shop.events:
        by_user[event["user_id"]][category[event["item_id"]]] += 1
    shares = [sum(c for _, c in counts.most_common(3)) / sum(counts.values())
              for counts in by_user.values() if sum(counts.values()) >= 10]
    assert sum(shares) / len(shares) > 0.7


def test_messages_sent_show_measured_engagement_and_fatigue(shop):
    """Sends are the shop's: apart from the customers' events, to subscribers only, each before the
    sessions that answer it; folded as ingest folds them, they give every engagement tag."""
    from shared.contact import ContactLedger, fold_contacts
    from shared.segments.features import customer_features
    from shared.segments.tags import segment
    from shared.users import User

    assert shop.messages and {m["event_type"] for m in shop.messages} == {"message_sent"}
    assert all("item_id" in e for e in shop.events)  # shop.events stays the customers' behaviour
    users = {u["user_id"]: u for u in shop.users}
    assert all(users[m["user_id"]]["consent"][m["channel"]]["granted"] for m in shop.messages)
    context = {"now": END, "max_future_seconds": 0}
    by_user = defaultdict(list)
    for raw in shop.all_events():
        by_user[raw["user_id"]].append(Event.model_validate(raw, context=context))
    tags = Counter()
    for user_id, events in by_user.items():
        ledger = ContactLedger()
        for start in range(0, len(events), 100):  # batches in time order, as the demo sends them
            ledger = fold_contacts(ledger, events[start:start + 100])
        features = customer_features(User(user_id=user_id, contacts=ledger), [], {}, END)
        tags.update(t.name for t in segment(features, {}, personalized=True) if t.family == "engagement")
    assert {"Prefers email", "Prefers push", "Responds to email", "Fatigued on email"} <= set(tags), tags
