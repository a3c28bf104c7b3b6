"""A nightly run's members stored in pages: listed whole, looked up and ended per customer."""

from __future__ import annotations

import base64
import json

import pytest

from shared.errors import DomainError, NotFound
from shared.segments.families import needs_consent, segment_id_for
from shared.storage import dynamo
from shared.storage import segments
from shared.storage.segments import SegmentStore
from tests.factories import members_by_segment

PAGE = 40  # members a page in these tests (1,000 in production): moto is slow to write thousands


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    monkeypatch.setattr(segments, "MEMBERS_PER_PAGE", PAGE)
    # Several slices of each kind, the last one short.
    monkeypatch.setattr(segments, "PAGES_A_SLICE", 2)
    monkeypatch.setattr(segments, "BUCKETS_A_SLICE", 7)


def every_member(store: SegmentStore, segment_id: str, limit: int) -> list[tuple[str, str]]:
    found, cursor = [], None
    while True:
        _, page, cursor = store.members(segment_id, limit, cursor)
        assert len(page) <= limit
        found += [(m["user_id"], m["reason"]) for m in page]
        if cursor is None:
            return found


def stored_items(table: str) -> list[dict]:
    pages = dynamo.client().get_paginator("scan").paginate(TableName=table)
    return [dynamo.deserialize(row) for page in pages for row in page["Items"]]


def rows(count: int, segment_id: str = "rfm:champions", reason: str = "bought often") -> list[tuple]:
    return [(segment_id, "rfm", "Champions", f"u-{n:05d}", f"{reason} {n}") for n in range(count)]


@pytest.mark.parametrize("limit", [7, PAGE, 1000])
def test_every_member_is_listed_once_with_their_reason_across_pages(moto_tables, limit):
    store = SegmentStore(moto_tables["SegmentsTable"])
    written = rows(2 * PAGE + 13) + rows(5, "geography:de", "said so")
    index = store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(written))

    listed = every_member(store, "rfm:champions", limit)

    assert sorted(listed) == sorted((user, reason) for segment, _, _, user, reason in written
                                    if segment == "rfm:champions")
    assert index["segments"]["rfm:champions"]["members"] == 2 * PAGE + 13
    assert every_member(store, "geography:de", limit) == [(f"u-{n:05d}", f"said so {n}") for n in range(5)]
    pages = [item for item in stored_items(moto_tables["SegmentsTable"]) if item["sk"].startswith("p#r1#")]
    assert len(pages) == 3 + 1  # three pages of the big segment, one of the small


def test_a_full_page_answers_without_a_cursor_to_an_empty_one(moto_tables):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(rows(PAGE)))

    _, page, cursor = store.members("rfm:champions", PAGE, None)

    assert len(page) == PAGE and cursor is None


def test_long_ids_and_reasons_make_more_pages_each_under_dynamodbs_item_limit(moto_tables, monkeypatch):
    monkeypatch.setattr(segments, "MEMBERS_PER_PAGE", 1000)
    store = SegmentStore(moto_tables["SegmentsTable"])
    long_rows = [("custom:vip", "custom", "VIP", "ü" * 200 + f"{n:04d}", "€" * 300) for n in range(600)]
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(long_rows))

    pages = [item for item in stored_items(moto_tables["SegmentsTable"]) if item["sk"].startswith("p#")]
    assert len(pages) > 1
    assert all(len(json.dumps(page, ensure_ascii=False).encode()) < 400_000 for page in pages)
    assert len(every_member(store, "custom:vip", 1000)) == 600


def test_a_customer_sees_their_memberships_of_each_run_kept_with_the_reasons(moto_tables):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00",
                    members_by_segment(rows(60) + rows(3, "geography:de", "said so")))
    store.write_run("r2", "2026-12-02T00:00:00+00:00", members_by_segment(rows(50, reason="still buys")))

    assert store.memberships("u-00045") == [
        {"segment_id": "rfm:champions", "run": "r2", "reason": "still buys 45"},
        {"segment_id": "rfm:champions", "run": "r1", "reason": "bought often 45"}]
    assert store.memberships("u-00002") == [
        {"segment_id": "rfm:champions", "run": "r2", "reason": "still buys 2"},
        {"segment_id": "rfm:champions", "run": "r1", "reason": "bought often 2"},
        {"segment_id": "geography:de", "run": "r1", "reason": "said so 2"}]
    assert store.memberships("nobody") == []


