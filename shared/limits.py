"""What fits DynamoDB: identifier bytes and the stored size of free-form data.

DynamoDB measures keys and items in UTF-8 bytes, not characters: a partition key holds 2,048
bytes, a sort key 1,024, an item 400 KB, a transaction 4 MB. Limits here are in bytes and leave
room for every composite key the service builds from an id (a customer's own item of a segment
run, as runs before the buckets of customers stored it, is keyed ``#customer#<user_id>``), so an id that is accepted can always be stored, found and erased.

Free-form maps (event properties, item and profile attributes) get a byte cap each, far under
400 KB, so that one entry can never be refused by DynamoDB after it was accepted, and a
transaction of a user's events can never reach 4 MB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any, TypeVar

from pydantic_core import PydanticCustomError

# An id is at most 256 bytes in UTF-8 (64 four-byte characters, 256 ASCII ones). The longest key
# built from it is a customer's own item of a segment run, #customer#<id>: 266 bytes of a partition
# key's 2,048. (It is also a key of a page's map of members and of a bucket's map of customers,
# where DynamoDB allows 64 KB.)
# Not blank, and no NUL: a customer's bought-set item is keyed "<user_id>\x00purchases" in the
# users table (shared/storage/users.py), so no id, in a body or a path, may hold the separator.
ID_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
MAX_ID_BYTES = 256
MAX_PROPERTIES_BYTES = 16 * 1024  # an event's properties
MAX_ATTRIBUTES_BYTES = 32 * 1024  # an item's or a customer's attributes
# DynamoDB refuses a transaction over 4 MB; chunks of a user's events stay well under it.
MAX_TRANSACTION_BYTES = 3 * 1024 * 1024

TOO_LARGE = "too_large"  # the pydantic error type the API answers with 413


def utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _refuse_over(limit: int, size: int, message: str) -> None:
    if size > limit:
        raise PydanticCustomError(TOO_LARGE, message, {"limit": limit, "size": size})


def fits_id_bytes(value: str) -> str:
    _refuse_over(MAX_ID_BYTES, utf8_length(value), "at most {limit} bytes in UTF-8 ({size} given)")
    return value


def stored_size(value: Any) -> int:
    """The bytes DynamoDB counts for a value (its documented rules, numbers rounded up)."""
    if isinstance(value, str):
        return utf8_length(value)
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, (int, float, Decimal)):
        return 21  # at most: 38 significant digits in 20 bytes, plus one
    if isinstance(value, Mapping):
        return 3 + sum(utf8_length(str(k)) + stored_size(v) + 1 for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return 3 + sum(stored_size(v) + 1 for v in value)
    return utf8_length(str(value))


def at_most_bytes(limit: int):  # noqa: ANN201 - a pydantic AfterValidator
    """A validator refusing a value whose stored size is over `limit` bytes."""

    def check(value: Any) -> Any:
        _refuse_over(limit, stored_size(value), "too large: {size} bytes when stored, at most {limit}")
        return value

    return check


T = TypeVar("T")


def chunks_within(items: Iterable[T], count: int, max_bytes: int, size: Callable[[T], int]) -> Iterator[list[T]]:
    """`items` in order, at most `count` and `max_bytes` (by `size`) a chunk: a batch API's limits
    (DynamoDB's transactions, EventBridge's PutEvents). An item larger than `max_bytes` goes alone."""
    chunk: list[T] = []
    total = 0
    for item in items:
        item_size = size(item)
        if chunk and (len(chunk) == count or total + item_size > max_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += item_size
    if chunk:
        yield chunk
