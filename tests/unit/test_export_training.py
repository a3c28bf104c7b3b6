"""The export path: DynamoDB's export files in, the same training data and segments out as the Scan path."""

from __future__ import annotations

import gc
import gzip
import inspect
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devstack.gateway import LambdaContext
from shared.storage import dynamo
from shared.storage.history import CustomerReads
from shared.storage.export_queries import QueryRun, read_ids, read_interactions, statements
from shared.storage.exports import INCREMENTAL, DamagedExport, Export, compressed_blocks, download_export, exports_in, file_checksums, gzip_lines, latest_chain, table_items, write_export
from shared.storage import training_data
from shared.storage.child_process import in_child
from shared.storage.training_data import (TableExports, interaction_row, interaction_rows, query_locally, read_nightly,
                                          read_nightly_from_exports)
from shared.storage.outcomes import outcomes_of_chain
from shared.storage.users import all_user_rows, read_recent
from shared.users import User
from shared.training.config import TrainingConfig
from shared.training.interactions import EVENT_CODES, InteractionLog, Interactions, TooManyInteractions
from tests.export_files import incremental_changes, write_changes
from tests.training_data import A_MODEL_SERVES, END, seed_demo_shop, store_events
from tests.conftest import MODEL_BUCKET
from tests.unit.test_training_reads_once import train_handler

NAMES = {code: name for name, code in EVENT_CODES.items()}


@pytest.fixture
def seeded(api, moto_tables) -> dict[str, str]:
    demo = seed_demo_shop(api, moto_tables["EventsTable"])
    # A purchase and its partial return, one returned in full, and a search: the window's rules, not only plain events.
    # The one returned in full is of a customer and an item with no other event: neither is read.
    buyer, item = demo.events[0]["user_id"], demo.items[0]["item_id"]
    returner, returned = "u-returned-all", "sku-returned-all"
    store_events(moto_tables["EventsTable"], [
        {"event_id": "x-buy", "user_id": buyer, "item_id": item, "event_type": "purchase", "quantity": 3, "price": 10, "currency": "EUR",
         "order_id": "o-x", "channel": "web", "timestamp": END.isoformat()},
        {"event_id": "x-return", "user_id": buyer, "item_id": item, "event_type": "return", "quantity": 1, "price": 10, "currency": "EUR",
         "order_id": "o-x", "channel": "web", "timestamp": END.isoformat()},
        {"event_id": "x-buy-all", "user_id": returner, "item_id": returned, "event_type": "purchase", "quantity": 1,
         "price": 10, "currency": "EUR", "order_id": "o-y", "channel": "web", "timestamp": END.isoformat()},
        {"event_id": "x-return-all", "user_id": returner, "item_id": returned, "event_type": "return", "quantity": 1,
         "price": 10, "currency": "EUR", "order_id": "o-y", "channel": "web", "timestamp": END.isoformat()},
        {"event_id": "x-search", "user_id": buyer, "event_type": "search", "properties": {"query": "lamp"}, "channel": "web", "timestamp": END.isoformat()},
    ])
    return moto_tables


def export_all(tables: dict[str, str], root: Path) -> TableExports:
    for logical_id in ("EventsTable", "UsersTable", "ItemsTable"):
        write_export(tables[logical_id], root / tables[logical_id])
    return TableExports(events=latest_chain(root / tables["EventsTable"]),
                        users=latest_chain(root / tables["UsersTable"]),
                        items=latest_chain(root / tables["ItemsTable"]))


def rows_of(interactions: Interactions) -> list[tuple[Any, ...]]:
    """Each interaction by ids, with the other interactions of its basket: indexes depend on read order."""
    baskets: dict[int, list[tuple[str, str, float]]] = {}
    keys = [(interactions.user_ids[u], interactions.item_ids[i], float(t))
            for u, i, t in zip(interactions.users, interactions.items, interactions.timestamps)]
    for key, basket in zip(keys, interactions.baskets):
        baskets.setdefault(int(basket), []).append(key)
    return sorted((*key, NAMES[int(code)], float(quantity), tuple(sorted(baskets[int(basket)])) if basket >= 0 else ())
                  for key, code, quantity, basket in zip(keys, interactions.event_codes, interactions.quantities,
                                                         interactions.baskets))


def demo_events(tables: dict[str, str]) -> list[dict[str, Any]]:
    return [dynamo.deserialize(item) for item in dynamo.client().scan(TableName=tables["EventsTable"])["Items"]]


def test_the_export_path_reads_exactly_what_the_scan_path_reads(api, seeded, tmp_path):
    """The interactions from the query stage (the export path's SQL, on DuckDB), the rest from the exports."""
    # Customers who come back through ingest get their recent-activity item, started from their
    # stored events; the others' histories are read by Query, as serving reads them.
    came_back = sorted({event["user_id"] for event in demo_events(seeded)})[:5]
    sent = [{"event_id": f"back-{n}", "user_id": user, "item_id": "sku-back", "event_type": "add_to_cart",
             "channel": "ios", "timestamp": END.isoformat()} for n, user in enumerate(came_back)]
    assert api.json("POST", "/events", {"events": sent})[0] == 200
    config, now = TrainingConfig(), datetime.now(timezone.utc)
    scanned = read_nightly(seeded["EventsTable"], seeded["UsersTable"], seeded["ItemsTable"], config, now)
    exports = export_all(seeded, tmp_path / "exports")
    exported = read_nightly_from_exports(exports, config, now, query_locally(exports.events, config, now, tmp_path),
                                         seeded["EventsTable"])

    ours, theirs = exported.training_data(), scanned.training_data()
    assert len(ours.interactions) > 100
    assert "sku-returned-all" not in theirs.interactions.item_ids and "u-returned-all" not in theirs.interactions.user_ids
    assert rows_of(ours.interactions) == rows_of(theirs.interactions)
    # The customers who objected are left out after the query's output is read: their ids, and the
    # ids of items only they touched, are gone as if never read.
    assert theirs.excluded_users > 0
    assert (set(ours.interactions.user_ids), set(ours.interactions.item_ids)) == (
        set(theirs.interactions.user_ids), set(theirs.interactions.item_ids))
    assert ours.customer_statistics == theirs.customer_statistics
    assert (ours.countries, ours.interests, ours.excluded_users) == (theirs.countries, theirs.interests,
                                                                      theirs.excluded_users)
    assert (ours.categories, ours.titles) == (theirs.categories, theirs.titles)
    # The segments' inputs too: every customer's profile and newest events, which are what serving reads.
    assert exported.segments.customers.users == scanned.segments.customers.users
    assert exported.segments.customers.histories == scanned.segments.customers.histories
    # As of the exports (the older of the users' and the events'): an erasure since is the segments' to apply.
    assert exported.segments.customers.as_of == min(exports.users[-1].time, exports.events[-1].time)
    assert scanned.segments.customers.as_of is None  # read just now
    assert len(read_recent(seeded["UsersTable"], list(exported.segments.customers.histories))) == len(came_back)
    served = CustomerReads(seeded["EventsTable"], seeded["UsersTable"])
    assert all(history == served.history([user]) for user, history in exported.segments.customers.histories.items())
    assert exported.segments.customers.histories[came_back[0]][0].item_id == "sku-back"


