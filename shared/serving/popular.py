"""Popular lists as serving keeps them: a plain type, apart from the ALS module and its imports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PopularLists:
    version: str
    items: list[str]
    by_country: dict[str, list[str]]
    cached: bool  # True: the small list kept beside the model, used while no model is loaded
    by_category: dict[str, list[str]] = field(default_factory=dict)
    # Declared interest (normalised, shared/training/interests.py) -> what its customers buy most.
    by_interest: dict[str, list[str]] = field(default_factory=dict)
