"""DynamoDB's export to S3, in its own file format: the nightly run's input past a size threshold.

One export, as ExportTableToPointInTime writes it under the bucket's prefix:

    AWSDynamoDB/<export id>/manifest-summary.json   exportType, exportTime, itemCount, manifestFilesS3Key
    AWSDynamoDB/<export id>/manifest-files.json     one JSON line per data file: dataFileS3Key, itemCount
    AWSDynamoDB/<export id>/data/<name>.json.gz     one line per item: {"Item": {DynamoDB JSON}}

An incremental export's data lines are {"Metadata": {...}, "Keys": {...}, "NewImage": {...}}, and
a line without NewImage is a deleted item. Readers fold the incremental exports taken after a full
one onto it, in order, so a run sees the table as of the last of them.

`write_export` writes DynamoDB Local's tables in this format (`./dev export`), so the export path
runs on one machine over the same files as on AWS; `download_export` fetches one from S3.

An export is read as its manifest lists it: a listed data file that is missing, empty, cut short
(an interrupted copy), holding another number of lines than the manifest's itemCount, or holding a
line that is not an item as DynamoDB writes it, is a DamagedExport naming the file, as is a
manifest that does not parse; the run reads nothing rather than part of the table.

`plan_events_export` decides each night's events export on AWS: incremental, on top of the chain
the last nights took, while that chain's full export is young enough to outlive the night (the
bucket expires exports after ExportRetentionDays) and the last export ended within DynamoDB's 24
hours of an incremental period; full otherwise. Users and items are small: exported in full.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import secrets
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, TypeVar

import orjson

from shared.errors import NotFound
from shared.storage.blobs import S3Blobs
from shared.storage.scan import parallel_scan

FULL, INCREMENTAL = "FULL_EXPORT", "INCREMENTAL_EXPORT"
ITEMS_PER_FILE = 100_000  # DynamoDB's own files hold about this many; each is read in one go
# DynamoDB's bounds on an incremental export's period (ExportFromTime to ExportToTime).
INCREMENTAL_PERIOD = (timedelta(minutes=15), timedelta(hours=24))
T = TypeVar("T")
# What a damaged export's reader is told to do: a chain that holds it can't be read whole again.
NEW_EXPORT = ("take a new full export (./dev export on one machine; on AWS, delete the chain's "
              "manifest-summary.json files from the export bucket and the next run takes a full one)")


class UnusableExport(Exception):
    """The export path's input cannot be trained on; the message says why and what to do."""


class DamagedExport(UnusableExport):
    """A file of an export (its listing, or a data file it lists) is missing, empty or not a whole
    gzip stream. Made by `of`: the message alone is its argument, so that it pickles back as
    itself from a reader's child process."""

    @classmethod
    def of(cls, path: Path | str, what: str) -> DamagedExport:
        return cls(f"export file {path} is {what}: {NEW_EXPORT}")


@dataclass(frozen=True)
class Export:
    """One export on local disk: its files lie under `root` at their S3 keys."""

    root: Path
    summary: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.summary.get("exportType", FULL)

    @property
    def time(self) -> datetime:
        return _period_end(self.summary)

    def listed_files(self) -> list[tuple[Path, int | None]]:
        """The data files the manifest lists that hold items, with how many it says each holds
        (None if it does not say), each there and not empty; or a DamagedExport. A file listed
        with no items is left out: DynamoDB writes a file for each empty partition, and its docs
        do not say whether that file is an empty gzip stream or no bytes at all."""
        files = [(self.root / entry.key, entry.items) for entry in self.listing() if entry.items != 0]
        for path, _ in files:
            if not path.is_file() or path.stat().st_size == 0:
                raise DamagedExport.of(path, "missing" if not path.is_file() else "empty")
        return files

    def listing(self) -> list[ListedFile]:
        """Every data file manifest-files.json lists, or a DamagedExport naming it."""
        listing = self.root / self.summary["manifestFilesS3Key"]
        if not listing.is_file():
            raise DamagedExport.of(listing, "missing")
        return listed_in(listing.read_bytes(), listing)

    def data_files(self) -> list[Path]:
        return [path for path, _ in self.listed_files()]

    def lines(self) -> Iterator[dict[str, Any]]:
        """Every data line, parsed, file by file."""
        for path, items in self.listed_files():
            yield from parsed_lines(path, items)