def test_an_objection_ends_the_behavioural_memberships_and_keeps_the_declared(moto_tables):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00",
                    members_by_segment(rows(60) + rows(3, "geography:de", "said so")))
    assert needs_consent("rfm:champions") and not needs_consent("geography:de")

    assert store.end_memberships("u-00002", needs_consent) == 1

    assert [m["segment_id"] for m in store.memberships("u-00002")] == ["geography:de"]
    assert "u-00002" not in {user for user, _ in every_member(store, "rfm:champions", 1000)}
    assert "u-00002" in {user for user, _ in every_member(store, "geography:de", 1000)}
    assert len(every_member(store, "rfm:champions", 1000)) == 59  # the neighbours on the page stay
    assert store.end_memberships("u-00002", needs_consent) == 0  # again: nothing left to end
    assert [entry.pages for entry in store._entries("u-00002")] == [{"geography:de": 1}]


@pytest.mark.parametrize("run_written", ["before", "after"])
def test_a_customers_objection_covers_their_linked_visitor_ids_in_the_members_listed(api, moto_tables, run_written):
    """The nightly run lists a linked visitor id as a member of its own. The customer's objection
    ends its memberships too ("before": the run was written before it), and a run computed before
    the objection but written after it shows it to no one ("after")."""
    assert api.json("PUT", "/users/u-1", {"country": "DE"})[0] == 200
    assert api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_phone"})[0] == 200
    store = SegmentStore(moto_tables["SegmentsTable"])
    members = [("rfm:champions", "rfm", "Champions", user, "bought often") for user in ("u-1", "v_phone", "u-2")]
    members += [("geography:de", "geography", "Country: DE", "v_phone", "said so")]
    computed = "2026-12-01T00:00:00+00:00"  # before the objection
    if run_written == "before":
        store.write_run("r1", computed, members_by_segment(members))

    status, body = api.json("PUT", "/users/u-1/consent", {"profiling": {"granted": False}, "source": "app-settings"})
    assert status == 200, body
    if run_written == "after":
        store.write_run("r1", computed, members_by_segment(members))

    listed = api.json("GET", "/segments/rfm%3Achampions/members")[1]["members"]
    assert [m["user_id"] for m in listed] == ["u-2"]
    declared = api.json("GET", "/segments/geography%3Ade/members")[1]["members"]
    assert [m["user_id"] for m in declared] == ["v_phone"]  # not built from behaviour: the objection keeps it
    if run_written == "before":  # ended where stored, not only hidden when listed
        assert [m["segment_id"] for m in store.memberships("v_phone")] == ["geography:de"]


def test_erasure_leaves_nothing_of_the_customer_in_any_run(moto_tables):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00",
                    members_by_segment(rows(60) + rows(3, "geography:de", "said so")))
    store.write_run("r2", "2026-12-02T00:00:00+00:00", members_by_segment(rows(50)))

    assert store.end_memberships("u-00002", lambda _: True) == 3

    assert store.memberships("u-00002") == []
    left = json.dumps(stored_items(moto_tables["SegmentsTable"]), default=str)
    assert "u-00002" not in left and "u-00003" in left


