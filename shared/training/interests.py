"""Declared interests (a profile's `attributes.interests`): read once, normalised one way, by the
training that builds `popular_by_interest` and by the serving that reads it.

Pure Python, no imports of its own: the recommender reads it on every cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_INTERESTS = 200  # lists kept in an artifact: the interests declared by the most buyers
INTEREST_LIST_LENGTH = 50  # items per interest
# An interest makes a list only when at least this many customers who declared it bought something
# in the window: a list is then never one customer's purchases shown to whoever types the same words.
MIN_INTEREST_BUYERS = 5


def normalise(interest: str) -> str:
    """The key of an interest: stripped, inner spaces collapsed, casefolded ("  Cooking " -> "cooking")."""
    return " ".join(interest.split()).casefold()


def declared(attributes: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """A profile's interests as (key, text) pairs, in the order declared, each key once; `text` is
    the customer's own words, stripped, for the reason. Only a list of strings counts (as the
    psychographic tags read it); blank entries are dropped."""
    values = (attributes or {}).get("interests")
    if not isinstance(values, list):
        return []
    found: dict[str, str] = {}
    for value in values:
        if isinstance(value, str) and (key := normalise(value)):
            found.setdefault(key, " ".join(value.split()))
    return list(found.items())