class ListedFile(NamedTuple):
    """A data file as manifest-files.json lists it. Each field but the key is None when not given."""

    key: str  # dataFileS3Key
    items: int | None  # itemCount
    etag: str | None  # the S3 ETag of the object as DynamoDB wrote it
    md5: str | None  # md5Checksum: the file's MD5, base64


def listed_in(listing: bytes, where: Path | str) -> list[ListedFile]:
    """manifest-files.json's data files (`listing`, the file's bytes, read from `where`). Each key
    once (a file listed twice would be read twice by the readers that follow the listing, once by
    a query over the folder), and each a key under the bucket's root: a key that climbs out of
    it (`..`, or absolute) would be read, or downloaded to, outside the export."""
    try:
        entries = [json.loads(line) for line in listing.splitlines() if line.strip()]
        listed = [ListedFile(entry["dataFileS3Key"], entry.get("itemCount"), entry.get("etag"), entry.get("md5Checksum"))
                  for entry in entries]
        if not all(isinstance(file.key, str) and (file.items is None or (type(file.items) is int and file.items >= 0))
                   and all(tag is None or isinstance(tag, str) for tag in (file.etag, file.md5)) for file in listed):
            raise TypeError("a key or a checksum that is not text, or a count that is not a whole number")
        if outside := next((file.key for file in listed if not _within_root(file.key)), None):
            raise ValueError(f"the key {outside[:200]!r} is not under the export's root")
        if len({file.key for file in listed}) != len(listed):
            raise ValueError("a data file listed twice")
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # cut short, or not DynamoDB's listing
        raise DamagedExport.of(where, f"not a manifest of data files ({type(error).__name__}: {error})") from None
    return listed


def _within_root(key: str) -> bool:
    parts = key.split("/")
    return bool(key) and not key.startswith("/") and "\\" not in key and ".." not in parts and "\0" not in key


def read_summary(path: Path) -> dict[str, Any]:
    """manifest-summary.json, with the keys the readers need, or a DamagedExport naming it."""
    return parsed_summary(path.read_bytes(), path)


def parsed_summary(summary: bytes, where: Path | str) -> dict[str, Any]:
    """A manifest-summary.json's bytes (read from `where`), as read_summary checks them: the keys
    the readers use, of the types they use them as. An export of a type other than DynamoDB's two
    is damaged, not skipped: a chain without its incremental export would train on what that
    export deleted (an erased customer's events)."""
    try:
        parsed = json.loads(summary)
        if not isinstance(parsed.get("manifestFilesS3Key"), str):
            raise KeyError("manifestFilesS3Key")
        if parsed.get("exportType", FULL) not in (FULL, INCREMENTAL):
            raise ValueError(f"exportType {str(parsed['exportType'])[:100]!r}")
        if "itemCount" in parsed and not (type(parsed["itemCount"]) is int and parsed["itemCount"] >= 0):
            raise TypeError("itemCount is not a whole number")
        if _period_end(parsed).tzinfo is None:
            raise ValueError("an export time without a zone")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DamagedExport.of(where, f"not a whole manifest summary ({type(error).__name__}: {error})") from None
    return parsed


def parsed_lines(path: Path, items: int | None = None, holding: tuple[bytes, ...] = ()) -> Iterator[dict[str, Any]]:
    """gzip_lines, each parsed: a line that is not a JSON object is a DamagedExport naming the file."""
    for line in gzip_lines(path, items=items, holding=holding):
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise DamagedExport.of(path, f"not DynamoDB's export format ({error})") from None
        if not isinstance(parsed, dict):
            raise DamagedExport.of(path, "not DynamoDB's export format (a line that is not an object)")
        yield parsed


def not_export_format(path: Path, error: Exception) -> DamagedExport:
    """A line of `path` that is JSON but not an item as DynamoDB exports it (`error`: what it lacked)."""
    return DamagedExport.of(path, f"not DynamoDB's export format ({type(error).__name__}: {error})")


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a Zstandard frame's first bytes


