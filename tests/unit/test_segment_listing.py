"""GET /segments a page at a time: by family, the largest first, reading only the index's parts a
page shows, so that a shop with a segment for each of thousands of cities gets an answer under
Lambda's 6 MB and in a few reads (before, every part was read and every segment returned)."""

from __future__ import annotations

import pytest

from shared.errors import DomainError
from shared.segments.families import segment_id_for
from shared.storage import dynamo
from shared.storage import segments
from shared.storage.segments import INDEX_KEY, SegmentStore
from tests.factories import members_by_segment

AT = "2026-12-01T00:00:00+00:00"


def run_rows() -> list[tuple]:
    """Cities of 1 to 30 customers (names as long as a profile's city may make them), and three
    RFM groups: segments of two families, each of a different size."""
    written = []
    for n in range(30):
        name = f"City: {'東京' * 60}{n:02d}"
        written += [(segment_id_for("geography", name), "geography", name, f"c{n:02d}-{k:02d}", "city in the profile")
                    for k in range(n + 1)]
    for size, name in ((5, "Champions"), (9, "Loyal"), (2, "At risk")):
        written += [(segment_id_for("rfm", name), "rfm", name, f"r-{name}-{k}", "bought often") for k in range(size)]
    return written


def expected_order(written: list[tuple]) -> list[dict]:
    counts: dict[str, dict] = {}
    for segment_id, family, name, _, _ in written:
        counts.setdefault(segment_id, {"segment_id": segment_id, "family": family, "name": name, "members": 0})
        counts[segment_id]["members"] += 1
    return sorted(counts.values(), key=lambda s: (s["family"], -s["members"], s["segment_id"]))


def every_page(store: SegmentStore, family: str | None, limit: int) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        listing = store.listing(family, limit, cursor)
        pages.append(listing.segments)
        cursor = listing.next_cursor
        if cursor is None:
            return pages


@pytest.fixture
def store(moto_tables, monkeypatch):
    monkeypatch.setattr(segments, "PAGE_CHARACTERS", 1_500)  # a part of about ten cities
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", AT, members_by_segment(run_rows()))
    return store


@pytest.mark.parametrize("limit", [1, 4, 33, 1000])
def test_pages_give_every_segment_once_by_family_and_the_largest_first(store, limit):
    pages = every_page(store, None, limit)

    assert [entry for page in pages for entry in page] == expected_order(run_rows())
    assert all(len(page) == limit for page in pages[:-1]) and 0 < len(pages[-1]) <= limit
    assert store.listing(None, limit, None).families == {"geography": 30, "rfm": 3}


def test_one_family_is_listed_alone_and_a_family_the_run_lacks_is_empty(store):
    rfm = every_page(store, "rfm", 2)
    assert [[s["name"] for s in page] for page in rfm] == [["Loyal", "Champions"], ["At risk"]]
    cities = [s for page in every_page(store, "geography", 7) for s in page]
    assert [s["members"] for s in cities] == list(range(30, 0, -1))

    empty = store.listing("demographic", 10, None)
    assert (empty.segments, empty.next_cursor, empty.run) == ([], None, "r1")


def test_a_page_reads_only_the_index_parts_it_shows(store, moto_tables, monkeypatch):
    parts = [item for item in dynamo.client().scan(TableName=moto_tables["SegmentsTable"])["Items"]
             if item["segment_id"]["S"] == "#index"]
    assert len(parts) >= 6  # the head and at least five parts
    read = []
    batch_get = dynamo.batch_get
    monkeypatch.setattr(dynamo, "batch_get", lambda table, keys, **kw: read.extend(keys) or batch_get(table, keys, **kw))

    middle = store.listing("geography", 12, None).next_cursor
    for family, cursor in (("rfm", None), ("geography", None), ("geography", middle)):
        read.clear()
        assert len(store.listing(family, 3, cursor).segments) == 3
        # The head, and the parts the page is in besides: at most two for three entries of about
        # four a part.
        assert read[0] == INDEX_KEY and len(read) <= 3