def test_customers_share_bucket_items_each_under_dynamodbs_item_limit(moto_tables, monkeypatch):
    """A customer's own item was billed a write unit, most of a run's cost; a bucket holds many."""
    monkeypatch.setattr(segments, "CUSTOMER_BUCKETS", 2)
    monkeypatch.setattr(segments, "CUSTOMERS_AN_ITEM", 1000)  # one share each
    store = SegmentStore(moto_tables["SegmentsTable"])
    long_ids = [("custom:vip", "custom", "VIP", "ü" * 200 + f"{n:04d}", "big spender") for n in range(1200)]
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(long_ids + rows(300)))

    buckets = [item for item in stored_items(moto_tables["SegmentsTable"])
               if item["segment_id"].startswith("#customers#")]
    assert 2 < len(buckets) < 10  # 1,500 customers; the long ids split a bucket into parts
    assert {item["segment_id"] for item in buckets} == {segments._Layout(2, 1).place(user)[0] for _, _, _, user, _ in
                                                        long_ids + rows(300)}
    assert all(len(json.dumps(item, ensure_ascii=False).encode()) < 400_000 for item in buckets)
    assert sum(len(item["customers"]) for item in buckets) == 1500
    # Each customer's segments by their place in the run's list: an id is not billed again per customer.
    assert "custom:vip" not in json.dumps(buckets) and "rfm:champions" not in json.dumps(buckets)
    for user in ("ü" * 200 + "1199", "u-00007"):
        assert [m["run"] for m in store.memberships(user)] == ["r1"]
    assert store.end_memberships("ü" * 200 + "0001", lambda _: True) == 1
    assert store.memberships("ü" * 200 + "0001") == [] and len(store.memberships("ü" * 200 + "0002")) == 1


def test_finding_a_customer_reads_their_share_of_each_run_not_every_customer(moto_tables, monkeypatch):
    """A big shop's bucket is cut into shares of about CUSTOMERS_AN_ITEM customers: an erasure or
    an export reads one share's item a run, whatever the shop's size."""
    monkeypatch.setattr(segments, "CUSTOMER_BUCKETS", 2)
    monkeypatch.setattr(segments, "CUSTOMERS_AN_ITEM", 5)
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(rows(100)))  # 10 shares of 2 buckets
    store.write_run("r2", "2026-12-02T00:00:00+00:00", members_by_segment(rows(30)))  # 3 shares
    client, read = dynamo.client(), []
    query = client.query

    def counted(**request):
        response = query(**request)
        read.extend(row["sk"]["S"] for row in response["Items"] if row["segment_id"]["S"].startswith("#customers#"))
        return response

    monkeypatch.setattr(client, "query", counted)
    for user in ("u-00007", "u-00029"):
        read.clear()
        assert [m["run"] for m in store.memberships(user)] == ["r2", "r1"]
        assert len(read) == 2 and {sk.split("#")[0] for sk in read} == {"r1", "r2"}  # one item a run
    assert store.end_memberships("u-00029", lambda _: True) == 2
    assert store.memberships("u-00029") == [] and len(store.memberships("u-00028")) == 2
    assert "u-00029" not in json.dumps(stored_items(moto_tables["SegmentsTable"]), default=str)


def test_a_bucket_entry_naming_a_segment_the_run_does_not_list_breaks_no_lookup(moto_tables):
    table = moto_tables["SegmentsTable"]
    store = SegmentStore(table)
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(rows(3) + rows(3, "geography:de", "said so")))
    [entry] = store._entries("u-00001")
    dynamo.client().update_item(TableName=table, Key=dynamo.serialize(entry.key),
                                UpdateExpression="SET customers.#user.#bad = :n, customers.#user.#far = :n",
                                ExpressionAttributeNames={"#user": "u-00001", "#bad": "x", "#far": "99"},
                                ExpressionAttributeValues={":n": {"N": "1"}})

    assert [m["segment_id"] for m in store.memberships("u-00001")] == ["rfm:champions", "geography:de"]
    assert store.end_memberships("u-00001", lambda _: True) == 2
    assert store.memberships("u-00001") == []


