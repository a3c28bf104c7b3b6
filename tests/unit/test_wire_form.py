"""Items are written to DynamoDB exactly as boto3's TypeSerializer writes them (shared/storage/dynamo.py
serializes the common types itself, for speed), and what it refuses is refused the same way."""

from __future__ import annotations

import random
from collections import OrderedDict
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeSerializer

from shared.storage import dynamo


class Colour(str, Enum):
    RED = "red"


class Rank(IntEnum):
    FIRST = 1


def boto3_wire(item: dict[str, Any]) -> dict[str, Any]:
    """What the project wrote before it serialized anything itself."""
    serializer = TypeSerializer()
    return {k: serializer.serialize(v) for k, v in dynamo.to_dynamo(item).items()}


SCALARS = ["", "text", "ünï€ode \U0001F600", "0", True, False, 0, -0, 7, -12, 2**53 + 1, 10**38 - 1, -(10**38 - 1),
           0.0, -0.0, 0.1, 1e-30, 19.99, Decimal("1.50"), Decimal("-0"), b"", b"\x00\xff", bytearray(b"ab"),
           Binary(b"xy"), None, Colour.RED, Rank.FIRST, {"a", "b"}, {1, 2}, {Decimal("1.5")}, {b"a"}]


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return {f"k{n}": value(rng, depth + 1) for n in range(rng.randrange(0, 5))}
    if depth < 3 and roll < 0.22:
        return [value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if depth < 3 and roll < 0.25:
        return tuple(value(rng, depth + 1) for _ in range(rng.randrange(0, 3)))
    if depth < 3 and roll < 0.28:  # maps of one type, as pages (texts) and buckets (numbers) hold
        make = rng.choice([lambda n: f"reason {n}", lambda n: n, lambda n: rng.choice(SCALARS)])
        return {f"u{n}": make(n) for n in range(rng.randrange(0, 6))}
    return rng.choice(SCALARS)


def test_generated_items_are_written_as_boto3_writes_them():
    rng = random.Random(20261205)
    for _ in range(3000):
        item = {"segment_id": "s", **{f"a{n}": value(rng) for n in range(rng.randrange(0, 6))}}
        assert dynamo.serialize(item) == boto3_wire(item), item


@pytest.mark.parametrize("item", [
    {"pages": {"s1": 1, "s2": 10**38 - 1}},
    {"pages": {"s1": -(10**38 - 1), "s2": 0}},
    {"members": {"u1": "why", "u2": "why not"}, "empty": {}, "none": None, "nested": {"gone": None, "kept": [None]}},
    OrderedDict(a="x", b=OrderedDict(c=1)),  # a mapping that is not a dict
    {"list": [1, "a", {"b": None}, (2, 3.5)]},
], ids=["numbers at the limit", "negative numbers at the limit", "texts and nones", "ordered dicts", "lists"])
def test_items_of_each_shape_are_written_as_boto3_writes_them(item):
    assert dynamo.serialize(item) == boto3_wire(item)


@pytest.mark.parametrize("item", [
    {"n": 10**38}, {"pages": {"a": 1, "b": -(10**38)}}, {"x": float("inf")}, {"x": [Decimal("NaN")]},
    {"x": object()}, {"x": {1.5}},
], ids=["a whole number of 39 digits", "one in a map of numbers", "infinity", "not a number", "an object",
        "a set of floats"])
def test_what_boto3_refuses_is_refused_alike(item):
    with pytest.raises(Exception) as ours:
        dynamo.serialize(item)
    with pytest.raises(Exception) as theirs:
        boto3_wire(item)
    assert type(ours.value) is type(theirs.value)