def test_export_files_are_dynamodbs_own_format(seeded, tmp_path):
    export = write_export(seeded["EventsTable"], tmp_path)
    summary = json.loads((tmp_path / next(tmp_path.glob("AWSDynamoDB/*/manifest-summary.json")).relative_to(tmp_path))
                         .read_text())
    assert summary["exportType"] == "FULL_EXPORT" and summary["outputFormat"] == "DYNAMODB_JSON"
    listing = [json.loads(line) for line in (tmp_path / summary["manifestFilesS3Key"]).read_text().splitlines()]
    lines = [json.loads(line) for entry in listing for line in gzip.open(tmp_path / entry["dataFileS3Key"], "rt")]
    assert sum(entry["itemCount"] for entry in listing) == summary["itemCount"] == len(lines) > 100
    assert all(set(line) == {"Item"} and line["Item"]["user_id"]["S"] for line in lines)
    assert export.kind == "FULL_EXPORT" and len(list(export.lines())) == len(lines)


def test_export_lines_are_read_whole_across_the_reading_blocks(tmp_path):
    lines = [json.dumps({"Item": {"user_id": {"S": f"u{n}" * (n % 7 + 1)}}}) for n in range(500)]
    path = tmp_path / "data.json.gz"
    path.write_bytes(gzip.compress(("\n".join(lines[:250]) + "\n\n" + "\n".join(lines[250:])).encode()))  # no last newline
    for block in (1, 7, 64, 1 << 20):  # blocks that cut lines anywhere, and one that holds the file
        assert [line.decode() for line in gzip_lines(path, block)] == lines


def test_lines_holding_a_text_are_those_of_every_line_that_hold_it_in_order(tmp_path):
    """The outcomes' read parses only the lines holding an outcome's type: found in each block,
    wherever it is in a line, however often, in the first or the last line of a block."""
    kinds = ['"view"', '"purchase"', '"click"', '"impression"', '"add_to_cart"']
    lines = [json.dumps({"Item": {"event_type": {"S": kinds[n % 5].strip('"')}, "n": {"N": str(n)}}})
             + (' "click" "click"' if n % 11 == 0 else "") for n in range(400)]
    lines[0] = '"purchase"' + lines[0]  # at a line's very start
    path = tmp_path / "data.json.gz"
    path.write_bytes(gzip.compress(("\n".join(lines[:200]) + "\n\n" + "\n".join(lines[200:])).encode()))
    needles = (b'"impression"', b'"click"', b'"purchase"')
    expected = [line for line in lines if any(needle.decode() in line for needle in needles)]
    assert 0 < len(expected) < len(lines)
    for block in (1, 7, 64, 1 << 20):
        assert [line.decode() for line in gzip_lines(path, block, holding=needles)] == expected


def compress_in_two_frames(text: bytes) -> bytes:
    """Zstandard, as a writer that flushes a frame at a time leaves it: the cut inside a line."""
    import zstandard

    half = len(text) // 2
    return zstandard.ZstdCompressor().compress(text[:half]) + zstandard.ZstdCompressor().compress(text[half:])


def write_queried(folder: Path, interactions: list[str], ids: list[dict[str, Any]], compress=compress_in_two_frames,
                  ) -> tuple[list[Path], list[Path]]:
    """Query output as the UNLOADs write it: lines of numbers, and the ids as JSON lines."""
    folder.mkdir()
    (folder / "interactions").write_bytes(compress(("\n".join(interactions) + "\n").encode()))
    (folder / "ids").write_bytes(compress("".join(json.dumps(row) + "\n" for row in ids).encode()))
    return [folder / "interactions"], [folder / "ids"]


def test_the_query_output_reads_in_zstandard_and_in_gzip_a_block_of_whole_lines_at_a_time(tmp_path):
    lines = [f"{n % 97},{n % 13},0,1.0,{1.7e9 + n / 7!r},-1" for n in range(3000)]
    ids = ([{"k": "u", "c": n, "id": f"u,{n}\n"} for n in range(100)]  # ids may hold commas and newlines
           + [{"k": "i", "c": n, "id": f"i{n}"} for n in range(13)])
    for name, compress in (("zstd", compress_in_two_frames), ("gzip", gzip.compress)):
        files, id_files = write_queried(tmp_path / name, lines, ids, compress)
        for block in (7, 4096, 1 << 20):
            assert b"\n".join(compressed_blocks(files[0], block)).decode().splitlines() == lines
        interactions = read_interactions(files, id_files, 10_000)
        assert len(interactions) == 3000 and len(interactions.item_ids) == 13
        assert interactions.user_ids == [f"u,{n}\n" for n in range(97)]  # the 98th and 99th have no interaction
        assert interactions.timestamps.tolist() == [1.7e9 + n / 7 for n in range(3000)]  # to the last bit


def test_the_query_output_reads_as_the_scan_path_builds_it(tmp_path):
    """Baskets ranked per customer become one number per basket across customers, and ids with no
    interaction are left out: the interactions and baskets InteractionLog gives (its numbering is
    in the order met, ours sorted by id)."""
    rows = [("b", "x", "purchase", 2.0, 10.0, "o1"), ("a", "x", "purchase", 1.0, 11.0, "o1"),
            ("b", "y", "purchase", 1.0, 12.0, "o1"), ("a", "z", "view", 1.0, 13.0, None),
            ("a", "y", "purchase", 1.0, 14.0, None), ("a", "z", "purchase", 1.0, 15.0, None),
            ("a", "x", "purchase", 1.0, 86_400.0 * 2, None)]
    users, items = ["a", "b", "c"], ["w", "x", "y", "z"]  # nobody interacted with c or w
    ranks = {("b", "o1"): 0, ("a", "o1"): 0, ("a", None, 0): 1, ("a", None, 2): 2}
    lines = [f"{users.index(u)},{items.index(i)},{EVENT_CODES[t]},{q},{s!r},"
             f"{ranks[(u, o) if o else (u, None, int(s // 86_400))] if t == 'purchase' else -1}" for u, i, t, q, s, o in rows]
    log = InteractionLog(limit=100)
    log.add_page(*zip(*rows))
    files, id_files = write_queried(tmp_path / "q", lines, [{"k": "u", "c": n, "id": user} for n, user in enumerate(users)]
                                    + [{"k": "i", "c": n, "id": item} for n, item in enumerate(items)])
    ours = read_interactions(files, id_files, 100)
    assert rows_of(ours) == rows_of(log.finish())
    assert (ours.user_ids, ours.item_ids) == (["a", "b"], ["x", "y", "z"])
    assert len(set(ours.baskets[ours.baskets >= 0].tolist())) == 4
    with pytest.raises(TooManyInteractions):
        read_interactions(files, id_files, 6)