def test_two_names_of_one_segment_id_make_one_membership_that_erasure_ends(moto_tables):
    """"Likes A&B" and "Likes A B" are both behaviour:likes-a-b: a customer who likes both is one
    member, on one page, counted once, and nothing of them is left after an erasure."""
    store = SegmentStore(moto_tables["SegmentsTable"])
    first = [("behaviour:likes-a-b", "behaviour", "Likes A&B", f"u-{n:05d}", "furniture") for n in range(PAGE)]
    second = [("behaviour:likes-a-b", "behaviour", "Likes A B", "u-00001", "food")]
    index = store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(first + second))

    assert index["segments"]["behaviour:likes-a-b"]["members"] == PAGE
    assert store.memberships("u-00001") == [{"segment_id": "behaviour:likes-a-b", "run": "r1", "reason": "furniture"}]
    assert store.end_memberships("u-00001", lambda _: True) == 1
    assert "u-00001" not in json.dumps(stored_items(moto_tables["SegmentsTable"]), default=str)


def test_a_run_written_before_the_buckets_is_still_found_objected_to_and_erased(moto_tables):
    """Its pages are what GET /segments/{id}/members lists until the next run: an erasure in
    the days after the upgrade must find them through the customer's item of that run."""
    table = moto_tables["SegmentsTable"]
    dynamo.batch_put(table, [
        {"segment_id": "rfm:champions", "sk": "p#r0#000001", "members": {"u-00002": "was", "u-00003": "was"},
         "run": "r0"},
        {"segment_id": "geography:de", "sk": "p#r0#000001", "members": {"u-00002": "lives there"}, "run": "r0"},
        {"segment_id": "#customer#u-00002", "sk": "r0", "pages": {"rfm:champions": 1, "geography:de": 1}}])
    store = SegmentStore(table)
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(rows(5)))

    assert store.memberships("u-00002") == [
        {"segment_id": "rfm:champions", "run": "r1", "reason": "bought often 2"},
        {"segment_id": "rfm:champions", "run": "r0", "reason": "was"},
        {"segment_id": "geography:de", "run": "r0", "reason": "lives there"}]
    assert store.end_memberships("u-00002", needs_consent) == 2
    assert store.memberships("u-00002") == [{"segment_id": "geography:de", "run": "r0", "reason": "lives there"}]
    assert [entry.pages for entry in store._entries("u-00002")] == [{"geography:de": 1}]

    assert store.end_memberships("u-00002", lambda _: True) == 1
    left = json.dumps(stored_items(table), default=str)
    assert "u-00002" not in left and "u-00003" in left


def test_a_listing_reads_only_the_pages_its_answer_needs(moto_tables, monkeypatch):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(rows(3 * PAGE)))
    client, pages_read = dynamo.client(), []
    query = client.query

    def counted(**request):
        response = query(**request)
        pages_read.extend(row["sk"]["S"] for row in response["Items"])
        return response

    monkeypatch.setattr(client, "query", counted)
    _, first, _ = store.members("rfm:champions", 1, None)
    assert len(first) == 1 and len(pages_read) == 1
    pages_read.clear()

    assert len(every_member(store, "rfm:champions", PAGE)) == 3 * PAGE
    assert sorted(pages_read) == sorted(set(pages_read)) and len(pages_read) == 3  # each page once


def test_an_objection_racing_the_expiry_of_the_customers_item_still_answers(moto_tables, monkeypatch):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(rows(3) + rows(3, "geography:de", "said so")))
    found = store._entries("u-00001")
    dynamo.batch_delete(moto_tables["SegmentsTable"], [entry.key for entry in found])
    monkeypatch.setattr(SegmentStore, "_entries", lambda self, user_id: found)

    assert store.end_memberships("u-00001", needs_consent) == 1  # the page entry it could still reach


def test_a_cursor_of_an_older_run_or_one_not_given_out_is_a_clear_400(moto_tables):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(rows(20)))
    _, _, cursor = store.members("rfm:champions", 5, None)
    store.write_run("r2", "2026-12-02T00:00:00+00:00", members_by_segment(rows(20)))

    with pytest.raises(DomainError, match="older run") as older:
        store.members("rfm:champions", 5, cursor)
    assert older.value.field == "cursor"
    for forged in (dynamo.encode_cursor("r2#x#u-1"), dynamo.encode_cursor("r2"), dynamo.encode_cursor("r2#²#u-1"),
                   "bm9wZQ=="):
        with pytest.raises(DomainError, match="not one this API returned"):
            store.members("rfm:champions", 5, forged)


