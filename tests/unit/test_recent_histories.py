"""The nightly run's histories are what serving reads: each id's recent-activity item, decoded into
columns, or the Query serving falls back to for an id without a readable one."""

from __future__ import annotations

import json
import random
import zlib
from datetime import datetime, timedelta, timezone

import pytest

import shared.storage.recent_histories as recent_histories
from shared.config import get_settings
from shared.events import Event, format_timestamp
from shared.history import customers_with, purchased_item_ids
from shared.history_columns import HistoryColumns
from shared.recent import RECENT_EVENTS, RecentActivity, RecentEvent, decode, encode
from shared.storage import dynamo
from shared.storage.events import EventStore, event_item
from shared.storage.history import recent_history
from shared.storage.recent_histories import nightly_histories
from shared.storage.users import all_rows_and_recent

NOW = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)
NO_TABLE = "no-events-table"  # every id below has an item: nothing is read by Query


def recent_items(customers: int, seed: int = 1) -> dict[str, bytes]:
    """Recent-activity payloads as ingest writes them, with what columns must keep: equal times,
    every optional field set and unset, prices as whole numbers, and a customer with none."""
    rng = random.Random(seed)
    items = {}
    for n in range(customers):
        events = []
        for k in range(rng.randint(1, 40)):
            at = NOW - timedelta(seconds=rng.choice([0, 1, 60, 3600]) * rng.randint(0, 40))
            events.append(RecentEvent(
                format_timestamp(at), f"i{rng.randint(0, 30)}",
                rng.choice(["view", "purchase", "return", "add_to_cart"]),
                rng.choice([1, 1, 2, 12]), rng.choice([None, "web", "ios"]), rng.choice([None, 9.99, 0.1, 100, 0]),
                rng.choice([None, "EUR", "USD", ""]), rng.choice([None, None, f"c{k % 3}"]), rng.random() < 0.2))
        items[f"u{n}"] = encode(sorted(events, key=lambda e: (e.ts, e.item_id, e.event_type), reverse=True))
    items["no-items-yet"] = encode([])  # only searches so far: an item with no events
    return items


def served(payloads: dict[str, bytes]) -> dict[str, list]:
    """What the request path reads of each item (storage/users.py's _recent_of, then history())."""
    return {owner: RecentActivity(tuple(decode(payload))).history() for owner, payload in payloads.items()}


@pytest.mark.parametrize("page", [5_000, 7])  # pages that cut through the customers too
def test_columns_hold_what_serving_reads_from_each_item(monkeypatch, page):
    monkeypatch.setattr(recent_histories, "PAGE", page)
    payloads = recent_items(60)

    histories = nightly_histories(list(payloads), dict(payloads), NO_TABLE)

    assert isinstance(histories, HistoryColumns) and list(histories) == list(payloads)
    assert dict(histories) == served(payloads)
    assert histories["no-items-yet"] == []


def test_times_quantities_and_lengths_ingest_never_writes_are_read_as_serving_reads_them():
    rows = [["2026-10-01T12:00:00+02:00", "i1", "view"], ["2026-10-01T09:00:00Z", "big", "purchase", 10 ** 30],
            *[[format_timestamp(NOW - timedelta(minutes=k)), f"i{k}", "view"] for k in range(RECENT_EVENTS + 20)]]
    payloads = {"odd": zlib.compress(json.dumps(rows).encode()), **recent_items(5, seed=2)}

    histories = nightly_histories(list(payloads), dict(payloads), NO_TABLE)

    assert dict(histories) == served(payloads)
    assert len(histories["odd"]) == RECENT_EVENTS  # a longer item is cut where serving cuts it
    assert histories["odd"][1].quantity == 10 ** 30


def test_rows_of_every_stored_length_are_decoded_in_columns_as_serving_reads_them(monkeypatch):
    """A row leaves out its trailing defaults (RecentEvent.row): each length, mixed in one page,
    is read in columns, not by the one-customer-at-a-time fallback, with serving's defaults."""
    full = ["2026-10-01T09:00:00.000000Z", "i1", "purchase", 3, "web", 9.5, "EUR", "c1", 1]
    rows = [full[:length] for length in (9, 3, 5, 4, 8, 6, 7, 3)]
    payloads = {"every-length": zlib.compress(json.dumps(rows).encode()),
                "only-short": zlib.compress(json.dumps([full[:3], full[:4]]).encode())}
    expected = served(payloads)

    class NoFallback:
        def __init__(self, *args):
            raise AssertionError("a page was read one customer at a time")

    monkeypatch.setattr(recent_histories, "RecentActivity", NoFallback)
    monkeypatch.setattr(recent_histories, "PAGE", 1)  # a page of short rows alone, too
    histories = nightly_histories(list(payloads), dict(payloads), NO_TABLE)

    assert dict(histories) == expected
    assert [event.quantity for event in histories["only-short"]] == [1, 3]  # a row of three: quantity 1