def test_query_output_that_names_an_id_its_ids_lack_fails_the_read_and_says_so(tmp_path):
    files, id_files = write_queried(tmp_path / "q", ["0,0,0,1.0,1.0,-1", "0,5,0,1.0,2.0,-1"],
                                    [{"k": "u", "c": 0, "id": "a"}, {"k": "i", "c": 0, "id": "x"}])
    with pytest.raises(ValueError, match="item number its ids lack"):
        read_interactions(files, id_files, 100)
    _, gappy = write_queried(tmp_path / "gap", [], [{"k": "u", "c": 1, "id": "a"}, {"k": "i", "c": 0, "id": "x"}])
    with pytest.raises(ValueError, match="not numbered 0 to n - 1"):
        read_ids(gappy)


def write_incremental(root: Path, export_id: str, at: str, changes: list[dict[str, Any]]) -> None:
    """An incremental export as DynamoDB writes one: Keys, NewImage (absent for a delete)."""
    folder = Path("AWSDynamoDB") / export_id
    (root / folder / "data").mkdir(parents=True)
    write_changes(root / folder / "data" / "changes.json.gz", changes)
    (root / folder / "manifest-files.json").write_text(
        json.dumps({"itemCount": len(changes), "dataFileS3Key": str(folder / "data" / "changes.json.gz")}) + "\n")
    (root / folder / "manifest-summary.json").write_text(json.dumps(
        {"exportType": INCREMENTAL, "exportTime": at, "manifestFilesS3Key": str(folder / "manifest-files.json")}))