def gzip_lines(path: Path, block: int = 8 << 20, holding: tuple[bytes, ...] = (),
               items: int | None = None) -> Iterator[bytes]:
    """The non-blank lines of a gzipped file, read a block at a time: gzip's own line-by-line
    reading costs as much as parsing the lines, and a whole file can be gigabytes. With
    `holding`, only the lines that hold one of those byte strings (_lines_holding). With `items`
    (the manifest's itemCount), a file with another number of lines is a DamagedExport once read:
    a file cut at a gzip member's end, or replaced, reads as a whole stream."""
    counted = _Counted(items)
    try:
        with gzip.open(path, "rb") as data:
            blocks = counted.blocks(_blocks(data, block))
            yield from _lines_holding(blocks, holding) if holding else _non_blank_lines(blocks)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DamagedExport.of(path, f"not a whole gzip stream ({error})") from None
    if items is not None and counted.lines != items:
        raise DamagedExport.of(path, f"not whole: {counted.lines:,} lines where its manifest lists {items:,} items")


class _Counted:
    """The lines of the blocks that pass (each block is a run of whole lines), when a count is expected."""

    def __init__(self, expected: int | None) -> None:
        self.expected, self.lines = expected, 0

    def blocks(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        if self.expected is None:
            yield from blocks
            return
        for lines in blocks:
            self.lines += lines.count(b"\n") + 1
            yield lines


def compressed_lines(path: Path, block: int = 8 << 20) -> Iterator[bytes]:
    """The non-blank lines of a file compressed with Zstandard or gzip (compressed_blocks)."""
    yield from _non_blank_lines(compressed_blocks(path, block))


def _non_blank_lines(blocks: Iterator[bytes]) -> Iterator[bytes]:
    for lines in blocks:
        yield from (line for line in lines.split(b"\n") if line.strip())


def _lines_holding(blocks: Iterator[bytes], needles: tuple[bytes, ...]) -> Iterator[bytes]:
    """The lines of `blocks` (runs of whole lines) that hold any of `needles`, each once, in order.
    Each block is searched for the needles (bytes.find, in C): a line that holds none costs no
    Python work, where splitting the block into lines would cost some for every line."""
    for lines in blocks:
        starts = set()
        for needle in needles:
            at = lines.find(needle)
            while at >= 0:
                starts.add(lines.rfind(b"\n", 0, at) + 1)
                end = lines.find(b"\n", at)
                at = -1 if end < 0 else lines.find(needle, end)
        for start in sorted(starts):
            end = lines.find(b"\n", start)
            yield lines[start:] if end < 0 else lines[start:end]


def compressed_blocks(path: Path, block: int = 8 << 20) -> Iterator[bytes]:
    """A file compressed with Zstandard or gzip, told apart by their first bytes (the query stage
    asks for Zstandard; gzip is Athena's default), in runs of whole lines of about
    `block` bytes (the last line's newline may be missing; blank lines are kept)."""
    with path.open("rb") as raw:
        zstd = raw.read(4) == ZSTD_MAGIC
    if not zstd:
        with gzip.open(path, "rb") as data:
            yield from _blocks(data, block)
        return
    import zstandard  # only the train function ships it

    with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as data:
        yield from _blocks(data, block)


def _blocks(data: BinaryIO, block: int) -> Iterator[bytes]:
    rest = b""
    while chunk := data.read(block):
        whole, _, rest = (rest + chunk).rpartition(b"\n")
        if whole:
            yield whole
    if rest:
        yield rest


def read_export(root: Path, summary_key: str) -> Export:
    return Export(root, read_summary(root / summary_key))


def exports_in(root: Path) -> list[Export]:
    """Every complete export under `root` (a summary is written last), oldest first."""
    found = [read_export(root, str(path.relative_to(root))) for path in root.glob("AWSDynamoDB/*/manifest-summary.json")]
    return sorted(found, key=lambda export: export.time)


def latest_chain(root: Path) -> list[Export]:
    """The newest full export and the incremental exports taken after it, in order ([] if none)."""
    return _newest_chain(exports_in(root), lambda export: export.kind)


def _newest_chain(exports: list[T], kind: Callable[[T], str]) -> list[T]:
    """Of `exports` in time order, the newest full one and the incremental ones after it ([] if
    there is no full one): on local disk (latest_chain) as in the bucket (plan_events_export)."""
    fulls = [i for i, export in enumerate(exports) if kind(export) == FULL]
    if not fulls:
        return []
    return [exports[fulls[-1]], *(e for e in exports[fulls[-1] + 1:] if kind(e) == INCREMENTAL)]


def table_items(chain: list[Export], key_names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The table's items (DynamoDB JSON) as of the chain's last export, streamed: the full export's
    items as the incremental ones left them, then the items those added. Only the changes are held
    in memory (a day's, against the whole table in the full export)."""
    if not chain:
        return
    changes = chain_changes(chain[1:], key_names)
    met: set[Key] = set()
    yield from current_items(chain[0].listed_files(), changes, key_names, met)
    yield from added_items(changes, met)


Key = tuple[tuple[tuple[str, str], ...], ...]  # an item's key attributes, as DynamoDB JSON pairs


def item_key(item: dict[str, Any], key_names: tuple[str, ...]) -> Key:
    return tuple(tuple(item[name].items()) for name in key_names)


def chain_changes(incrementals: list[Export], key_names: tuple[str, ...]) -> dict[Key, dict[str, Any] | None]:
    """What incremental exports changed, by key: the newest image, or None for a deleted item. An
    incremental export's line holds the key (Keys) and the new image (NewImage), none for a delete."""
    changes: dict[Key, dict[str, Any] | None] = {}
    for export in incrementals:
        for path, items in export.listed_files():
            try:
                for line in parsed_lines(path, items):
                    image = line.get("NewImage")
                    if image is not None and not isinstance(image, dict):
                        raise TypeError(f"NewImage {type(image).__name__}")
                    changes[item_key(line["Keys"], key_names)] = image
            except (KeyError, AttributeError, TypeError) as error:
                raise not_export_format(path, error) from None
    return changes


def current_items(files: list[tuple[Path, int | None]], changes: dict[Key, dict[str, Any] | None],
                  key_names: tuple[str, ...], met: set[Key], holding: tuple[bytes, ...] = ()
                  ) -> Iterator[dict[str, Any]]:
    """The items of these files of a full export (listed_files) as `changes` leave them (a changed item's newest
    image in its place, a deleted one left out); the keys of the changes met are added to `met`.
    With `holding`, only the items whose line holds one of those byte strings: the changes of the
    others are not met, so added_items gives their newest images (the reader must not care)."""
    for path, items in files:
        try:
            for line in parsed_lines(path, items, holding):
                item = line["Item"]
                if not isinstance(item, dict):
                    raise TypeError(f"Item {type(item).__name__}")
                if changes and (key := item_key(item, key_names)) in changes:
                    met.add(key)
                    if (item := changes[key]) is None:
                        continue
                yield item
        except (KeyError, AttributeError, TypeError) as error:  # only this generator's own: a yield sends none in
            raise not_export_format(path, error) from None


def _base64(value: Any) -> str:
    """A binary attribute's value (B, or a member of BS) as DynamoDB JSON writes it: base64 text."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON: {type(value).__name__}")


def added_items(changes: dict[Key, dict[str, Any] | None], met: set[Key]) -> Iterator[dict[str, Any]]:
    """The items `changes` added: those whose key no file of the full export held (`met`)."""
    return (image for key, image in changes.items() if image is not None and key not in met)


def write_export(table: str, root: Path, segments: int = 4, now: datetime | None = None,
                 items_per_file: int = ITEMS_PER_FILE) -> Export:
    """A full export of `table` in DynamoDB's format under `root`, from a parallel Scan."""
    now = now or datetime.now(timezone.utc)
    export_id = f"{int(now.timestamp() * 1000):013d}-{secrets.token_hex(4)}"
    folder = Path("AWSDynamoDB") / export_id
    (root / folder / "data").mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    lock = threading.Lock()
    pending: list[dict[str, Any]] = []

    def flush(items: list[dict[str, Any]]) -> None:
        name = folder / "data" / f"{len(files):05d}-{secrets.token_hex(4)}.json.gz"
        with gzip.open(root / name, "wt", encoding="utf-8") as data:
            for item in items:
                data.write(json.dumps({"Item": item}, separators=(",", ":"), default=_base64) + "\n")
        files.append({"itemCount": len(items), **file_checksums(root / name), "dataFileS3Key": str(name)})

    def on_page(items: list[dict[str, Any]]) -> None:
        with lock:
            pending.extend(items)
            while len(pending) >= items_per_file:
                flush(pending[:items_per_file])
                del pending[:items_per_file]

    parallel_scan(table, segments, on_page)
    if pending or not files:
        flush(pending)
    listing = folder / "manifest-files.json"
    (root / listing).write_text("".join(json.dumps(entry) + "\n" for entry in files))
    summary = {"version": "2020-06-30", "exportArn": f"local/{table}/export/{export_id}", "tableArn": f"local/{table}",
               "exportType": FULL, "exportTime": now.isoformat(), "exportFormat": "DYNAMODB_JSON",
               "itemCount": sum(entry["itemCount"] for entry in files), "manifestFilesS3Key": str(listing),
               "outputFormat": "DYNAMODB_JSON"}
    summary_key = folder / "manifest-summary.json"
    # Last, and whole or not at all: a summary means a complete export.
    written = root / folder / "manifest-summary.json.part"
    written.write_text(json.dumps(summary, indent=1))
    written.replace(root / summary_key)
    return read_export(root, str(summary_key))


def file_checksums(path: Path) -> dict[str, str]:
    """The file's md5Checksum and etag, as DynamoDB lists a data file's (the ETag of an object put
    in one part), read in blocks (an export's files can be larger than memory)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as data:
        while block := data.read(8 << 20):
            digest.update(block)
    return {"md5Checksum": base64.b64encode(digest.digest()).decode(), "etag": digest.hexdigest()}


HIDDEN = ("_", ".")  # file names Athena (Hive) does not read
FOLDER_MARKER = "_$folder$"  # a Hadoop tool's empty object standing for a folder


def not_read(key: str) -> bool:
    """Objects a query over an export's data folder reads nothing from: hidden names, and folder markers."""
    return key.endswith("/") or key.endswith(FOLDER_MARKER) or key.rsplit("/", 1)[-1].startswith(HIDDEN)


def download_export(bucket: str, summary_key: str, root: Path) -> Export:
    """One export from S3 to local disk (Lambda's /tmp, a job's volume), under the same keys."""
    blobs = S3Blobs(bucket)

    def fetch(key: str) -> Path:
        target = root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            blobs.get_file(key, target)
        except NotFound:
            raise DamagedExport.of(f"s3://{bucket}/{key}", "missing") from None
        return target

    summary = read_summary(fetch(summary_key))
    listing = fetch(summary["manifestFilesS3Key"])
    for file in listed_in(listing.read_bytes(), listing):
        fetch(file.key)
    return Export(root, summary)


def plan_events_export(bucket: str, now: datetime, retention_days: int, prefix: str = "exports/") -> dict[str, Any]:
    """Tonight's events export, and the chain it adds to: {"events": {"type": FULL}, "chain": []},
    or {"events": {"type": INCREMENTAL, "from": ..., "to": ...}, "chain": [summary keys, full first]}.
    The chain is read from the exports the pipeline took under `prefix` in `bucket`."""
    blobs = S3Blobs(bucket)
    summaries = sorted(((key, parsed_summary(blobs.get(key), f"s3://{bucket}/{key}")) for key in blobs.keys(prefix)
                        if "/events/AWSDynamoDB/" in key and key.endswith("/manifest-summary.json")),
                       key=lambda entry: _period_end(entry[1]))
    chain = _newest_chain(summaries, lambda entry: entry[1].get("exportType", FULL))
    full_export = {"events": {"type": FULL}, "chain": []}
    if not chain:
        return full_export
    started, ended = _period_end(chain[0][1]), _period_end(chain[-1][1])
    shortest, longest = INCREMENTAL_PERIOD
    # The full export must outlive tonight's run: the bucket's lifecycle deletes it at retention_days.
    if now - started > timedelta(days=retention_days - 1) or not shortest <= now - ended <= longest:
        return full_export
    return {"events": {"type": INCREMENTAL, "from": ended.isoformat(), "to": now.isoformat()},
            "chain": [key for key, _ in chain]}


def _period_end(summary: dict[str, Any]) -> datetime:
    """When the table stood as the export shows it: an incremental export's period end
    (exportToTime), a full one's time (exportTime)."""
    return datetime.fromisoformat(summary.get("exportToTime") or summary["exportTime"])
