"""The query stage reads an export's data folder whole (Athena, and DuckDB on one machine): before
it does, the folder must hold the files the manifest lists, as DynamoDB wrote them, and no other.
Else the run fails before it trains, naming the file, rather than train on part of the table."""

from __future__ import annotations

import gzip
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

from shared.storage.export_queries import export_queries, read_ids
from shared.storage.exports import DamagedExport, Export, file_checksums, write_export
from shared.storage.training_data import query_locally
from shared.training.config import TrainingConfig
from tests.conftest import MODEL_BUCKET
from tests.training_data import END, store_events

CONFIG = TrainingConfig()


@pytest.fixture
def events_export(moto_tables, tmp_path) -> Export:
    """An events export of 120 purchases in four files."""
    store_events(moto_tables["EventsTable"], [
        {"event_id": f"e{n}", "user_id": f"u{n % 30}", "item_id": f"i{n % 7}", "event_type": "purchase", "quantity": 1,
         "price": 5, "currency": "EUR", "order_id": f"o{n}", "channel": "web",
         "timestamp": (END - timedelta(hours=n)).isoformat()} for n in range(120)])
    return write_export(moto_tables["EventsTable"], tmp_path / "exports", items_per_file=30)


def half_of(path: Path) -> bytes:
    """The file's first half of lines, as a whole gzip stream: read alone, nothing says a line is missing."""
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    return gzip.compress(b"".join(lines[:len(lines) // 2]))


def test_the_local_query_refuses_an_export_whose_file_was_replaced_before_it_reads_a_line(events_export, tmp_path):
    whole = query_locally([events_export], CONFIG, END, tmp_path / "whole")
    assert whole.interactions and whole.ids  # the export as written reads
    victim = events_export.data_files()[2]
    victim.write_bytes(half_of(victim))

    with pytest.raises(DamagedExport, match=re.escape(f"{victim} is not the file its manifest lists (MD5 ")):
        query_locally([events_export], CONFIG, END, tmp_path / "after")
    assert not (tmp_path / "after" / "interactions").exists()  # refused before the query ran


@pytest.mark.parametrize("change", ["rewritten", "replaced", "deleted", "added"])
def test_the_local_query_refuses_an_export_whose_folder_changed_while_it_read_it(events_export, tmp_path, monkeypatch,
                                                                                 change):
    from shared.storage import duckdb_athena

    victim = events_export.data_files()[2]
    run_statements = duckdb_athena.run_statements

    def changing_as_it_reads(statements, resolve):
        if change == "rewritten":  # in place: the same inode, written again
            with victim.open("r+b") as data:
                data.write(half_of(victim))
                data.truncate()
        elif change == "replaced":  # a copy moved over it, as an editor saves
            copy = victim.with_name("_copy")
            copy.write_bytes(half_of(victim))
            copy.replace(victim)
        elif change == "deleted":
            victim.unlink()
        else:
            (victim.parent / "copied-from-another-export.json.gz").write_bytes(victim.read_bytes())
        (victim.parent / ".hidden-and-never-read").write_bytes(b"x")  # a name no query reads: no change
        return run_statements(statements, resolve)

    monkeypatch.setattr(duckdb_athena, "run_statements", changing_as_it_reads)
    named = victim.name if change != "added" else "copied-from-another-export.json.gz"

    with pytest.raises(DamagedExport, match=re.escape(f"{victim.parent / named} is not as it stood before the query "
                                                      f"read its folder")):
        query_locally([events_export], CONFIG, END, tmp_path / "during")


def test_the_local_query_passes_a_folder_that_only_gained_a_hidden_file(events_export, tmp_path, monkeypatch):
    from shared.storage import duckdb_athena

    run_statements = duckdb_athena.run_statements

    def adding_a_hidden_file(statements, resolve):
        (events_export.data_files()[0].parent / "_SUCCESS").write_bytes(b"")
        return run_statements(statements, resolve)

    monkeypatch.setattr(duckdb_athena, "run_statements", adding_a_hidden_file)

    assert read_ids(query_locally([events_export], CONFIG, END, tmp_path / "hidden").ids).users


def intruders(path: Path) -> bytes:
    """The file's events, each of a customer of its own ("intruder..."): whose they are tells who read them."""
    return gzip.compress(gzip.decompress(path.read_bytes()).replace(b'"user_id":{"S":"u', b'"user_id":{"S":"intruder'))


def test_the_local_query_refuses_a_file_its_manifest_does_not_list_and_skips_hidden_ones_as_athena_does(
        events_export, tmp_path):
    folder = events_export.data_files()[0].parent
    for hidden in ("_copy.json.gz", ".copy.json.gz"):  # names Athena does not read
        (folder / hidden).write_bytes(intruders(events_export.data_files()[0]))
    ids = read_ids(query_locally([events_export], CONFIG, END, tmp_path / "hidden").ids)
    assert len(ids.users) == 30 and not any(user.startswith("intruder") for user in ids.users)
    stray = folder / "copied-from-another-export.json.gz"
    stray.write_bytes(events_export.data_files()[0].read_bytes())

    with pytest.raises(DamagedExport, match=re.escape(f"{stray} is not listed in its export's manifest")):
        query_locally([events_export], CONFIG, END, tmp_path / "stray")


def upload(export: Export) -> str:
    """The export's files in the bucket at their keys (as DynamoDB lays them out); its summary's key."""
    s3 = boto3.client("s3")
    for path in export.root.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), MODEL_BUCKET, str(path.relative_to(export.root)))
    return next(str(path.relative_to(export.root)) for path in export.root.rglob("manifest-summary.json"))


def queries(summary_key: str) -> dict[str, str]:
    return export_queries(MODEL_BUCKET, "shoprecs", "run-1", [summary_key], CONFIG, datetime.now(timezone.utc))


@pytest.mark.parametrize("damage, refusal", [
    ("replaced", "is not the file its manifest lists (ETag "),
    ("deleted", "is missing"),
    ("stray", "is not listed in its export's manifest"),
])
def test_the_athena_stage_refuses_an_export_in_s3_that_is_not_as_its_manifest_lists_it(
        events_export, damage, refusal):
    summary_key = upload(events_export)
    s3 = boto3.client("s3")
    s3.put_object(Bucket=MODEL_BUCKET, Key=summary_key.replace("manifest-summary.json", "data/_started"), Body=b"")
    assert "UNLOAD" in queries(summary_key)["unload"]  # whole: the statements, with a hidden file beside
    victim = events_export.data_files()[1]
    key = str(victim.relative_to(events_export.root))
    if damage == "replaced":
        s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=half_of(victim))
    elif damage == "deleted":
        s3.delete_object(Bucket=MODEL_BUCKET, Key=key)
    else:
        key = key.replace(victim.name, "copied-by-hand.json.gz")
        s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=victim.read_bytes())

    with pytest.raises(DamagedExport, match=re.escape(f"s3://{MODEL_BUCKET}/{key} {refusal}")):
        queries(summary_key)