def test_a_run_stored_the_way_before_pages_is_no_run_until_the_next_one(moto_tables, tmp_path):
    """An upgrade finds the index of a run whose members were an item each: unreadable now. It
    reads as no run at all, so the next nightly run is the triggers' baseline instead of
    announcing every tracked member as new."""
    from shared.errors import NotFound
    from shared.nightly_triggers import previous_run
    from shared.storage.bus import LocalBus

    table = moto_tables["SegmentsTable"]
    dynamo.batch_put(table, [{"segment_id": "#index", "sk": "current", "run": "r0", "at": "2026-11-30T00:00:00+00:00",
                              "segments": {"rfm:at-risk": {"family": "rfm", "name": "At Risk", "members": 1}}},
                             {"segment_id": "rfm:at-risk", "sk": "m#r0#u-00001", "member_user_id": "u-00001",
                              "reason": "was", "run": "r0"}])
    store = SegmentStore(table)

    assert store.index() is None
    with pytest.raises(NotFound):
        store.members("rfm:at-risk", 10, None)
    assert previous_run(LocalBus(tmp_path / "bus.jsonl"), store) == (None, None)

    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(rows(3, "rfm:at-risk")))
    assert store.index()["run"] == "r1"
    assert [user for user, _ in every_member(store, "rfm:at-risk", 10)] == ["u-00000", "u-00001", "u-00002"]


def cities(count: int) -> list[tuple]:
    """A customer in each of `count` cities, each a segment of its own, with names as long as a
    city's may be (a profile's city is up to 256 characters)."""
    return [(segment_id_for("geography", f"City: {'東京' * 125}{n:05d}"), "geography", f"City: {'東京' * 125}{n:05d}",
             f"u-{n:05d}", "city in the profile") for n in range(count)]


def test_more_segments_than_one_item_holds_are_indexed_in_parts_each_under_dynamodbs_item_limit(moto_tables):
    """Each city is a segment: a shop with thousands of them has an index, and a run's list of
    ids, bigger than one item holds. They are cut into items under 400 KB and read back whole
    (before, the nightly run failed writing its index)."""
    store = SegmentStore(moto_tables["SegmentsTable"])
    written = cities(800) + rows(3)
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(written))

    index = store.index()
    assert len(index["segments"]) == 801 and index["segments"]["rfm:champions"]["members"] == 3
    items = [item for item in stored_items(moto_tables["SegmentsTable"]) if item["segment_id"] in ("#index", "#runs")]
    assert len(items) > 4 and all(len(json.dumps(item, ensure_ascii=False).encode()) < 400_000 for item in items)
    last_city, _, _, last_customer, _ = written[799]
    assert every_member(store, last_city, 10) == [(last_customer, "city in the profile")]
    # The customer of the last city is found, and erased, by the place of their segment in the last part.
    assert [m["segment_id"] for m in store.memberships(last_customer)] == [last_city]
    assert store.end_memberships(last_customer, lambda _: True) == 1
    assert store.memberships(last_customer) == [] and every_member(store, last_city, 10) == []


def test_a_runs_list_in_many_parts_names_each_customers_segments_in_order(moto_tables, monkeypatch):
    monkeypatch.setattr(segments, "PAGE_CHARACTERS", 1_000)  # a part of a few ids
    store = SegmentStore(moto_tables["SegmentsTable"])
    written = cities(30)
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(written))
    [record] = store.run_records()
    assert record["parts"] >= 3 and record["segments"] == [segment_id for segment_id, *_ in written]

    for segment_id, _, _, user, _ in written:
        assert [m["segment_id"] for m in store.memberships(user)] == [segment_id]
    last_city, _, _, last_customer, _ = written[-1]
    assert store.end_memberships(last_customer, lambda _: True) == 1
    assert store.memberships(last_customer) == [] and every_member(store, last_city, 10) == []
    assert len(store.index()["segments"]) == 30  # the index tells the run as it was written


