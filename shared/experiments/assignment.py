"""Who sees which variant: a hash of the experiment and the person's id, so the same customer (or
visitor) gets the same variant on every request, from every Lambda instance, with nothing stored.

The hash is SHA-256 of "<experiment id>:<subject id>", its first 8 bytes read as a fraction of
2^64 and placed on the variants' cumulative traffic shares. A new experiment id reshuffles
everyone, so one experiment's split says nothing about the next one's. Customers who objected to
personalization are left out of every experiment that has a personalized variant: they keep the
non-personalized answers everyone else gets outside experiments, and their visits are not counted
in any variant (counting them in the control would make it look worse than it is).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

SCALE = float(2**64)


@dataclass(frozen=True)
class Share:
    name: str
    traffic: float  # 0 to 1; the variants' shares add up to 1
    personalized: bool


def position(experiment_id: str, subject_id: str) -> float:
    """The subject's fixed place in [0, 1) for this experiment."""
    digest = hashlib.sha256(f"{experiment_id}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / SCALE


def assign(experiment_id: str, subject_id: str, variants: Sequence[Share], may_personalize: bool) -> str | None:
    """The variant this subject sees, or None: not in the experiment (an objector in one with a
    personalized variant)."""
    if not may_personalize and any(v.personalized for v in variants):
        return None
    place, edge = position(experiment_id, subject_id), 0.0
    for variant in variants:
        edge += variant.traffic
        if place < edge:
            return variant.name
    return variants[-1].name  # the shares' rounding: the top edge belongs to the last variant
