"""Custom segments: rules written by marketers (AND/OR of conditions, with time windows).

    {"name": "Kitchen fans in Germany",
     "rule": {"all": [{"field": "country", "op": "==", "value": "DE"},
                      {"field": "purchases_in_category", "category": "kitchen", "days": 30, "op": ">=", "value": 2}]}}

Rules are validated when they are created, with errors naming the part at fault, and evaluated
by the same code on request and in the nightly run.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from shared.segments.features import DAY, CustomerFeatures
from shared.serving.model import HistoryEvent

NUMERIC_FIELDS = {"recency_days", "orders_total", "monetary", "purchases_in_category", "spend_in_days", "events_in_days"}
TEXT_FIELDS = {"country", "region", "city", "preferred_channel", "tag"}
WINDOWED_FIELDS = {"purchases_in_category", "spend_in_days", "events_in_days"}
Field_ = Literal["recency_days", "orders_total", "monetary", "purchases_in_category", "spend_in_days",
                 "events_in_days", "country", "region", "city", "preferred_channel", "tag", "attribute"]
Operator = Literal[">=", ">", "<=", "<", "==", "!=", "in", "contains"]


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: Field_
    op: Operator
    value: Union[bool, int, float, str, list[str]]  # noqa: UP007 - order matters: bool before int
    days: int | None = Field(default=None, ge=1, le=3650, description="Window for purchases/spend/events")
    category: str | None = Field(default=None, min_length=1, max_length=256)
    attribute: str | None = Field(default=None, min_length=1, max_length=64, description="For field 'attribute'")

    @model_validator(mode="after")
    def _consistent(self) -> Condition:
        if self.field in WINDOWED_FIELDS and self.days is None:
            raise ValueError(f"'{self.field}' needs 'days', the length of its time window")
        if self.field not in WINDOWED_FIELDS and self.days is not None:
            raise ValueError(f"'days' only applies to {sorted(WINDOWED_FIELDS)}")
        if (self.field == "purchases_in_category") != (self.category is not None):
            raise ValueError("'category' goes with field 'purchases_in_category', and only with it")
        if (self.field == "attribute") != (self.attribute is not None):
            raise ValueError("'attribute' (its name) goes with field 'attribute', and only with it")
        if self.field in NUMERIC_FIELDS and (isinstance(self.value, (bool, str, list))
                                             or self.op in ("in", "contains")):
            raise ValueError(f"'{self.field}' is a number: compare it with >=, >, <=, <, == or != and a number")
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("'in' needs a list of values")
        return self


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Rule] = Field(min_length=1, max_length=20)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Rule] = Field(min_length=1, max_length=20)


def _kind(value: Any) -> str:
    """Which shape a rule is, so that errors speak of that shape only, not of all three."""
    if isinstance(value, dict):
        return "all" if "all" in value else "any" if "any" in value else "condition"
    return "all" if isinstance(value, AllOf) else "any" if isinstance(value, AnyOf) else "condition"


Rule = Annotated[Union[Annotated[Condition, Tag("condition")], Annotated[AllOf, Tag("all")],  # noqa: UP007
                       Annotated[AnyOf, Tag("any")]], Discriminator(_kind)]
AllOf.model_rebuild()
AnyOf.model_rebuild()


class CustomSegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"\S")
    description: str = Field(default="", max_length=1000)
    rule: Rule

    @property
    def segment_id(self) -> str:
        return "custom:" + re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


class CustomSegment(BaseModel):
    segment_id: str
    name: str
    description: str
    rule: Rule
    created_at: datetime


def matches(rule: Rule, features: CustomerFeatures, history: list[HistoryEvent], categories: dict[str, str],
            tags: set[str], now: datetime) -> bool:
    if isinstance(rule, AllOf):
        return all(matches(r, features, history, categories, tags, now) for r in rule.all)
    if isinstance(rule, AnyOf):
        return any(matches(r, features, history, categories, tags, now) for r in rule.any)
    actual = _value(rule, features, history, categories, tags, now)
    return _compare(actual, rule.op, rule.value)


def _value(c: Condition, f: CustomerFeatures, history: list[HistoryEvent], categories: dict[str, str],
           tags: set[str], now: datetime) -> Any:
    since = now.timestamp() - (c.days or 0) * DAY
    recent = [e for e in history if e.timestamp >= since]
    if c.field == "purchases_in_category":
        return sum(1 for e in recent if e.event_type == "purchase" and categories.get(e.item_id) == c.category)
    if c.field == "spend_in_days":
        return sum(e.price * e.quantity for e in recent if e.event_type == "purchase" and e.price is not None
                   and e.currency == f.currency)
    if c.field == "events_in_days":
        return len(recent)
    if c.field == "preferred_channel":
        return max(f.channels, key=f.channels.get) if f.channels else None
    if c.field == "tag":
        return tags
    if c.field == "attribute":
        return f.attributes.get(c.attribute or "")
    return getattr(f, c.field)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if isinstance(actual, set):  # field "tag": the customer's tag names and segment ids
        wanted = set(expected) if isinstance(expected, list) else {expected}
        return bool(actual & wanted) if op in ("==", "in", "contains") else not actual & wanted
    if actual is None:
        return op == "!="
    if op == "contains":
        return isinstance(actual, list) and expected in actual
    if op == "in":
        return actual in expected
    try:
        return {">=": actual >= expected, ">": actual > expected, "<=": actual <= expected,
                "<": actual < expected, "==": actual == expected, "!=": actual != expected}[op]
    except TypeError:
        return False
