"""What a marketer sends to start an experiment, and what the service keeps of it.

An experiment splits one surface's traffic between variants by a hash of each customer's or
visitor's id (assignment.py). A variant serves the active model ("active"), a given model
version ("v..."), or popular items ("popular", the baseline that uses no one's history). One
experiment runs per surface at a time; it ends stopped (nothing changes) or promoted (its
winning version is activated through the same gate as any activation).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationInfo, field_validator,
                      model_validator)

from shared.events import Moment
from shared.experiments.assignment import Share

SURFACES = ("recommendations",)  # the answers with a customer or visitor to assign
ACTIVE, POPULAR = "active", "popular"
VERSION = re.compile(r"^v[0-9]{8}-[0-9]{4,6}-[0-9a-f]{4}$")
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]


STORED = {"stored": True}  # the validation context of a record read back from storage


class _KnownFields(BaseModel):
    """A request naming a field this version does not know is refused (a typo must not pass
    silently); a stored record's such field is left out, so a record a later version wrote (one
    rolled back from) still reads, and its experiment keeps serving."""

    @model_validator(mode="before")
    @classmethod
    def _stored_fields_this_version_knows(cls, data: object, info: ValidationInfo) -> object:
        if isinstance(data, dict) and (info.context or {}).get("stored"):
            return {key: value for key, value in data.items() if key in cls.model_fields}
        return data


class Variant(_KnownFields):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="Lower-case letters, digits, - and _; unique in the experiment")
    serves: str = Field(description='"active" (the active model), a model version ("v20261201-010000-ab12"), '
                                    'or "popular" (best sellers: no one\'s history)')
    # Strict: true read as 1.0 and "0.5" as a number (a whole number is still one).
    traffic: Annotated[float, Strict()] = Field(gt=0, le=1, description="Share of the surface's traffic; the "
                                                                        "variants' shares add up to 1")

    @field_validator("serves")
    @classmethod
    def _serves(cls, value: str) -> str:
        if value not in (ACTIVE, POPULAR) and not VERSION.fullmatch(value):
            raise ValueError('"active", "popular" or a model version such as v20261201-010000-ab12')
        return value

    @property
    def personalized(self) -> bool:
        return self.serves != POPULAR


class ExperimentSpec(_KnownFields):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    surface: Literal["recommendations"] = Field(
        default="recommendations", description="Customers' and visitors' recommendations: the answers with "
                                               "someone to assign to a variant")
    variants: list[Variant] = Field(min_length=2, max_length=5)
    control: str | None = Field(default=None, description="The variant the others are compared with; the first by default")

    @field_validator("variants")
    @classmethod
    def _variants(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError("names must be unique")
        if abs(sum(v.traffic for v in variants) - 1) > 1e-6:
            raise ValueError("traffic shares must add up to 1")
        return variants

    @field_validator("control")
    @classmethod
    def _control(cls, control: str | None, info: ValidationInfo) -> str | None:
        # Checked against the variants only when they are valid themselves (else their own error says why).
        names = [v.name for v in info.data.get("variants", [])]
        if control is not None and "variants" in info.data and control not in names:
            raise ValueError(f"{control!r} is not one of the variants {names}")
        return control

    @property
    def control_variant(self) -> str:
        return self.control or self.variants[0].name

    def shares(self) -> list[Share]:
        return [Share(v.name, v.traffic, v.personalized) for v in self.variants]


class Experiment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    experiment_id: str
    spec: ExperimentSpec
    status: Literal["running", "stopped", "promoted"] = "running"
    # With a zone, in the years a stored time holds: a record written by hand otherwise does not read.
    started_at: Moment
    ended_at: Moment | None = None
    promoted: str | None = None  # the variant whose version was activated