def test_an_index_written_before_it_was_ordered_lists_the_same_pages(store, moto_tables):
    """Until the first nightly run after an upgrade, the index has no order, sizes or families: a
    listing reads it whole and orders it, with the same cursors."""
    before = every_page(store, None, 4), every_page(store, "rfm", 2), every_page(store, "geography", 7)
    dynamo.client().update_item(TableName=moto_tables["SegmentsTable"], Key=dynamo.serialize(INDEX_KEY),
                                UpdateExpression="REMOVE #order, sizes, families", ExpressionAttributeNames={"#order": "order"})

    assert (every_page(store, None, 4), every_page(store, "rfm", 2), every_page(store, "geography", 7)) == before
    assert [entry for page in before[0] for entry in page] == expected_order(run_rows())


def test_a_missing_index_part_leaves_a_gap_not_an_error(store, moto_tables):
    table = moto_tables["SegmentsTable"]
    part = next(item["sk"]["S"] for item in dynamo.client().scan(TableName=table)["Items"]
                if item["segment_id"]["S"] == "#index" and item["sk"]["S"] != "current")
    dynamo.client().delete_item(TableName=table, Key=dynamo.serialize({"segment_id": "#index", "sk": part}))

    listed = [s for page in every_page(store, None, 5) for s in page]
    whole = expected_order(run_rows())
    assert 0 < len(listed) < len(whole) and all(s in whole for s in listed)


@pytest.mark.parametrize("segments_of_part", [["x"], "x"], ids=["a list", "a text"])
def test_an_index_part_whose_segments_are_not_a_map_lists_none_of_them_not_a_500(api, moto_tables, monkeypatch,
                                                                                  segments_of_part):
    monkeypatch.setattr(segments, "PAGE_CHARACTERS", 1_500)
    table = moto_tables["SegmentsTable"]
    SegmentStore(table).write_run("r1", AT, members_by_segment(run_rows()))
    part = next(item["sk"]["S"] for item in dynamo.client().scan(TableName=table)["Items"]
                if item["segment_id"]["S"] == "#index" and item["sk"]["S"] != "current")
    set_on_index(table, {"segment_id": "#index", "sk": part}, "SET #segments = :x", {":x": segments_of_part},
                 {"#segments": "segments"})

    status, listing = api.json("GET", "/segments?limit=1000")
    whole = expected_order(run_rows())
    assert status == 200 and 0 < len(listing["segments"]) < len(whole), listing
    status, answer = api.json("POST", "/campaigns", {"name": "x", "channel": "email",
                                                     "segment_id": "geography:city-nowhere"})
    assert status == 404 and answer["error"]["fields"][0]["field"] == "segment_id", answer


def test_a_cursor_of_another_run_or_family_or_not_given_out_is_a_clear_400(store):
    rfm_cursor = store.listing("rfm", 1, None).next_cursor
    every_cursor = store.listing(None, 5, None).next_cursor  # its place is a city's
    for family, cursor in (("geography", rfm_cursor), (None, rfm_cursor), ("geography", every_cursor)):
        with pytest.raises(DomainError, match="for this family"):
            store.listing(family, 1, cursor)
    for cursor in ("nope", dynamo.encode_cursor("r1#rfm#x"), dynamo.encode_cursor("r1#rfm#9999"),
                   dynamo.encode_cursor("r1#30")):
        with pytest.raises(DomainError) as raised:
            store.listing(None, 5, cursor)
        assert raised.value.field == "cursor"

    store.write_run("r2", AT, members_by_segment(run_rows()[:3]))
    with pytest.raises(DomainError, match="older run"):
        store.listing("rfm", 1, rfm_cursor)


def test_before_any_run_the_listing_is_empty(moto_tables):
    listing = SegmentStore(moto_tables["SegmentsTable"]).listing(None, 10, None)
    assert (listing.run, listing.families, listing.segments, listing.next_cursor) == (None, {}, [], None)


