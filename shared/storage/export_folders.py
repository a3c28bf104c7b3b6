"""An export's data folder checked against its manifest, before a query reads the folder whole.

The readers in Python read an export as its manifest lists it (shared/storage/exports.py). The
query stage cannot: Athena reads every object under its table's LOCATION, an export's data
folder, and DuckDB on one machine every data file there. A file deleted, replaced or put there
since the export would change what the run trains on, and nothing would tell until a reader counted
its lines after training, with the model trained on it perhaps active. So before the query, each
export of the events chain is checked, and the first difference is a DamagedExport naming the
file, before any of it is read:
- each file the manifest lists with items is there and not empty;
- each listed file that is there is the very file DynamoDB wrote, where the manifest says which:
  on S3 its ETag, from the folder's listing (no byte of it is read); on one machine its MD5,
  against md5Checksum (which `./dev export` writes too). A file listed with no items (DynamoDB
  writes one for each empty partition) may be absent, but not replaced;
- the folder holds no file the manifest does not list (Athena skips names that start with _ or .,
  and folder markers; so does the local stand-in).
Each file then holds the items its manifest counts, without a line of it counted.

A file changed while the query reads the folder is caught after it, before training reads the
query's output: on one machine the folder's files are compared with how they stood before the
check (`CheckedFolder.unchanged`: size, modification time and inode, which a rewrite or a
replacement changes); on AWS the fit stage checks the chain in the bucket again
(training_data.download_queried), which catches a file that is still not the one DynamoDB wrote.
A file changed and put back while Athena read it is not caught.

Where the data folder is: a full export writes its files in its own folder (AWSDynamoDB/<id>/data/),
an incremental one in the folder its prefix shares (AWSDynamoDB/data/). The pipeline gives each
export a prefix of its own, so either folder holds one export's files; it is read from the keys
the manifest lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from shared.errors import NotFound
from shared.storage.blobs import S3Blobs
from shared.storage.exports import DamagedExport, Export, ListedFile, file_checksums, listed_in, not_read, parsed_summary


@dataclass(frozen=True)
class CheckedFolder:
    """An export's data folder on local disk, checked, and its files as they stood before the check."""

    path: Path
    files: dict[str, tuple[int, int, int]]

    def unchanged(self) -> None:
        """A DamagedExport naming the first file a query reads written, replaced, deleted or put
        there since (names no query reads may come and go)."""
        now = _files_of(self.path)
        changed = sorted(name for name in self.files.keys() | now.keys()
                         if not not_read(name) and self.files.get(name) != now.get(name))
        if changed:
            raise DamagedExport.of(self.path / changed[0], "not as it stood before the query read its folder "
                                                           "(written, replaced, removed or added since)")


def _files_of(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Each file of the folder, by name: its size, modification time (ns) and inode."""
    found = {}
    for path in (folder.iterdir() if folder.is_dir() else ()):
        try:
            stat = path.stat()
        except FileNotFoundError:  # deleted as it was listed
            continue
        if S_ISREG(stat.st_mode):
            found[path.name] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return found


def check_local(export: Export) -> CheckedFolder:
    """`export` on local disk as its manifest lists it, or a DamagedExport; its data folder, with
    its files as they stood before the check (a change after that is `unchanged`'s to find)."""
    listed = export.listing()
    folder = folder_of(export.summary["manifestFilesS3Key"], listed, str(export.root / export.summary["manifestFilesS3Key"]))
    found = export.root / folder
    before = CheckedFolder(found, _files_of(found))
    stored = {folder + name: size for name, (size, _, _) in before.files.items()}  # one listing for both

    def altered(file: ListedFile) -> str | None:
        if file.md5 is None:
            return None
        try:
            read = file_checksums(export.root / file.key)["md5Checksum"]
        except OSError as error:
            return f"unreadable: {error.strerror}"
        return None if read == file.md5 else f"MD5 {read} where its manifest lists {file.md5}"

    check_folder(listed, stored, altered, lambda key: str(export.root / key))
    return before


def check_in_bucket(bucket: str, summary_key: str) -> str:
    """The export whose manifest-summary.json is `summary_key` in `bucket` as its manifest lists it,
    or a DamagedExport: two reads (the manifests) and one listing per thousand files. Its data
    folder (a key)."""
    blobs = S3Blobs(bucket)

    def where(key: str) -> str:
        return f"s3://{bucket}/{key}"

    def read(key: str) -> bytes:
        try:
            return blobs.get(key)
        except NotFound:
            raise DamagedExport.of(where(key), "missing") from None

    listing_key = parsed_summary(read(summary_key), where(summary_key))["manifestFilesS3Key"]
    listed = listed_in(read(listing_key), where(listing_key))
    folder = folder_of(summary_key, listed, where(listing_key))
    stored = blobs.objects(folder)

    def altered(file: ListedFile) -> str | None:
        tag = stored[file.key][1]
        return None if file.etag is None or tag == file.etag else f"ETag {tag} where its manifest lists {file.etag}"

    check_folder(listed, {key: size for key, (size, _) in stored.items()}, altered, where)
    return folder


def folder_of(manifest_key: str, listed: list[ListedFile], listing: str) -> str:
    """The folder the listed data files are in; for an export that lists none, its own (empty)."""
    folders = {file.key.rsplit("/", 1)[0] + "/" for file in listed}
    if len(folders) > 1:
        raise DamagedExport.of(listing, f"not DynamoDB's: it lists data files in {len(folders)} folders")
    return folders.pop() if folders else manifest_key.rsplit("/", 1)[0] + "/data/"


def check_folder(listed: list[ListedFile], stored: dict[str, int], altered: Callable[[ListedFile], str | None],
                 where: Callable[[str], str]) -> None:
    """The files of a data folder (`stored`: each key's size) against the manifest's `listed`;
    `altered` says how a listed file differs from the one DynamoDB wrote (None: it does not)."""
    for file in listed:
        if file.key not in stored:
            if file.items == 0:  # an empty partition's file: absent or not, read as no rows
                continue
            raise DamagedExport.of(where(file.key), "missing")
        if stored[file.key] == 0 and file.items != 0:
            raise DamagedExport.of(where(file.key), "empty")
        if stored[file.key] and (difference := altered(file)) is not None:
            raise DamagedExport.of(where(file.key), f"not the file its manifest lists ({difference})")
    keys = {file.key for file in listed}
    stray = sorted(key for key in stored if key not in keys and not not_read(key))
    if stray:
        raise DamagedExport.of(where(stray[0]), "not listed in its export's manifest, and the query reads every file "
                                                "of the folder")

