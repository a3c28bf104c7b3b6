"""The nightly run's histories as columns: the same answers as the history objects they replace."""

from __future__ import annotations

import pickle
import random
from datetime import datetime, timedelta, timezone

from shared.events import format_timestamp
from shared.history import HistoryEvent, customers_with, purchased_item_ids
from shared.history_columns import HistoryColumns
from shared.storage.customers import HistoryPages
from shared.storage.history_columns import HistoryColumnPages

NOW = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)


def stored_events(count: int, seed: int = 1) -> list[dict]:
    """Events as a Scan or an export holds them (DynamoDB JSON), with what history rows must
    survive: searches, equal times, odd and missing fields, times not as ingest writes them."""
    rng = random.Random(seed)
    events = []
    for n in range(count):
        at = NOW - timedelta(seconds=rng.choice([0, 1, 60, 3600, 86_400]) * rng.randint(0, 40))
        item = {"user_id": {"S": f"u{rng.randint(0, 60)}"}, "event_id": {"S": f"e{n}"},
                "event_type": {"S": rng.choice(["view", "purchase", "return", "search", "add_to_cart"])},
                "ts": {"S": format_timestamp(at)}}
        if item["event_type"]["S"] != "search":
            item["item_id"] = {"S": f"i{rng.randint(0, 30)}"}
        if rng.random() < 0.5:
            item["quantity"] = {"N": rng.choice(["1", "2", "3", "2.5", "12"])}
        if rng.random() < 0.4:
            item["price"] = {"N": rng.choice(["9.99", "0.1", "100", "0"])}
            item["currency"] = rng.choice([{"S": "EUR"}, {"S": "USD"}, {"S": ""}, {"NULL": True}])
        if rng.random() < 0.6:
            item["channel"] = rng.choice([{"S": "web"}, {"S": "ios"}, {"NULL": True}, {"N": "1"},
                                          {"BOOL": True}, {"L": [{"S": "x"}]}])
        if rng.random() < 0.1:
            item["campaign_id"] = {"S": f"c{rng.randint(0, 3)}"}
        if rng.random() < 0.2:
            item["properties"] = {"M": {"discount": rng.choice([{"BOOL": True}, {"BOOL": False}, {"S": ""},
                                                                 {"N": "1"}])}}
        events.append(item)
    events.insert(count // 2, {"user_id": {"S": "searcher"}, "event_id": {"S": "s"}, "event_type": {"S": "search"},
                               "ts": {"S": format_timestamp(NOW)}})
    return events


def answers(pages_type, events: list[dict], page_size: int, limit: int) -> dict[str, list[HistoryEvent]]:
    pages = pages_type(limit=limit)
    for start in range(0, len(events), page_size):
        pages.add_page(events[start:start + page_size])
    return dict(pages.finish())


def test_columns_answer_what_history_objects_answered():
    events = stored_events(6000)
    for page_size, limit in ((1000, 500), (97, 40), (6000, 3)):  # limits cut through equal times
        expected = answers(HistoryPages, events, page_size, limit)
        got = answers(HistoryColumnPages, events, page_size, limit)
        assert list(got) == list(expected)  # every customer, searchers too, in the order first read
        assert got == expected
        assert got["searcher"] == []


def test_times_not_as_ingest_writes_them_are_read_as_datetime_reads_them():
    events = stored_events(300, seed=2)
    events[5]["ts"] = {"S": "2026-10-01T12:00:00+02:00"}
    events[9]["ts"] = {"S": "2026-10-01T12:00:00Z"}
    assert answers(HistoryColumnPages, events, 100, 500) == answers(HistoryPages, events, 100, 500)


def test_a_customer_without_events_and_the_mapping_reads():
    columns = HistoryColumnPages()
    columns.add_page(stored_events(200, seed=3))
    histories = columns.finish()
    some = next(iter(histories))
    assert some in histories and "nobody" not in histories and histories.get("nobody") is None
    lengths, rows = histories.rows_of(["nobody", some, "nobody", some])
    assert lengths.tolist() == [0, len(histories[some]), 0, len(histories[some])]
    taken = histories.events.take(rows)
    assert taken.objects(0, lengths[1]) == histories[some] == taken.objects(lengths[1], 2 * lengths[1])
    assert dict(HistoryColumns.of(dict(histories))) == dict(histories)
    empty = HistoryColumnPages().finish()
    assert len(empty) == 0 and empty.rows_of(["a"])[0].tolist() == [0]


def test_a_quantity_past_int64_is_kept_as_stored():
    events = stored_events(50, seed=4)
    events[0]["item_id"] = {"S": "big"}
    events[0]["quantity"] = {"N": "1" + "0" * 30}
    got = answers(HistoryColumnPages, events, 50, 500)
    assert got == answers(HistoryPages, events, 50, 500)
    assert any(event.quantity == 10 ** 30 for history in got.values() for event in history)


def test_the_nightly_triggers_reads_answer_from_columns_what_they_answer_from_lists():
    columns = HistoryColumnPages(limit=40)
    events = stored_events(3000, seed=5)
    for start in range(0, len(events), 500):
        columns.add_page(events[start:start + 500])
    histories = columns.finish()
    lists = dict(histories)
    assert purchased_item_ids(histories) == purchased_item_ids(lists)
    assert any(purchased_item_ids(lists).values()) and purchased_item_ids(lists)["searcher"] == []
    wanted = {"i3", "i7", "nowhere"}
    narrowed = customers_with(histories, wanted)
    assert dict(narrowed) == {user_id: history for user_id, history in lists.items()
                              if any(event.item_id in wanted for event in history)}
    assert 0 < len(narrowed) < len(lists) and customers_with(lists, wanted) is lists
    assert len(customers_with(histories, set())) == 0


def test_readers_of_consecutive_shares_joined_answer_what_one_reader_answers():
    """The nightly read splits the events export over processes: each share's reader codes the
    values in its own order, and the joined pages (through a pickle, as they come back) must
    give the one reader's answer, equal times and the limit's cut included."""
    events = stored_events(6000, seed=6)
    events[4000]["channel"] = {"N": "7"}  # a value of another type, in the later share alone
    for limit in (500, 40):
        whole = answers(HistoryColumnPages, events, 1000, limit)
        first, second, third = (HistoryColumnPages(limit=limit) for _ in range(3))
        first.add_page(events[:2500])
        second.add_page(events[2500:3000])
        second.add_page(events[3000:4100])
        third.add_page(events[4100:])
        for later in (second, third):
            first.extend(pickle.loads(pickle.dumps(later)))
        joined = dict(first.finish())
        assert list(joined) == list(whole)
        assert joined == whole