def test_the_athena_stage_refuses_an_export_whose_manifest_is_gone(events_export):
    summary_key = upload(events_export)
    listing_key = summary_key.replace("manifest-summary.json", "manifest-files.json")
    boto3.client("s3").delete_object(Bucket=MODEL_BUCKET, Key=listing_key)

    with pytest.raises(DamagedExport, match=re.escape(f"s3://{MODEL_BUCKET}/{listing_key} is missing")):
        queries(summary_key)


def with_an_empty_partition(export: Export) -> Path:
    """The export with a file listed with no items, as DynamoDB writes one for each empty partition."""
    empty = export.data_files()[0].parent / "empty-partition.json.gz"
    empty.write_bytes(gzip.compress(b""))
    listing = export.root / export.summary["manifestFilesS3Key"]
    entry = {"itemCount": 0, **file_checksums(empty), "dataFileS3Key": str(empty.relative_to(export.root))}
    listing.write_text(listing.read_text() + json.dumps(entry) + "\n")
    return empty


def test_an_empty_partitions_file_may_be_absent_but_not_replaced(events_export, tmp_path):
    """Athena reads it as it reads any other: one holding events would be trained on."""
    empty = with_an_empty_partition(events_export)
    query_locally([events_export], CONFIG, END, tmp_path / "as-written")
    summary_key = upload(events_export)
    assert "UNLOAD" in queries(summary_key)["unload"]
    empty.write_bytes(intruders(events_export.data_files()[0]))

    with pytest.raises(DamagedExport, match=re.escape(f"{empty} is not the file its manifest lists (MD5 ")):
        query_locally([events_export], CONFIG, END, tmp_path / "replaced")
    key = str(empty.relative_to(events_export.root))
    boto3.client("s3").upload_file(str(empty), MODEL_BUCKET, key)
    with pytest.raises(DamagedExport, match=re.escape(f"s3://{MODEL_BUCKET}/{key} is not the file its manifest lists")):
        queries(summary_key)
    empty.unlink()
    boto3.client("s3").delete_object(Bucket=MODEL_BUCKET, Key=key)
    query_locally([events_export], CONFIG, END, tmp_path / "absent")
    assert "UNLOAD" in queries(summary_key)["unload"]


def test_folder_markers_in_the_bucket_are_no_stray_files(events_export):
    """An empty object named like a folder (the S3 console's "Create folder", Hadoop's _$folder$): Athena reads nothing from it."""
    summary_key = upload(events_export)
    folder = str(events_export.data_files()[0].parent.relative_to(events_export.root))
    for marker in (f"{folder}/", f"{folder}/old_$folder$"):
        boto3.client("s3").put_object(Bucket=MODEL_BUCKET, Key=marker, Body=b"")

    assert "UNLOAD" in queries(summary_key)["unload"]


def test_an_incremental_exports_files_are_found_in_the_folder_its_prefix_shares(events_export, tmp_path):
    """On AWS an incremental export writes its data files in <prefix>/AWSDynamoDB/data/, not in its
    own folder: the query reads that folder, and the check lists it."""
    s3, root = boto3.client("s3"), events_export.root
    listing = root / events_export.summary["manifestFilesS3Key"]
    shared = "night-2/AWSDynamoDB/data"
    entries = []
    for line in listing.read_text().splitlines():
        entry = json.loads(line)
        s3.upload_file(str(root / entry["dataFileS3Key"]), MODEL_BUCKET, f"{shared}/{Path(entry['dataFileS3Key']).name}")
        entries.append({**entry, "dataFileS3Key": f"{shared}/{Path(entry['dataFileS3Key']).name}"})
    export_folder = "night-2/AWSDynamoDB/01764644400000-a1b2c3d4"
    s3.put_object(Bucket=MODEL_BUCKET, Key=f"{export_folder}/manifest-files.json",
                  Body="".join(json.dumps(entry) + "\n" for entry in entries).encode())
    s3.put_object(Bucket=MODEL_BUCKET, Key=f"{export_folder}/manifest-summary.json", Body=json.dumps(
        {**events_export.summary, "exportType": "INCREMENTAL_EXPORT", "exportToTime": END.isoformat(),
         "manifestFilesS3Key": f"{export_folder}/manifest-files.json"}).encode())

    statements = queries(f"{export_folder}/manifest-summary.json")

    assert f"LOCATION 's3://{MODEL_BUCKET}/{shared}/'" in statements["create"]