def test_get_segments_pages_and_refuses_a_family_or_limit_it_does_not_know(api, moto_tables, monkeypatch):
    monkeypatch.setattr(segments, "PAGE_CHARACTERS", 1_500)
    SegmentStore(moto_tables["SegmentsTable"]).write_run("r1", AT, members_by_segment(run_rows()))

    status, first = api.json("GET", "/segments?family=geography&limit=10")
    assert status == 200 and first["run"] == "r1" and first["families"] == {"geography": 30, "rfm": 3}
    assert [s["members"] for s in first["segments"]] == list(range(30, 20, -1)) and first["custom"] == []
    status, second = api.json("GET", f"/segments?family=geography&limit=10&cursor={first['next_cursor']}")
    assert status == 200 and [s["members"] for s in second["segments"]] == list(range(20, 10, -1))

    for query, status, field in (("family=cities", 422, "family"), ("limit=0", 422, "limit"),
                                 ("limit=1001", 422, "limit"), ("cursor=nope", 400, "cursor")):
        answer = api.json("GET", f"/segments?{query}")
        assert (answer[0], answer[1]["error"]["fields"][0]["field"]) == (status, field), (query, answer)


def test_a_campaign_takes_a_segment_listed_in_a_later_part_of_the_index(api, moto_tables, monkeypatch):
    monkeypatch.setattr(segments, "PAGE_CHARACTERS", 1_500)
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", AT, members_by_segment(run_rows()))
    smallest_city = expected_order(run_rows())[29]["segment_id"]
    assert smallest_city not in dynamo.batch_get(moto_tables["SegmentsTable"], [INDEX_KEY])[0]["segments"]

    assert store.in_latest_run(smallest_city) and not store.in_latest_run("geography:city-nowhere")
    read = []
    batch_get = dynamo.batch_get
    monkeypatch.setattr(dynamo, "batch_get", lambda table, keys, **kw: read.extend(keys) or batch_get(table, keys, **kw))
    status, answer = api.json("POST", "/campaigns", {"name": "x", "channel": "email", "segment_id": smallest_city,
                                                     "dry_run": True})
    assert status == 202, answer
    # The index's own item and the segment's first page: none of the index's parts.
    assert [key for key in read if key["segment_id"] == "#index"] == [INDEX_KEY]
    status, answer = api.json("POST", "/campaigns", {"name": "x", "channel": "email",
                                                     "segment_id": "geography:city-nowhere"})
    assert status == 404 and answer["error"]["fields"][0]["field"] == "segment_id"


def test_a_segment_whose_pages_expired_is_still_known_while_the_index_lists_it(store, moto_tables):
    """No nightly run for over three days: the pages are gone (TTL), the index (kept 90 days) still
    lists the segment, and a campaign, which computes its audience now, may still take it."""
    table = moto_tables["SegmentsTable"]
    smallest_city = expected_order(run_rows())[29]["segment_id"]
    for item in dynamo.client().scan(TableName=table)["Items"]:
        if item["sk"]["S"].startswith("p#"):
            dynamo.client().delete_item(TableName=table, Key={"segment_id": item["segment_id"], "sk": item["sk"]})

    assert store.in_latest_run(smallest_city) and store.in_latest_run("rfm:at-risk")
    assert not store.in_latest_run("geography:city-nowhere") and not store.in_latest_run("nofamily:x")



def set_on_index(table: str, key: dict, expression: str, values: dict, names: dict | None = None) -> None:
    dynamo.client().update_item(TableName=table, Key=dynamo.serialize(key), UpdateExpression=expression,
                                ExpressionAttributeValues=dynamo.serialize(values),
                                **({"ExpressionAttributeNames": names} if names else {}))


