"""An item's size and write units as DynamoDB bills them, from its wire form (docs: "DynamoDB item
sizes and formats"). Apart from the benches that use it, so that it imports nothing and can be tested."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

KB = 1024


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it (names plus values), from its wire form."""
    return sum(len(name.encode()) + value_bytes(value) for name, value in item.items())


def put_units(item: dict[str, Any]) -> int:
    """A put's write request units: 1 per KB of the item, rounded up."""
    return math.ceil(item_bytes(item) / KB)


def value_bytes(value: dict[str, Any]) -> int:
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return number_bytes(inner)
    if kind == "B":  # the raw bytes, not their base64 on the wire
        return len(inner) if isinstance(inner, bytes) else len(base64.b64decode(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(value_bytes({kind[0]: v}) for v in inner)
    if kind == "L":
        return 3 + sum(value_bytes(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_bytes(v) + 1 for k, v in inner.items())
    return len(json.dumps(inner))


def number_bytes(number: str) -> int:
    """A number's size by DynamoDB's rule: 1 byte per two significant digits (leading and trailing
    zeroes trimmed), plus 1 (docs: "DynamoDB item sizes and formats")."""
    mantissa = number.lower().split("e", 1)[0].lstrip("+-").replace(".", "")
    significant = mantissa.strip("0") or "0"
    return (len(significant) + 1) // 2 + 1