def test_incremental_exports_fold_onto_the_full_one_in_order(seeded, tmp_path):
    write_export(seeded["UsersTable"], tmp_path, now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    full = {item["user_id"]["S"]: item for item in table_items(latest_chain(tmp_path), ("user_id",))}
    first, second, *_ = sorted(full)
    changed = {**full[first], "country": {"S": "FR"}}
    added = dynamo.serialize({"user_id": "u-new", "country": "DE"})
    write_incremental(tmp_path, "b", "2026-12-01T06:00:00+00:00", [
        {"Keys": {"user_id": changed["user_id"]}, "NewImage": changed},
        {"Keys": {"user_id": {"S": "u-new"}}, "NewImage": added}])
    write_incremental(tmp_path, "c", "2026-12-01T12:00:00+00:00", [
        {"Keys": {"user_id": {"S": second}}},  # deleted: an erasure
        {"Keys": {"user_id": {"S": "u-new"}}, "NewImage": {**added, "country": {"S": "AT"}}}])

    assert [e.kind for e in exports_in(tmp_path)] == ["FULL_EXPORT", INCREMENTAL, INCREMENTAL]
    now = {item["user_id"]["S"]: item for item in table_items(latest_chain(tmp_path), ("user_id",))}
    assert now[first]["country"] == {"S": "FR"}
    assert second not in now
    assert now["u-new"]["country"] == {"S": "AT"}
    assert len(now) == len(full)  # one added, one deleted


def test_a_newer_full_export_starts_a_new_chain(seeded, tmp_path):
    write_export(seeded["ItemsTable"], tmp_path, now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    write_incremental(tmp_path, "b", "2026-12-01T06:00:00+00:00", [{"Keys": {"item_id": {"S": "gone"}}}])
    newest = write_export(seeded["ItemsTable"], tmp_path, now=datetime(2026, 12, 2, tzinfo=timezone.utc))
    assert latest_chain(tmp_path) == [newest]


def test_a_training_run_on_the_export_path_trains_from_the_exports(seeded, tmp_path, monkeypatch):
    export_root = tmp_path / "exports"
    export_all(seeded, export_root)
    monkeypatch.setenv("TRAINING_PATH", "export")
    monkeypatch.setenv("LOCAL_EXPORT_DIR", str(export_root))
    from shared.config import get_settings
    get_settings.cache_clear()
    handler = train_handler()
    # Events stored after the export are not in it: the run trains on the export, not the table.
    store_events(seeded["EventsTable"], [
        {"event_id": f"late-{n}", "user_id": "u-late", "item_id": "late-item", "event_type": "purchase", "price": 5, "currency": "EUR",
         "channel": "web", "timestamp": END.isoformat()} for n in range(3)])

    manifest = handler({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] in ("accepted", "rejected"), manifest["reason"]
    scanned = read_nightly(seeded["EventsTable"], seeded["UsersTable"], seeded["ItemsTable"], TrainingConfig(),
                           datetime.now(timezone.utc)).training_data()
    assert manifest["counts"]["interactions"] == len(scanned.interactions) - 3


def test_the_export_path_without_an_export_fails_the_run_and_says_what_to_do(seeded, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINING_PATH", "export")
    monkeypatch.setenv("LOCAL_EXPORT_DIR", str(tmp_path / "none"))
    from shared.config import get_settings
    get_settings.cache_clear()

    manifest = train_handler()({}, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "failed" and "run ./dev export" in manifest["reason"]


def test_customers_left_out_of_interactions_already_read_are_as_if_never_read():
    rng = np.random.default_rng(3)
    rows = [(f"u{rng.integers(30)}", f"i{rng.integers(50)}", ["view", "purchase", "add_to_cart"][rng.integers(3)],
             float(rng.integers(1, 3)), float(k), f"o{k % 7}") for k in range(2000)]
    rows.insert(0, ("u3", "only-u3-saw-this", "view", 1.0, 0.0, None))
    left_out = {"u3", "u7", "u11"}

    def read(kept: list[tuple]) -> Interactions:
        log = InteractionLog(limit=10_000)
        log.add_page(*zip(*kept))
        return log.finish()

    ours, theirs = read(rows).without_users(left_out), read([row for row in rows if row[0] not in left_out])
    assert (ours.user_ids, ours.item_ids) == (theirs.user_ids, theirs.item_ids)
    assert "only-u3-saw-this" not in ours.item_ids and not left_out & set(ours.user_ids)
    assert rows_of(ours) == rows_of(theirs)
    for column in ("users", "items", "event_codes", "quantities", "timestamps"):
        assert np.array_equal(getattr(ours, column), getattr(theirs, column)), column
    assert read(rows).without_users({"nobody"}).user_ids == read(rows).user_ids


def test_interaction_rows_compare_read_order_free():
    one = Interactions(["a", "b"], ["x"], np.array([0, 1], np.int32), np.array([0, 0], np.int32),
                       np.array([3, 3], np.int8), np.ones(2, np.float32), np.array([1.0, 2.0]), np.array([0, 1]))
    other = Interactions(["b", "a"], ["x"], np.array([1, 0], np.int32), np.array([0, 0], np.int32),
                         np.array([3, 3], np.int8), np.ones(2, np.float32), np.array([1.0, 2.0]), np.array([5, 7]))
    assert rows_of(one) == rows_of(other)
    other.quantities[0] = 2
    assert rows_of(one) != rows_of(other)


def incremental_export_of(table: str, root: Path, before: dict[tuple[str, ...], dict[str, Any]], export_id: str,
                          at: str, key_names: tuple[str, ...]) -> dict[tuple[str, ...], dict[str, Any]]:
    """What ExportTableToPointInTime's incremental export writes for the changes to `table` since
    `before` (its items by key): a NewImage for each new or changed item, Keys alone for a deleted one."""
    scratch = root.parent / f"{export_id}-scan"
    now = {tuple(item[k]["S"] for k in key_names): item for item in table_items(latest_chain(
        write_export(table, scratch).root), key_names)}
    write_incremental(root, export_id, at, incremental_changes(before, now, key_names))
    return now


def test_the_sql_folds_an_export_chain_as_the_table_stands_at_its_last_export(seeded, tmp_path):
    """A full export, then events added and one deleted (as an erasure deletes them), taken by an
    incremental export: the SQL over the chain gives the interactions of the table as it stands."""
    events, keys = seeded["EventsTable"], ("user_id", "event_id")
    full = write_export(events, tmp_path / "events", now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    before = {tuple(item[k]["S"] for k in keys): item for item in table_items([full], keys)}
    bought = next(item for item in before.values() if item["event_type"]["S"] == "purchase")
    dynamo.client().delete_item(TableName=events, Key={k: bought[k] for k in keys})
    store_events(events, [
        {"event_id": f"new-{n}", "user_id": "u-00002", "item_id": bought["item_id"]["S"], "event_type": "purchase",
         "price": 5, "currency": "EUR", "order_id": "o-new", "channel": "ios", "timestamp": END.isoformat()}
        for n in range(2)])
    incremental_export_of(events, tmp_path / "events", before, "inc-1", "2026-12-01T06:00:00+00:00", keys)
    chain = latest_chain(tmp_path / "events")
    assert [export.kind for export in chain] == ["FULL_EXPORT", INCREMENTAL]

    config, now = TrainingConfig(), datetime.now(timezone.utc)
    scanned = read_nightly(events, seeded["UsersTable"], seeded["ItemsTable"], config, now).training_data()
    exports = TableExports(events=chain, users=[write_export(seeded["UsersTable"], tmp_path / "users")],
                           items=[write_export(seeded["ItemsTable"], tmp_path / "items")])
    folded = read_nightly_from_exports(exports, config, now, query_locally(chain, config, now, tmp_path),
                                       events).training_data()

    assert rows_of(folded.interactions) == rows_of(scanned.interactions)
    ours = {(folded.interactions.user_ids[u], folded.interactions.item_ids[i])
            for u, i in zip(folded.interactions.users, folded.interactions.items)}
    assert ("u-00002", bought["item_id"]["S"]) in ours


def test_the_read_spread_over_processes_reads_what_the_scan_reads(seeded, tmp_path, monkeypatch):
    """The query's output read in a child process, what training uses of the customers in another,
    and the outcomes, after training, in a third, over a chain that changed, deleted and added
    events after the full export: histories, outcomes and training data are the Scan path's, as
    with the customers and the outcomes read here."""
    events, keys = seeded["EventsTable"], ("user_id", "event_id")
    # Touches in the full export too (the demo shop has none): its files are read for every kind of outcome.
    seen = next(event for event in demo_events(seeded) if event.get("item_id"))
    store_events(events, [
        {"event_id": "early-shown", "user_id": seen["user_id"], "event_type": "impression", "recommendation_id":
         "r1.abcdefgh.y", "items": [seen["item_id"]], "channel": "web", "timestamp": END.isoformat()},
        {"event_id": "early-clicked", "user_id": seen["user_id"], "item_id": seen["item_id"], "event_type": "click",
         "recommendation_id": "r1.abcdefgh.y", "channel": "web", "timestamp": END.isoformat()}])
    full = write_export(events, tmp_path / "events", now=datetime(2026, 12, 1, tzinfo=timezone.utc), items_per_file=60)
    assert len(full.data_files()) >= 6
    before = {tuple(item[k]["S"] for k in keys): item for item in table_items([full], keys)}
    views = [item for item in before.values() if item["event_type"]["S"] == "view"]
    dynamo.client().delete_item(TableName=events, Key={k: views[0][k] for k in keys})
    dynamo.client().update_item(TableName=events, Key={k: views[-1][k] for k in keys},
                                UpdateExpression="SET channel = :ios", ExpressionAttributeValues={":ios": {"S": "ios"}})
    # A purchase the outcomes count, erased after the full export: its line there is read, and dropped.
    counted = [item for item in before.values() if item["event_type"]["S"] == "purchase"
               and item["ts"]["S"] >= (END - timedelta(days=30)).isoformat()]
    dynamo.client().delete_item(TableName=events, Key={k: counted[0][k] for k in keys})
    buyer, item = views[1]["user_id"]["S"], views[1]["item_id"]["S"]
    store_events(events, [
        {"event_id": "shown", "user_id": buyer, "event_type": "impression", "recommendation_id": "r1.abcdefgh.x",
         "items": [item, views[2]["item_id"]["S"]], "channel": "web", "timestamp": END.isoformat()},
        {"event_id": "clicked", "user_id": buyer, "item_id": item, "event_type": "click",
         "recommendation_id": "r1.abcdefgh.x", "channel": "web", "timestamp": END.isoformat()},
        {"event_id": "bought", "user_id": buyer, "item_id": item, "event_type": "purchase", "price": 5,
         "currency": "EUR", "order_id": "o-late", "channel": "web", "timestamp": END.isoformat()}])
    incremental_export_of(events, tmp_path / "events", before, "inc-1", "2026-12-01T06:00:00+00:00", keys)
    chain = latest_chain(tmp_path / "events")

    config, now, since = TrainingConfig(), datetime.now(timezone.utc), (END - timedelta(days=30)).isoformat()
    scanned = read_nightly(events, seeded["UsersTable"], seeded["ItemsTable"], config, now, outcomes_since=since)
    exports = TableExports(events=chain, users=[write_export(seeded["UsersTable"], tmp_path / "users")],
                           items=[write_export(seeded["ItemsTable"], tmp_path / "items")])
    queried = query_locally(chain, config, now, tmp_path)
    assert scanned.outcomes is not None
    expected = scanned.outcomes.result()
    assert expected.touches and expected.purchases
    for in_children in (False, True):
        monkeypatch.setattr(training_data, "CUSTOMERS_IN_A_CHILD_FROM",
                            1 if in_children else training_data.CUSTOMERS_IN_A_CHILD_FROM)
        monkeypatch.setattr(training_data, "OUTCOMES_IN_A_CHILD_FROM_BYTES",
                            1 if in_children else training_data.OUTCOMES_IN_A_CHILD_FROM_BYTES)
        started: list[str] = []
        monkeypatch.setattr(training_data, "in_child", lambda function, *args: started.append(function.__name__)
                            or in_child(function, *args))
        read = read_nightly_from_exports(exports, config, now, queried, events, page_size=25, outcomes_since=since)
        assert read.outcomes is not None and "outcomes_of_chain" not in started
        read.outcomes.start()  # the handler starts it before the segments read their inputs
        assert ("outcomes_of_chain" in started) == in_children
        assert read.segments.customers.histories == scanned.segments.customers.histories
        outcomes = read.outcomes.result()
        assert sorted(map(repr, outcomes.touches)) == sorted(map(repr, expected.touches))
        assert sorted(map(repr, outcomes.purchases)) == sorted(map(repr, expected.purchases))
        assert rows_of(read.training_data().interactions) == rows_of(scanned.training_data().interactions)
        assert read.training_data().customer_statistics == scanned.training_data().customer_statistics


def hand_written_events(now: datetime) -> list[dict[str, Any]]:
    """Events no version of ingest writes, each named by its own item (`hw-<case>`), among the
    window's: what a script or a console may leave in the table."""
    day = (now - timedelta(days=2)).strftime("%Y-%m-%d")
    february = now.year if now.month > 2 else now.year - 1
    fine = {"ts": {"S": f"{day}T10:00:00.000000Z"}, "event_type": {"S": "view"}}
    cases = {
        "unknown-type": {"event_type": {"S": "wishlist"}}, "type-in-capitals": {"event_type": {"S": "VIEW"}},
        "type-a-number": {"event_type": {"N": "1"}}, "no-type": {"event_type": None},
        "time-not-a-time": {"ts": {"S": f"{day}Tgarbage"}}, "hour-25": {"ts": {"S": f"{day}T25:00:00.000000Z"}},
        "hour-24": {"ts": {"S": f"{day}T24:00:00.000000Z"}},
        "february-30": {"ts": {"S": f"{february}-02-30T10:00:00.000000Z"}},
        "offset": {"ts": {"S": f"{day}T10:00:00+00:00"}}, "date-alone": {"ts": {"S": day}},
        "no-zone": {"ts": {"S": f"{day}T10:00:00.000001"}}, "small-z": {"ts": {"S": f"{day}T10:00:00.000000z"}},
        "no-time": {"ts": None},
    }
    items = []
    for case, changes in cases.items():
        item = {"user_id": {"S": "u-hand"}, "event_id": {"S": f"hw-{case}"}, "item_id": {"S": f"hw-{case}"}, **fine,
                **changes}
        items.append({name: value for name, value in item.items() if value is not None})
    # An item named by a number or a null: no item, as a search (the SQL reads no text there).
    items += [{"user_id": {"S": "u-hand"}, "event_id": {"S": f"hw-item-{n}"}, "item_id": value, **fine}
              for n, value in enumerate(({"N": "7"}, {"NULL": True}))]
    purchase = {"user_id": {"S": "u-hand"}, "event_type": {"S": "purchase"}, "ts": fine["ts"]}
    return items + [
        # Beyond float32 (inf in the matrix, and no fit): counted as ingest's most units.
        {**purchase, "event_id": {"S": "hw-huge"}, "item_id": {"S": "hw-huge"}, "quantity": {"N": "1E+39"}},
        # A fraction bought and returned: both paths net it in the precision the matrix holds.
        {**purchase, "event_id": {"S": "hw-tenth"}, "item_id": {"S": "hw-tenth"}, "quantity": {"N": "0.1"}},
        {**purchase, "event_id": {"S": "hw-tenth-back"}, "item_id": {"S": "hw-tenth"}, "quantity": {"N": "0.1"},
         "event_type": {"S": "return"}},
        {**purchase, "event_id": {"S": "hw-kept"}, "item_id": {"S": "hw-kept"}},
        # DynamoDB's names are case-sensitive: Quantity is another attribute, which nothing reads.
        {**purchase, "event_id": {"S": "hw-cases"}, "item_id": {"S": "hw-cases"}, "quantity": {"N": "2"},
         "Quantity": {"N": "7"}, "Event_Type": {"S": "view"}},
        # A return at a time that does not exist takes nothing back.
        {**purchase, "event_id": {"S": "hw-kept-back"}, "item_id": {"S": "hw-kept"}, "event_type": {"S": "return"},
         "ts": {"S": f"{february}-02-30T10:00:00.000000Z"}},
    ]


def test_events_written_by_hand_are_left_out_alike_by_both_paths_and_cost_no_other_its_place(
        seeded, tmp_path, monkeypatch):
    now = datetime.now(timezone.utc)
    for item in hand_written_events(now):
        dynamo.client().put_item(TableName=seeded["EventsTable"], Item=item)
    # Binary attributes on a customer and an item (an export writes them as base64 text).
    dynamo.client().put_item(TableName=seeded["UsersTable"], Item={
        "user_id": {"S": "u-hand"}, "country": {"S": "DE"}, "avatar": {"B": b"\x89PNG"}, "keys": {"BS": [b"b", b"a"]}})
    dynamo.client().put_item(TableName=seeded["ItemsTable"], Item={
        "item_id": {"S": "hw-kept"}, "category": {"S": "lamps"}, "title": {"S": "Lamp"}, "thumb": {"B": b"\x89PNG"},
        "sizes": {"BS": [b"m", b"l"]}})
    config = TrainingConfig()
    scanned = read_nightly(seeded["EventsTable"], seeded["UsersTable"], seeded["ItemsTable"], config, now)
    exports = export_all(seeded, tmp_path / "exports")
    exported = read_nightly_from_exports(exports, config, now, query_locally(exports.events, config, now, tmp_path),
                                         seeded["EventsTable"])

    ours, theirs = exported.training_data().interactions, scanned.training_data().interactions
    assert rows_of(ours) == rows_of(theirs)
    assert exported.segments.customers.users == scanned.segments.customers.users
    assert exported.segments.customers.users["u-hand"].country == "DE"
    assert exported.training_data().categories == scanned.training_data().categories
    assert exported.training_data().categories["hw-kept"] == "lamps"
    by_hand = {(item, quantity) for user, item, _, _, quantity, _ in rows_of(ours) if user == "u-hand"}
    assert by_hand == {("hw-huge", 100_000.0), ("hw-kept", 1.0), ("hw-cases", 2.0)}
    assert len(ours) > 100  # the shop's own events are all there
    # And a whole run trains on each path.
    export_all(seeded, tmp_path / "again")
    monkeypatch.setenv("LOCAL_EXPORT_DIR", str(tmp_path / "again"))
    from shared.config import get_settings
    for path in ("scan", "export"):
        monkeypatch.setenv("TRAINING_PATH", path)
        get_settings.cache_clear()
        manifest = train_handler()({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))
        assert manifest["status"] in ("accepted", "rejected"), manifest["reason"]
        assert manifest["counts"]["interactions"] == len(theirs)


def test_an_incremental_export_of_a_quiet_period_has_no_data_files_and_changes_nothing(seeded, tmp_path):
    events = seeded["EventsTable"]
    full = write_export(events, tmp_path / "events", now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    # No change since the full export: the manifest lists no data file, and there is no data folder.
    folder = tmp_path / "events" / "AWSDynamoDB" / "quiet"
    folder.mkdir(parents=True)
    (folder / "manifest-files.json").write_text("")
    (folder / "manifest-summary.json").write_text(json.dumps(
        {"exportType": INCREMENTAL, "exportTime": "2026-12-01T06:00:00+00:00", "itemCount": 0,
         "manifestFilesS3Key": "AWSDynamoDB/quiet/manifest-files.json"}))
    chain = latest_chain(tmp_path / "events")
    assert [export.kind for export in chain] == ["FULL_EXPORT", INCREMENTAL] and chain[0] == full

    config, now = TrainingConfig(), datetime.now(timezone.utc)
    scanned = read_nightly(events, seeded["UsersTable"], seeded["ItemsTable"], config, now).training_data()
    exports = TableExports(events=chain, users=[write_export(seeded["UsersTable"], tmp_path / "users")],
                           items=[write_export(seeded["ItemsTable"], tmp_path / "items")])
    read = read_nightly_from_exports(exports, config, now, query_locally(chain, config, now, tmp_path), events)

    assert len(scanned.interactions) > 100
    assert rows_of(read.training_data().interactions) == rows_of(scanned.interactions)


def test_a_page_of_events_reads_as_each_event_reads_on_its_own():
    """The Scan path reads a page at once when every event is as ingest stores it: a time holding
    two times on two lines is not, though each line is."""
    start, end = "2026-01-01T00:00:00.000000Z", "2026-12-31T00:00:00.000000Z"
    at = "2026-06-01T10:00:00.000000Z"

    def stored(event_id: str, event_type: str = "purchase", ts: str = at) -> dict[str, Any]:
        return {"user_id": {"S": "u-1"}, "event_id": {"S": event_id}, "item_id": {"S": "sku-1"},
                "event_type": {"S": event_type}, "ts": {"S": ts}, "quantity": {"N": "2"}}

    page = [stored("e-1"), stored("e-2", "view"), stored("e-3", "return", f"{at}\n{at}")]
    one_by_one = [row for item in page if (row := interaction_row(item, start, end)) is not None]
    assert interaction_rows(page, start, end) == one_by_one
    assert [row[2] for row in one_by_one] == ["purchase", "view"]


def test_athena_matches_the_exports_names_by_case_as_duckdb_and_the_scan_path_do():
    """Athena's JSON SerDe folds names to lower case by default, and fails the whole query on a line
    holding two names that differ only by case (an item written by hand with quantity and
    Quantity). The table turns that off, and maps each name of its columns that is not in lower
    case (Athena's own names for columns and fields are), so that each still reads."""
    run = QueryRun(database="db", run_id="r-1", events_data=("s3://b/e/0/data/",), output="s3://b/o/", ids="s3://b/i/")
    create = statements(run, "2026-01-01T00:00:00.000000Z", "2026-12-01T00:00:00.000000Z")["create"]

    properties = dict(re.findall(r"'([\w.]+)'='(\w+)'", create.split("WITH SERDEPROPERTIES", 1)[1]))
    assert properties.pop("case.insensitive") == "false"
    columns = create.split("(", 1)[1].split(") PARTITIONED BY", 1)[0]
    mixed_case = {name for name in re.findall(r"(\w+)[ :]", columns) if name != name.lower()}
    assert mixed_case >= {"Item", "Keys", "NewImage", "S", "N"}
    assert properties == {f"mapping.{name.lower()}": name for name in mixed_case}



@pytest.mark.parametrize("table, damage", [("events", "missing"), ("events", "truncated"), ("users", "empty"),
                                           ("items", "truncated"), ("users", "whole but short"),
                                           ("items", "garbled")])
def test_a_damaged_export_is_read_by_no_reader_and_the_refusal_names_the_file(seeded, tmp_path, table, damage):
    """A data file the manifest lists that is gone, empty or cut short (an interrupted copy): the
    query and each reader refuse the export rather than read part of the table."""
    exports = export_all(seeded, tmp_path / "exports")
    victim = damaged(getattr(exports, table)[0], damage)
    config, now = TrainingConfig(), datetime.now(timezone.utc)

    with pytest.raises(DamagedExport, match=re.escape(victim.name)):
        read_nightly_from_exports(exports, config, now, query_locally(exports.events, config, now, tmp_path),
                                  seeded["EventsTable"], outcomes_since="2000-01-01T00:00:00Z")


def test_a_users_export_cut_at_a_gzip_members_end_is_refused_not_read_without_the_customers_it_lost(
        seeded, tmp_path):
    """A file cut where a gzip member ends is a whole stream: only the manifest's item count tells.
    Read as it stood, a customer who objected to profiling would be trained on, being gone."""
    exports = export_all(seeded, tmp_path / "exports")
    victim = damaged(exports.users[0], "whole but short")

    refusal = re.escape(f"{victim} is not whole: ") + r"[\d,]+ lines where its manifest lists [\d,]+ items"
    with pytest.raises(DamagedExport, match=refusal):
        list(table_items(exports.users, ("user_id",)))


def test_a_data_file_the_manifest_lists_with_no_items_is_not_read_whatever_its_bytes(seeded, tmp_path):
    """DynamoDB writes a file for each empty partition, and its docs do not say whether it is an
    empty gzip stream or no bytes: either way the export reads, by the readers and by the query,
    as the files with items say."""
    exports = export_all(seeded, tmp_path / "exports")
    config, now = TrainingConfig(), datetime.now(timezone.utc)
    expected = read_nightly_from_exports(exports, config, now, query_locally(exports.events, config, now, tmp_path / "a"),
                                         seeded["EventsTable"]).training_data()
    for export in (exports.events[0], exports.users[0]):
        listing = export.root / export.summary["manifestFilesS3Key"]
        empty = export.data_files()[0].parent / "empty-partition.json.gz"
        empty.write_bytes(b"")
        entry = {"itemCount": 0, "dataFileS3Key": str(empty.relative_to(export.root))}
        listing.write_text(listing.read_text() + json.dumps(entry) + "\n")

    read = read_nightly_from_exports(exports, config, now, query_locally(exports.events, config, now, tmp_path / "b"),
                                     seeded["EventsTable"]).training_data()

    assert rows_of(read.interactions) == rows_of(expected.interactions) and len(expected.interactions) > 100
    assert read.customer_statistics == expected.customer_statistics and read.excluded_users == expected.excluded_users


def test_a_line_of_the_events_export_without_an_item_gives_the_query_no_row_and_no_id(seeded, tmp_path):
    """Not DynamoDB's (the readers in Python refuse such a file); the query, single export or
    chain, leaves it out rather than hand the nightly reads a customer with no id."""
    exports = export_all(seeded, tmp_path / "exports")
    config, now = TrainingConfig(), datetime.now(timezone.utc)
    expected = read_ids(query_locally(exports.events, config, now, tmp_path / "a").ids)
    export = exports.events[0]
    victim = export.data_files()[0]
    no_customer = {"event_id": {"S": "x"}, "item_id": {"S": "sku-x"}, "event_type": {"S": "view"}, "ts": {"S": END_STAMP}}
    as_if_written_so(export, victim, b'{"Item": null}\n{}\n' + json.dumps({"Item": no_customer}).encode() + b"\n")

    queried = query_locally(exports.events, config, now, tmp_path / "b")
    ids = read_ids(queried.ids)

    assert None not in ids.users and ids == expected and len(ids.users) > 10
    assert "sku-x" not in read_interactions(queried.interactions, queried.ids, 10**6).item_ids


END_STAMP = END.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_if_written_so(export: Export, victim: Path, lines: bytes) -> None:
    """`lines` added to a data file of `export`, its manifest's count and checksums with them, as if
    DynamoDB had written it so: only a reader that reads the lines can tell."""
    victim.write_bytes(gzip.compress(gzip.decompress(victim.read_bytes()) + lines))
    listing = export.root / export.summary["manifestFilesS3Key"]
    entries = [json.loads(line) for line in listing.read_text().splitlines()]
    entry = next(entry for entry in entries if export.root / entry["dataFileS3Key"] == victim)
    entry["itemCount"] += lines.count(b"\n")
    entry.update(file_checksums(victim))
    listing.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


@pytest.mark.parametrize("line", [b'{"Item": {"user_id": {"S": "u-9"}} and then', b"[1, 2]", b'{"Item": "a text"}',
                                  b'{"Item": {"user_id": "not DynamoDB JSON", "item_id": {"S": "i"}}}'])
def test_a_line_of_the_events_export_that_is_not_an_item_fails_the_query_naming_the_file(seeded, tmp_path, line):
    """Not what DynamoDB writes, in a file whose checksum its manifest gives (so by hand, or a
    manifest written again): the run is refused naming the file, not an error of DuckDB's."""
    exports = export_all(seeded, tmp_path / "exports")
    victim = exports.events[0].data_files()[0]
    as_if_written_so(exports.events[0], victim, line + b"\n")
    config, now = TrainingConfig(), datetime.now(timezone.utc)

    with pytest.raises(DamagedExport, match=re.escape(f"export file {victim} is not DynamoDB's export format")):
        query_locally(exports.events, config, now, tmp_path / "q")


@pytest.mark.parametrize("change", ["twice", "climbing", "absolute"])
def test_a_listing_naming_a_file_twice_or_outside_the_export_is_refused(seeded, tmp_path, change):
    """A file listed twice would be read twice by the readers that follow the listing (the outcomes
    counted twice) and once by the query; a key outside the export would be read, or downloaded
    to, where the export is not."""
    export = write_export(seeded["UsersTable"], tmp_path / "users", items_per_file=20)
    listing = export.root / export.summary["manifestFilesS3Key"]
    entries = [json.loads(line) for line in listing.read_text().splitlines()]
    if change == "twice":
        entries.append(entries[0])
    else:
        entries[0]["dataFileS3Key"] = ("../" + entries[0]["dataFileS3Key"] if change == "climbing"
                                       else str(export.root / entries[0]["dataFileS3Key"]))
    listing.write_text("".join(json.dumps(entry) + "\n" for entry in entries))

    with pytest.raises(DamagedExport, match=re.escape(f"{listing} is not a manifest of data files")):
        list(table_items([export], ("user_id",)))


@pytest.mark.parametrize("written", [
    '{"exportType": "FULL_EXPORT", "exportTi', '{"exportType": "FULL_EXPORT"}', "[]",
    # A type of neither kind: skipped, an incremental export's deletes would be lost from the chain.
    '{"exportType": "Incremental", "exportToTime": "2026-12-01T00:00:00+00:00", "manifestFilesS3Key": "m"}',
    '{"exportType": "FULL_EXPORT", "exportTime": "2026-12-01T00:00:00", "manifestFilesS3Key": "m"}',  # no zone
    '{"exportType": "FULL_EXPORT", "exportTime": "2026-12-01T00:00:00Z", "manifestFilesS3Key": "m", "itemCount": "many"}',
])
def test_a_manifest_summary_that_does_not_read_is_refused_naming_it(seeded, tmp_path, written):
    """An interrupted copy, or a file put there by hand: the night says which file, not a JSONDecodeError."""
    write_export(seeded["ItemsTable"], tmp_path / "items")
    bad = tmp_path / "items" / "AWSDynamoDB" / "by-hand" / "manifest-summary.json"
    bad.parent.mkdir()
    bad.write_text(written)

    with pytest.raises(DamagedExport, match=re.escape(f"{bad} is not a whole manifest summary")):
        latest_chain(tmp_path / "items")


def test_a_damaged_export_fails_the_run_saying_which_file_and_what_to_do(seeded, tmp_path, monkeypatch):
    export_root = tmp_path / "exports"
    victim = damaged(export_all(seeded, export_root).events[0], "truncated")
    monkeypatch.setenv("TRAINING_PATH", "export")
    monkeypatch.setenv("LOCAL_EXPORT_DIR", str(export_root))
    from shared.config import get_settings
    get_settings.cache_clear()

    manifest = train_handler()({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "failed" and manifest["artifact"] is None
    assert victim.name in manifest["reason"] and "take a new full export" in manifest["reason"], manifest["reason"]
    assert "unexpected error" not in manifest["reason"]


def damaged(export: Export, damage: str) -> Path:
    """The export's first data file, gone, emptied, cut in half, holding a purchase's line that is
    not JSON, or a whole gzip stream of its first half's lines (cut at a gzip member's end)."""
    victim = export.data_files()[0]
    if damage == "missing":
        victim.unlink()
    elif damage == "garbled":
        victim.write_bytes(gzip.compress(b'{"Item": {"event_type": {"S": "purchase"}} and then not JSON\n'))
    elif damage == "whole but short":
        lines = gzip.decompress(victim.read_bytes()).splitlines(keepends=True)
        victim.write_bytes(gzip.compress(b"".join(lines[:len(lines) // 2])))
    else:
        whole = victim.read_bytes()
        victim.write_bytes(whole[:len(whole) // 2] if damage == "truncated" else b"")
    return victim


def test_an_export_in_s3_whose_manifest_lists_a_file_the_bucket_lacks_is_refused_on_download(seeded, tmp_path):
    export = write_export(seeded["UsersTable"], tmp_path / "local", items_per_file=20)
    s3 = dynamo.boto3.client("s3")
    files = sorted(path for path in (tmp_path / "local").rglob("*") if path.is_file())
    lost = export.data_files()[1]
    for path in files:
        if path != lost:
            s3.upload_file(str(path), MODEL_BUCKET, str(path.relative_to(tmp_path / "local")))
    summary_key = str(next(path for path in files if path.name == "manifest-summary.json").relative_to(tmp_path / "local"))

    with pytest.raises(DamagedExport, match=re.escape(f"s3://{MODEL_BUCKET}/{lost.relative_to(tmp_path / 'local')} is missing")):
        download_export(MODEL_BUCKET, summary_key, tmp_path / "downloaded")
    s3.upload_file(str(lost), MODEL_BUCKET, str(lost.relative_to(tmp_path / "local")))
    assert list(download_export(MODEL_BUCKET, summary_key, tmp_path / "again").lines()) == list(export.lines())


def test_a_damaged_file_read_in_a_child_process_is_refused_as_it_is_in_this_one(seeded, tmp_path):
    """The outcomes are read in a child process past a size: a cut-short file there is the same
    refusal, not a child that 'ended with no answer'."""
    export = write_export(seeded["EventsTable"], tmp_path / "events")
    cut = damaged(export, "truncated")

    with pytest.raises(DamagedExport, match=re.escape(f"{cut} is not a whole gzip stream")):
        in_child(outcomes_of_chain, [export], "2000-01-01T00:00:00Z", 100, {}).result()


def test_outcomes_whose_result_is_never_taken_stop_their_child_on_close(monkeypatch):
    """The handler closes them whatever happened meanwhile: a night that fails in the segments
    leaves no reader running into the next invocation of a warm function."""
    from shared.storage.training_data import LaterOutcomes
    from tests.unit.test_child_process import sleeps

    started = []
    monkeypatch.setattr(training_data, "in_child", lambda function, *args: started.append(in_child(function, *args))
                        or started[-1])
    later = LaterOutcomes(sleeps, 60, in_a_child=True)
    later.start()
    assert started[0].process.poll() is None
    later.close()
    assert started[0].process.poll() is not None


def live_customers() -> int:
    gc.collect()
    return sum(isinstance(thing, User) for thing in gc.get_objects())


@pytest.mark.parametrize("in_a_child", [False, True])
def test_training_on_the_export_path_holds_no_customer_and_the_segments_read_them_after_it(
        seeded, tmp_path, monkeypatch, in_a_child):
    """The fits need the customers' countries, interests and statistics, not the customers: at
    500,000 they are 400 MB of the run's peak. A large users export is read for them in a child
    process (the customers it makes are gone with it), a small one in this one."""
    exports = export_all(seeded, tmp_path / "exports")
    config, now = TrainingConfig(), datetime.now(timezone.utc)
    scanned = read_nightly(seeded["EventsTable"], seeded["UsersTable"], seeded["ItemsTable"], config, now)
    expected = scanned.training_data()
    del scanned
    if in_a_child:
        monkeypatch.setattr(training_data, "CUSTOMERS_IN_A_CHILD_FROM", 1)
    started: list[str] = []
    monkeypatch.setattr(training_data, "in_child", lambda function, *args: started.append(function.__name__)
                        or in_child(function, *args))
    before = live_customers()

    read = read_nightly_from_exports(exports, config, now, query_locally(exports.events, config, now, tmp_path),
                                     seeded["EventsTable"])
    training = read.training_data()

    assert live_customers() == before
    assert (training.customer_statistics, training.countries, training.interests, training.excluded_users) == (
        expected.customer_statistics, expected.countries, expected.interests, expected.excluded_users)
    # Those left out are the same customers, not only as many: their interactions are gone alike.
    assert rows_of(training.interactions) == rows_of(expected.interactions)
    assert expected.excluded_users > 0 and expected.interests
    assert ("training_customers" in started) == in_a_child
    stored = len(all_user_rows(seeded["UsersTable"]))
    assert len(read.segments.customers.users) == stored > 0
    assert live_customers() == before + stored


UNREADABLE_ROW = "a customer's stored row does not read"


@pytest.mark.parametrize("in_a_child", [False, True])
def test_a_customer_row_that_does_not_read_is_logged_once_by_the_export_paths_reads(
        seeded, tmp_path, monkeypatch, caplog, capfd, in_a_child):
    """The users export is read for training's customers, then again for the segments: the
    operator sees each row that does not read once, also when the first read ran in a child."""
    customer = next(iter(all_user_rows(seeded["UsersTable"])))
    dynamo.client().update_item(TableName=seeded["UsersTable"], Key={"user_id": {"S": customer}},
                                UpdateExpression="SET country = :n", ExpressionAttributeValues={":n": {"N": "12"}})
    exports = export_all(seeded, tmp_path / "exports")
    if in_a_child:
        monkeypatch.setattr(training_data, "CUSTOMERS_IN_A_CHILD_FROM", 1)
    config, now = TrainingConfig(), datetime.now(timezone.utc)
    capfd.readouterr()

    read = read_nightly_from_exports(exports, config, now, query_locally(exports.events, config, now, tmp_path),
                                     seeded["EventsTable"])
    read.training_data()
    users = read.segments.customers.users

    assert customer in users and users[customer].country is None
    here = sum(record.getMessage().startswith(UNREADABLE_ROW) for record in caplog.records)
    from_the_child = capfd.readouterr().err.count(UNREADABLE_ROW)
    assert here + from_the_child == 1
    assert from_the_child == in_a_child


@pytest.mark.parametrize("table, damage, lost", [("users", "missing", "segments not materialized"),
                                                 ("users", "garbled", "segments not materialized"),
                                                 ("users", "whole but short", "segments not materialized"),
                                                 ("events", "missing", "experiment results not written"),
                                                 ("events", "garbled", "experiment results not written")])
def test_an_export_damaged_after_training_leaves_the_model_and_says_what_was_not_written(
        seeded, tmp_path, monkeypatch, caplog, table, damage, lost):
    """The segments read the users export again after training, and the outcomes are read from the
    events export then (here in a child process): a file gone by then (deleted by hand) costs that
    night's segments, or its experiment results and attribution report, not the model, and the log
    names the file."""
    export_root = tmp_path / "exports"
    exports = export_all(seeded, export_root)
    monkeypatch.setattr(training_data, "OUTCOMES_IN_A_CHILD_FROM_BYTES", 1)
    monkeypatch.setenv("TRAINING_PATH", "export")
    monkeypatch.setenv("LOCAL_EXPORT_DIR", str(export_root))
    from shared.config import get_settings
    get_settings.cache_clear()
    handler = train_handler()
    module = inspect.unwrap(handler).__globals__
    trained = module["run_training"]
    victims: list[Path] = []

    def then_damaged(*args: Any, **kwargs: Any) -> Any:
        manifest = trained(*args, **kwargs)
        victims.append(damaged(getattr(exports, table)[0], damage))
        return manifest

    monkeypatch.setitem(module, "run_training", then_damaged)

    manifest = handler({"config": A_MODEL_SERVES}, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] in ("accepted", "rejected"), manifest["reason"]
    [failure] = [record for record in caplog.records if record.getMessage() == lost]
    assert victims[0].name in failure.reason and "take a new full export" in failure.reason
    others = {"segments not materialized", "experiment results not written"} - {lost}
    assert not [record for record in caplog.records if record.getMessage() in others]