@pytest.mark.parametrize("expression, values", [
    ("SET families.rfm = :x", {":x": "x"}),
    ("SET sizes = :x", {":x": ["x"]}),
    # Whole numbers, past the index: each page would be empty, with a cursor to the next, without end.
    ("SET families.rfm = :x", {":x": [0, 10**15]}),
    ("SET families.rfm = :x", {":x": [7, 3]}),
], ids=["families", "sizes", "a span past the index", "spans that overlap"])
def test_an_index_order_written_by_hand_is_read_whole_instead(api, moto_tables, expression, values):
    SegmentStore(moto_tables["SegmentsTable"]).write_run("r1", AT, members_by_segment(run_rows()[:40]))
    before = api.json("GET", "/segments?limit=100")[1]["segments"]
    set_on_index(moto_tables["SegmentsTable"], INDEX_KEY, expression, values)

    status, listing = api.json("GET", "/segments?limit=100")
    assert status == 200 and listing["segments"] == before and len(before) > 3
    assert listing["next_cursor"] is None


def test_index_entries_and_members_written_by_hand_are_left_out_not_a_500(api, moto_tables):
    table = moto_tables["SegmentsTable"]
    rows = [("rfm:champions", "rfm", "Champions", f"u-{n}", "bought often") for n in range(3)]
    rows += [("rfm:loyal", "rfm", "Loyal", "u-9", "comes back")]
    SegmentStore(table).write_run("r1", AT, members_by_segment(rows))
    set_on_index(table, INDEX_KEY, "SET #segments.#loyal.members = :x", {":x": "many"},
                 {"#segments": "segments", "#loyal": "rfm:loyal"})
    page = next(item for item in dynamo.client().scan(TableName=table)["Items"]
                if item["segment_id"]["S"] == "rfm:champions")
    set_on_index(table, {"segment_id": "rfm:champions", "sk": page["sk"]["S"]}, "SET #members.#u = :x", {":x": 7},
                 {"#members": "members", "#u": "u-1"})

    status, listing = api.json("GET", "/segments")
    assert status == 200 and [s["segment_id"] for s in listing["segments"]] == ["rfm:champions"]
    status, members = api.json("GET", "/segments/rfm%3Achampions/members")
    assert status == 200 and [m["user_id"] for m in members["members"]] == ["u-0", "u-2"]


@pytest.mark.parametrize("sk", ["p#r1#000001#x", "p#r1#00001x", "p#r1#\u0661\u0662\u0663\u0664\u0665\u0666"])
def test_an_item_in_a_segments_page_range_that_is_no_page_is_passed_over_not_a_500(api, moto_tables, sk):
    table = moto_tables["SegmentsTable"]
    rows = [("rfm:champions", "rfm", "Champions", f"u-{n}", "bought often") for n in range(3)]
    SegmentStore(table).write_run("r1", AT, members_by_segment(rows))
    dynamo.client().put_item(TableName=table, Item=dynamo.serialize(
        {"segment_id": "rfm:champions", "sk": sk, "members": {"u-zzz": "by hand"}}))

    status, members = api.json("GET", "/segments/rfm%3Achampions/members")
    assert status == 200 and [m["user_id"] for m in members["members"]] == ["u-0", "u-1", "u-2"], members


@pytest.mark.parametrize("damage", [{":x": "yesterday"}, {":x": 5}], ids=["a time that is none", "a number"])
def test_an_index_head_written_by_hand_lists_no_run_until_the_next_one_writes_it(api, moto_tables, damage):
    store = SegmentStore(moto_tables["SegmentsTable"])
    store.write_run("r1", AT, members_by_segment([("rfm:champions", "rfm", "Champions", "u-1", "bought often")]))
    set_on_index(moto_tables["SegmentsTable"], INDEX_KEY, "SET #at = :x", damage, {"#at": "at"})

    status, listing = api.json("GET", "/segments")
    assert status == 200 and listing["run"] is None and listing["segments"] == []
    assert api.json("GET", "/segments/rfm%3Achampions/members")[0] == 404
    store.write_run("r2", AT, members_by_segment([("rfm:champions", "rfm", "Champions", "u-1", "bought often")]))
    assert api.json("GET", "/segments")[1]["run"] == "r2"
