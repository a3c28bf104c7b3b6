"""JSON every reader takes: a number that is not finite (NaN, an unbounded interval) as null.

Python's json writes NaN and Infinity, which are not JSON: browsers' JSON.parse, jq and Athena
refuse a document holding them. The API's answers and the files the nightly run writes go
through here.
"""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with each float that is not finite as None, in dicts, lists and tuples at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value
