"""An export's data folder checked against its manifest, before a query reads the folder whole.

The readers in Python read an export as its manifest lists it (shared/storage/exports.py). The
query stage cannot: Athena reads every object under its table's LOCATION, an export's data
folder, and DuckDB on one machine every data file there. A file deleted, replaced or put there
since the export would change what the run trains on, and nothing would tell until a reader counted
its lines after training, with the model trained on it perhaps active. So before the query, each
export of the events chain is checked, and the first difference is a DamagedExport naming the
file, before any of it is read:
- each file the manifest lists with items is there and not empty;
- it is the very file DynamoDB wrote, where the manifest says which: on S3 its ETag, from the
  folder's listing (no byte of it is read); on one machine its MD5, against md5Checksum (which
  `./dev export` writes too);
- the folder holds no file the manifest does not list (Athena skips names that start with _ or .).
Each file then holds the items its manifest counts, without a line of it counted.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

from shared.errors import NotFound
from shared.storage.blobs import S3Blobs
from shared.storage.exports import DamagedExport, Export, ListedFile, data_folder, listed_in, parsed_summary

HIDDEN = ("_", ".")  # file names Athena (Hive) does not read


def check_local(export: Export) -> None:
    """`export` on local disk as its manifest lists it, or a DamagedExport."""
    folder = export.root / data_folder(export.summary["manifestFilesS3Key"])
    stored = {str(path.relative_to(export.root)): path.stat().st_size
              for path in (folder.rglob("*") if folder.is_dir() else ()) if path.is_file()}

    def altered(file: ListedFile) -> str | None:
        if file.md5 is None:
            return None
        digest = hashlib.md5(usedforsecurity=False)
        with (export.root / file.key).open("rb") as data:
            while block := data.read(8 << 20):
                digest.update(block)
        found = base64.b64encode(digest.digest()).decode()
        return None if found == file.md5 else f"MD5 {found} where its manifest lists {file.md5}"

    check_folder(export.listing(), stored, altered, lambda key: str(export.root / key))


def check_in_bucket(bucket: str, summary_key: str) -> None:
    """The export whose manifest-summary.json is `summary_key` in `bucket` as its manifest lists it,
    or a DamagedExport: two reads (the manifests) and one listing per thousand files."""
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
    stored = blobs.objects(data_folder(summary_key))

    def altered(file: ListedFile) -> str | None:
        tag = stored[file.key][1]
        return None if file.etag is None or tag == file.etag else f"ETag {tag} where its manifest lists {file.etag}"

    check_folder(listed, {key: size for key, (size, _) in stored.items()}, altered, where)


def check_folder(listed: list[ListedFile], stored: dict[str, int], altered: Callable[[ListedFile], str | None],
                 where: Callable[[str], str]) -> None:
    """The files of a data folder (`stored`: each key's size) against the manifest's `listed`;
    `altered` says how a listed file differs from the one DynamoDB wrote (None: it does not)."""
    for file in listed:
        if file.items == 0:  # DynamoDB writes a file for each empty partition, read as no rows or left out
            continue
        if file.key not in stored:
            raise DamagedExport.of(where(file.key), "missing")
        if stored[file.key] == 0:
            raise DamagedExport.of(where(file.key), "empty")
        if (difference := altered(file)) is not None:
            raise DamagedExport.of(where(file.key), f"not the file its manifest lists ({difference})")
    keys = {file.key for file in listed}
    stray = sorted(key for key in stored if key not in keys and not Path(key).name.startswith(HIDDEN))
    if stray:
        raise DamagedExport.of(where(stray[0]), "not listed in its export's manifest, and the query reads every file "
                                                "of the folder")