def test_a_part_of_a_runs_list_gone_before_its_record_names_no_segment_wrongly(moto_tables, monkeypatch):
    monkeypatch.setattr(segments, "PAGE_CHARACTERS", 1_000)
    table = moto_tables["SegmentsTable"]
    store = SegmentStore(table)
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(cities(30)))
    parts = sorted(item["sk"] for item in stored_items(table) if item["segment_id"] == "#runs#parts")
    assert len(parts) >= 3
    dynamo.client().delete_item(TableName=table, Key=dynamo.serialize({"segment_id": "#runs#parts", "sk": parts[1]}))

    found = [[m["segment_id"] for m in store.memberships(f"u-{n:05d}")] for n in range(30)]
    # Customers whose segment is listed before the gap are found in it; none after it in a wrong one.
    assert all(ids in ([], [cities(30)[n][0]]) for n, ids in enumerate(found))
    assert found[0] == [cities(30)[0][0]] and found[29] == []


def test_a_segments_members_are_read_without_reading_the_whole_index(moto_tables, monkeypatch):
    """A page of members needs the latest run's id, not every segment's entry: the index's parts
    are read by GET /segments only."""
    monkeypatch.setattr(segments, "PAGE_CHARACTERS", 1_000)
    store = SegmentStore(moto_tables["SegmentsTable"])
    written = cities(30)
    store.write_run("r1", "2026-12-01T00:00:00+00:00", members_by_segment(written))
    read = []
    batch_get = dynamo.batch_get
    monkeypatch.setattr(dynamo, "batch_get", lambda table, keys, **kw: read.extend(keys) or batch_get(table, keys, **kw))

    for segment_id, _, _, user, reason in (written[0], written[-1]):
        read.clear()
        assert every_member(store, segment_id, 10) == [(user, reason)]
        assert {key["sk"] for key in read} == {"current"}
    with pytest.raises(NotFound):
        store.members("geography:city-nowhere", 10, None)
    assert len(store.index()["segments"]) == 30


def test_members_with_the_longest_ids_of_control_characters_page_through_the_api(api, moto_tables):
    """Ids may hold any character but NUL: the cursor naming the last one must fit the 2,048
    characters a cursor may have (as JSON, a control character took six)."""
    store = SegmentStore(moto_tables["SegmentsTable"])
    ids = ["\x01" * 255 + letter for letter in "abc"]
    store.write_run("r1", "2026-12-01T00:00:00+00:00",
                    members_by_segment([("rfm:champions", "rfm", "Champions", user, "bought often") for user in ids]))
    found, cursor = [], None
    while True:
        status, page = api.json("GET", "/segments/rfm%3Achampions/members?limit=1" +
                                (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, page
        found += [member["user_id"] for member in page["members"]]
        if not (cursor := page["next_cursor"]):
            break
        assert len(cursor) <= 2048

    assert sorted(found) == ids


def test_a_cursor_written_before_cursors_held_bytes_still_reads():
    key = "r1#0#u-\u00b2"
    assert dynamo.decode_cursor(base64.urlsafe_b64encode(json.dumps(key).encode()).decode()) == key
    assert dynamo.decode_cursor(dynamo.encode_cursor(key)) == key


def test_a_members_cursor_of_another_segment_is_a_clear_400_not_a_page_that_skips_members(moto_tables):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", "2026-12-01T00:00:00+00:00",
                    members_by_segment(rows(10) + rows(10, "rfm:loyal", "comes back")))
    _, _, champions = store.members("rfm:champions", 8, None)

    with pytest.raises(DomainError, match="another segment") as refused:
        store.members("rfm:loyal", 8, champions)
    assert refused.value.field == "cursor"
    assert [m["user_id"] for m in store.members("rfm:champions", 8, champions)[1]] == ["u-00008", "u-00009"]
    given_out_before = dynamo.encode_cursor("r1#1#u-00007")  # as cursors were written before they named their segment
    assert [m["user_id"] for m in store.members("rfm:champions", 8, given_out_before)[1]] == ["u-00008", "u-00009"]
