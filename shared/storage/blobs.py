"""Where files live: an S3 bucket on AWS, a local folder on the local stack, behind one interface.

Model versions (shared/storage/models.py) and campaign exports (shared/storage/campaigns.py) both
keep their files here. Writes are atomic either way: S3 replaces an object in one put, and the
folder writes a temporary file and renames it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import NotFound, StorageUnavailable
from shared.storage.dynamo import CLIENT_CONFIG


class Blobs(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def keys(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_tagged(self, key: str) -> tuple[bytes, str]: ...
    def put_if(self, key: str, data: bytes, tag: str | None) -> str | None: ...


WRITING = ".writing-"  # a LocalBlobs file being written, not yet a key


# LocalBlobs' conditional writes: the local stack is one process, so a lock makes read-compare-
# write one step, as S3's conditional put does.
_CONDITIONAL = threading.Lock()


class LocalBlobs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The content and a tag that changes with it, for put_if."""
        data = self.get(key)
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        """Write only if the key holds what `tag` was read from (None: only if it does not exist).
        The new tag; None when the key held something else."""
        with _CONDITIONAL:
            try:
                found: str | None = self.get_tagged(key)[1]
            except NotFound:
                found = None
            if found != tag:
                return None
            self.put(key, data)
            return hashlib.sha256(data).hexdigest()

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=WRITING, delete=False) as temporary:
            temporary.write(data)
        os.replace(temporary.name, path)

    def put_file(self, key: str, path: Path) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=WRITING, delete=False) as temporary:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, temporary)
        os.replace(temporary.name, target)

    def get(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{key} does not exist") from None
        except OSError as error:  # the folder is gone, unmounted or unreadable: as S3 being down
            raise StorageUnavailable(f"cannot read {key} from the folder: {error}") from None

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(WRITING)) if base.exists() else []

    def delete(self, key: str) -> None:
        path = self.root / key
        try:
            path.unlink(missing_ok=True)
            # An empty version folder would read as a version without files. Only those: another
            # folder emptied may be written to the next moment.
            if key.startswith("models/") and not any(path.parent.iterdir()):
                path.parent.rmdir()
        except OSError as error:
            raise StorageUnavailable(f"cannot delete {key} from the folder: {error}") from None


class S3Blobs:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("s3", config=CLIENT_CONFIG)
        return self._client

    def put(self, key: str, data: bytes) -> None:
        with _s3_faults(f"write to {self.bucket}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        """A file of any size: boto3's managed transfer uploads large ones in parts."""
        with _s3_faults(f"upload to {self.bucket}"):
            self.client.upload_file(str(path), self.bucket, key)

    def get_file(self, key: str, path: Path) -> None:
        """A file of any size to local disk, downloaded in parts."""
        with _s3_faults(f"download from {self.bucket}", reading=key):
            self.client.download_file(self.bucket, key, str(path))

    def get(self, key: str) -> bytes:
        with _s3_faults(f"read from {self.bucket}", reading=key):
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The content and its ETag, for put_if."""
        with _s3_faults(f"read from {self.bucket}", reading=key):
            found = self.client.get_object(Bucket=self.bucket, Key=key)
            return found["Body"].read(), found["ETag"]

    def put_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        """S3's conditional write: only if the object still has ETag `tag` (None: only if there is none).
        The new ETag; None when another write got there first."""
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        try:
            with _s3_faults(f"write to {self.bucket}"):
                return self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **condition)["ETag"]
        except ClientError as error:
            # 412: the condition failed; 409: a concurrent conditional write to the key won; 404:
            # IfMatch on a key deleted since.
            if error.response.get("Error", {}).get("Code") in S3_CONDITION_CODES:
                return None
            raise

    def keys(self, prefix: str) -> list[str]:
        return list(self.objects(prefix))

    def objects(self, prefix: str) -> dict[str, tuple[int, str]]:
        """Each object under `prefix`: its size and its ETag (unquoted), as the listing gives them."""
        found = {}
        with _s3_faults(f"list {self.bucket}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found.update({entry["Key"]: (entry["Size"], entry["ETag"].strip('"'))
                              for entry in page.get("Contents", [])})
        return found

    def delete(self, key: str) -> None:
        with _s3_faults(f"delete from {self.bucket}"):
            self.client.delete_object(Bucket=self.bucket, Key=key)


S3_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})
# GetObject says NoSuchKey; download_file's HeadObject, having no body, says 404.
S3_MISSING_CODES = frozenset({"NoSuchKey", "404"})
S3_CONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"})


@contextmanager
def _s3_faults(action: str, reading: str | None = None) -> Iterator[None]:
    """S3's transient faults as StorageUnavailable (a 503); the key being `reading` missing as NotFound."""
    try:
        yield
    except BotoCoreError as error:
        raise StorageUnavailable(f"{action}: S3 is unreachable") from error
    except (ClientError, S3UploadFailedError) as error:
        # upload_file wraps the ClientError it met in S3UploadFailedError, keeping it as the context.
        refused = error if isinstance(error, ClientError) else error.__context__
        code = refused.response.get("Error", {}).get("Code") if isinstance(refused, ClientError) else None
        if code in S3_TRANSIENT_CODES:
            raise StorageUnavailable(f"{action}: S3 is throttling or unavailable") from error
        if reading is not None and code in S3_MISSING_CODES:
            raise NotFound(f"{reading} does not exist") from None
        raise
