"""DynamoDB client, type conversion and fault mapping shared by every store.

Clients are created on first use (so moto can start first in tests) and reused while the
Lambda is warm. botocore's standard retry mode retries throttling and 5xx with exponential
backoff and jitter; what still fails becomes StorageUnavailable, which the API answers with 503.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar

import boto3
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import DomainError, StorageUnavailable

T = TypeVar("T")

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=64,
    # Requests are built here from validated models, and DynamoDB validates them again: botocore's
    # own check of every request against the service model (its docs: off "for performance
    # reasons") was about 8% of ingest's CPU (bench/ingest.py).
    parameter_validation=False,
)
# Error codes that mean "try again later", not "your request is wrong".
TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
        "TransactionConflictException",
        "LimitExceededException",
    }
)

_serializer = TypeSerializer()


class _Deserializer(TypeDeserializer):
    """boto3's, reading a binary value as a Scan gives it (bytes) or as an export writes it (base64
    text), so that an export's items read as the table's do."""

    def _deserialize_b(self, value: Any) -> Binary:
        return super()._deserialize_b(base64.b64decode(value) if isinstance(value, str) else value)


_deserializer = _Deserializer()


# Bulk reads (training's Scan) may wait longer per page than a request path ever should.
BULK_CLIENT_CONFIG = CLIENT_CONFIG.merge(Config(read_timeout=120, max_pool_connections=16))


@lru_cache(maxsize=1)
def client() -> Any:
    return boto3.client("dynamodb", config=CLIENT_CONFIG)


@lru_cache(maxsize=1)
def bulk_client() -> Any:
    return boto3.client("dynamodb", config=BULK_CLIENT_CONFIG)


def to_dynamo(value: Any) -> Any:
    """Python value -> what TypeSerializer accepts (floats become Decimal, None-valued keys go)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {k: to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [to_dynamo(v) for v in value]
    return value


def serialize(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item in DynamoDB's wire form: what boto3's TypeSerializer makes of `to_dynamo(item)`."""
    return _wire_map(item) if type(item) is dict else {k: _serializer.serialize(v) for k, v in to_dynamo(item).items()}


# Whole numbers of up to 38 digits are DynamoDB numbers as Python writes them; longer ones (which
# TypeSerializer refuses) and every other type go through TypeSerializer.
_EXACT_INTEGERS = 10**38


@dataclass(frozen=True)
class AsRead:
    """A value as a read gave it, for a condition that it is still so: serialized exactly, a null
    in a map kept (serialize leaves None-valued keys out, so the condition would never hold)."""

    value: Any


def _wire(value: Any) -> dict[str, Any]:
    """TypeSerializer's output for `to_dynamo(value)`, without its type tests on every value for
    the types items mostly hold: texts, whole numbers and maps of them. 100,000 customers' segment
    pages and buckets are two million such values: 4.3 s through TypeSerializer, 1.2 s here."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is int and -_EXACT_INTEGERS < value < _EXACT_INTEGERS:
        return {"N": str(value)}
    if kind is dict:
        return {"M": _wire_map(value)}
    if kind is list:
        return {"L": [_wire(v) for v in value]}
    if kind is AsRead:
        return _serializer.serialize(value.value)
    return _serializer.serialize(to_dynamo(value))


def _wire_map(value: dict[Any, Any]) -> dict[Any, Any]:
    kinds = set(map(type, value.values()))
    if kinds == {str}:  # a page's members
        return {k: {"S": v} for k, v in value.items()}
    if kinds == {int} and -_EXACT_INTEGERS < min(value.values()) and max(value.values()) < _EXACT_INTEGERS:
        return {k: {"N": str(v)} for k, v in value.items()}  # a customer's pages in a bucket
    return {k: _wire(v) for k, v in value.items() if v is not None}


def deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    """Decimals that hold whole numbers become int, so JSON shows 3, not 3.0."""
    if isinstance(value, Decimal) and value == value.to_integral_value() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):  # of texts, numbers or binary values (a set holds one type)
        return sorted((_plain(v) for v in value), key=lambda v: v.value if isinstance(v, Binary) else v)
    return value


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


@contextmanager
def aws_faults(action: str) -> Iterator[None]:
    """Turn AWS faults that outlived botocore's retries into StorageUnavailable."""
    try:
        yield
    except ClientError as error:
        if error_code(error) in TRANSIENT_CODES:
            raise StorageUnavailable(f"{action}: DynamoDB is throttling or unavailable") from error
        raise
    except BotoCoreError as error:  # endpoint unreachable, timeouts, broken connections
        raise StorageUnavailable(f"{action}: DynamoDB is unreachable") from error


def backoff_delays(attempts: int, base: float = 0.05, cap: float = 2.0) -> Iterator[float]:
    """Full-jitter exponential backoff delays for our own retry loops."""
    for attempt in range(attempts):
        yield random.uniform(0, min(cap, base * 2**attempt))


def with_leftovers(
    call: Callable[[dict[str, Any]], dict[str, Any]],
    request: dict[str, Any],
    leftovers_key: str,
    action: str,
    attempts: int = 8,
) -> list[dict[str, Any]]:
    """Call a batch API until nothing is left unprocessed; return every response."""
    responses = []
    for delay in backoff_delays(attempts):
        with aws_faults(action):
            response = call(request)
        responses.append(response)
        leftovers = response.get(leftovers_key) or {}
        if not leftovers:
            return responses
        request = {**request, "RequestItems": leftovers}
        time.sleep(delay)
    raise StorageUnavailable(f"{action}: DynamoDB kept returning unprocessed items")


def get_item(table: str, key: Mapping[str, Any], action: str, consistent: bool = False,
             projection: str | None = None) -> dict[str, Any] | None:
    """One item by key, deserialized (only the `projection` attributes, when given); None when
    there is none."""
    request: dict[str, Any] = {"TableName": table, "Key": serialize(key), "ConsistentRead": consistent}
    if projection is not None:
        request["ProjectionExpression"] = projection
    with aws_faults(action):
        response = client().get_item(**request)
    return deserialize(response["Item"]) if "Item" in response else None


def batch_get(table: str, keys: list[dict[str, Any]], consistent: bool = False,
              projection: str | None = None, names: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """BatchGetItem over any number of keys (100 per call), leftovers retried."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        spec: dict[str, Any] = {
            "Keys": [serialize(key) for key in keys[start : start + 100]],
            "ConsistentRead": consistent,
        }
        if projection:
            spec["ProjectionExpression"] = projection
        if names:
            spec["ExpressionAttributeNames"] = names
        for response in with_leftovers(
            lambda request: client().batch_get_item(**request),
            {"RequestItems": {table: spec}},
            "UnprocessedKeys",
            "batch get",
        ):
            found.extend(deserialize(item) for item in response["Responses"].get(table, []))
    return found


def batch_put(table: str, items: list[Mapping[str, Any]], threads: int = 1) -> None:
    """BatchWriteItem puts (25 per call, `threads` calls at once), unprocessed items retried with backoff."""
    _batch_write(table, [{"PutRequest": {"Item": serialize(item)}} for item in items], "batch write", threads)


def batch_delete(table: str, keys: list[Mapping[str, Any]], threads: int = 1) -> None:
    """BatchWriteItem deletes (25 per call, `threads` calls at once), unprocessed ones retried with backoff."""
    _batch_write(table, [{"DeleteRequest": {"Key": serialize(key)}} for key in keys], "batch delete", threads)


def _batch_write(table: str, requests: list[dict[str, Any]], action: str, threads: int = 1) -> None:
    def write(start: int) -> None:
        with_leftovers(
            lambda request: client().batch_write_item(**request),
            {"RequestItems": {table: requests[start : start + 25]}},
            "UnprocessedItems",
            action,
        )

    starts = range(0, len(requests), 25)
    if threads == 1 or len(starts) < 2:
        for start in starts:
            write(start)
        return
    # The calls wait on DynamoDB, not on the CPU: several at once finish sooner.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, starts))


# Marks a cursor of the key's own UTF-8 bytes. The first cursors held the key as JSON, which
# writes a control character in six characters: a cursor naming ids of such characters could pass
# the 2,048 characters a cursor may have. Those still read (a client may hold one over a deploy).
CURSOR_OF_BYTES = "~"


def encode_cursor(key: str) -> str:
    """A page cursor for clients: the last key read, opaque to them."""
    return CURSOR_OF_BYTES + base64.urlsafe_b64encode(key.encode("utf-8", "surrogatepass")).decode()


def decode_cursor(cursor: str) -> str:
    """The key a cursor from encode_cursor holds; DomainError (400) for anything else."""
    try:
        if cursor.startswith(CURSOR_OF_BYTES):
            key = base64.urlsafe_b64decode(cursor[len(CURSOR_OF_BYTES):].encode()).decode("utf-8", "surrogatepass")
        else:
            key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
        raise DomainError("cursor is not one this API returned", field="cursor") from None
    if not isinstance(key, str):
        raise DomainError("cursor is not one this API returned", field="cursor")
    return key