def stored_the_old_way(events: list[Event]) -> None:
    """Events as the code before the recent-activity item wrote them: no item."""
    for stored in events:
        dynamo.client().put_item(TableName=get_settings().events_table, Item=dynamo.serialize(event_item(stored, "x")))


def event(n: int, user: str, **fields: object) -> Event:
    now = datetime.now(timezone.utc)
    return Event.model_validate({"event_id": f"{user}-{n}", "user_id": user, "item_id": f"sku-{n % 7}",
                                 "event_type": "view", "channel": "web",
                                 "timestamp": (now - timedelta(minutes=n + 1)).isoformat(), **fields},
                                context={"now": now, "max_future_seconds": 300})


def test_histories_decoded_a_page_at_a_time_are_as_served_and_each_payload_is_let_go(monkeypatch):
    monkeypatch.setattr(recent_histories, "PAGE", 7)
    payloads = recent_items(60)
    left = dict(payloads)

    histories = nightly_histories(list(payloads), left, NO_TABLE)

    assert list(histories) == list(payloads) and dict(histories) == served(payloads) and not left


def test_an_id_without_a_readable_item_is_read_by_query_and_costs_no_other_customer(moto_tables):
    settings = get_settings()
    EventStore(settings.events_table, settings.users_table).write(
        [event(n, user) for user in ("u-kept", "u-garbled", "u-not-json", "u-odd-row", "u-odd-channel") for n in range(5)])
    stored_the_old_way([event(n, "u-before-items") for n in range(8)])
    _, payloads = all_rows_and_recent(settings.users_table)
    assert set(payloads) == {"u-kept", "u-garbled", "u-not-json", "u-odd-row", "u-odd-channel"}
    payloads["u-garbled"] = b"not zlib at all"
    payloads["u-not-json"] = zlib.compress(b"{not json")
    payloads["u-odd-row"] = zlib.compress(json.dumps([["2026-11-01T03:00:00.000000Z", {"id": 1}, "view"]]).encode())
    # Serving refuses a channel that is not a text (RecentEvent.from_row): the columns must too.
    payloads["u-odd-channel"] = zlib.compress(json.dumps([["2026-11-01T03:00:00.000000Z", "i1", "view", 1, 7]]).encode())
    ids = ["u-kept", "u-garbled", "u-not-json", "u-odd-row", "u-odd-channel", "u-before-items"]

    histories = nightly_histories(ids, dict(payloads), settings.events_table)

    assert histories["u-kept"] == served({"u-kept": payloads["u-kept"]})["u-kept"]
    for user in ("u-garbled", "u-not-json", "u-odd-row", "u-odd-channel", "u-before-items"):
        assert histories[user] == recent_history(settings.events_table, user) != []
    assert len(histories["u-before-items"]) == 8
    # On a page of its own with a readable item (the fast path's columns, not the slow path's).
    alone = nightly_histories(["u-kept", "u-odd-channel"], {user: payloads[user] for user in ("u-kept", "u-odd-channel")},
                              settings.events_table)
    assert alone["u-odd-channel"] == recent_history(settings.events_table, "u-odd-channel")


def test_the_mapping_reads_and_a_customer_without_events():
    payloads = recent_items(30, seed=3)
    histories = nightly_histories(list(payloads), dict(payloads), NO_TABLE)
    some = "u4"
    assert some in histories and "nobody" not in histories and histories.get("nobody") is None
    lengths, rows = histories.rows_of(["nobody", some, "nobody", some])
    assert lengths.tolist() == [0, len(histories[some]), 0, len(histories[some])]
    taken = histories.events.take(rows)
    assert taken.objects(0, lengths[1]) == histories[some] == taken.objects(lengths[1], 2 * lengths[1])
    assert dict(HistoryColumns.of(dict(histories))) == dict(histories)
    empty = nightly_histories([], {}, NO_TABLE)
    assert len(empty) == 0 and empty.rows_of(["a"])[0].tolist() == [0]


def test_the_nightly_triggers_reads_answer_from_columns_what_they_answer_from_lists():
    payloads = recent_items(80, seed=5)
    histories = nightly_histories(list(payloads), dict(payloads), NO_TABLE)
    lists = dict(histories)
    assert purchased_item_ids(histories) == purchased_item_ids(lists)
    assert any(purchased_item_ids(lists).values()) and purchased_item_ids(lists)["no-items-yet"] == []
    wanted = {"i3", "i7", "nowhere"}
    narrowed = customers_with(histories, wanted)
    assert dict(narrowed) == {user_id: history for user_id, history in lists.items()
                              if any(event.item_id in wanted for event in history)}
    assert 0 < len(narrowed) < len(lists) and customers_with(lists, wanted) is lists
    assert len(customers_with(histories, set())) == 0
