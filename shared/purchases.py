"""What a customer has bought, as 8-byte keys: the already-bought set and the seen-orders set.

Ingest keeps both per customer in storage (``shared/storage/users.py``), in the same
transaction as the events: an item's key is added when a purchase of it is stored, an order's
key when its first line is. Keys are hashes, so the sets are small and of fixed width whatever
the ids (an id holds up to 256 bytes); with 8 bytes a collision between two ids of one customer
is a chance of about n^2 / 2^65 (1e-11 for 20,000 items), and it only ever hides one item.

This module is low on purpose: the standard library only, so serving and segments can use it
without importing storage or numpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from hashlib import blake2b

KEY_BYTES = 8
# A customer's keys share one DynamoDB item (400 KB): 32,000 item keys (256 KB) and 8,000 order
# keys (64 KB) leave room for the key and the counters. Past a cap no key is added; the set says
# it is truncated (what that means for each is in docs/architecture.md, Ingestion).
MAX_ITEM_KEYS = 32_000
MAX_ORDER_KEYS = 8_000


def _key(text: str) -> bytes:
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES).digest()


def item_key(item_id: str) -> bytes:
    """The 8-byte key of an item id (blake2b): what the already-bought set holds."""
    return _key(item_id)


def order_key(order_id: str | None, moment: datetime) -> bytes:
    """The key of the order a purchase line belongs to: its ``order_id``, or, without one, the
    purchase's day (UTC date), so that a customer's lines of one day without an order id form one
    order. The two kinds of key never meet (different prefixes)."""
    if order_id is not None:
        return _key("o\x00" + order_id)
    return _key("d\x00" + moment.astimezone(timezone.utc).date().isoformat())


@dataclass(frozen=True)
class PurchasedItems:
    """A customer's already-bought items, as keys. ``truncated``: the customer bought more
    distinct items than the cap (``MAX_ITEM_KEYS``), and items first bought after it are missing."""

    keys: frozenset[bytes] = frozenset()
    truncated: bool = False

    @classmethod
    def of(cls, item_ids: Iterable[str]) -> PurchasedItems:
        return cls(frozenset(item_key(item) for item in item_ids))

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and item_key(item_id) in self.keys

    def __len__(self) -> int:
        return len(self.keys)
