"""Custom segments: rules written by marketers (AND/OR of conditions, with time windows).

    {"name": "Kitchen fans in Germany",
     "rule": {"all": [{"field": "country", "op": "==", "value": "DE"},
                      {"field": "purchases_in_category", "category": "kitchen", "days": 30, "op": ">=", "value": 2}]}}

Rules are validated when they are created, with errors naming the part at fault, and evaluated
by the same code on request and in the nightly run. A definition is accepted only if it reads
back from its stored form and evaluates, so that no stored definition can fail a later read.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidatorFunctionWrapHandler,
                      field_validator, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.history import HistoryEvent
from shared.observability import logger, metrics
from shared.segments.families import segment_id_for
from shared.segments.features import DAY, CustomerFeatures, customer_features
from shared.validation import one_of

# The limits of custom segments, all here; docs/segments.md lists them. Every definition is
# evaluated for every customer on each GET /users/{id}/segments and in the nightly run, and all of
# them are listed by GET /segments: these bound what one definition, and all of them, can cost.
MAX_DEFINITION_BODY_BYTES = 32 * 1024  # the body of POST /segments (413 above it)
MAX_RULE_DEPTH = 5  # levels of all/any, one inside the other
MAX_RULE_ENTRIES = 20  # entries in one all/any
MAX_RULE_CONDITIONS = 50  # conditions in one rule, all levels together
MAX_CUSTOM_SEGMENTS = 100  # definitions stored at once, unreadable ones included

NUMERIC_FIELDS = {"recency_days", "orders_total", "monetary", "purchases_in_category", "spend_in_days", "events_in_days"}
TEXT_FIELDS = {"country", "region", "city", "preferred_channel", "tag"}
WINDOWED_FIELDS = {"purchases_in_category", "spend_in_days", "events_in_days"}
Field_ = Literal["recency_days", "orders_total", "monetary", "purchases_in_category", "spend_in_days",
                 "events_in_days", "country", "region", "city", "preferred_channel", "tag", "attribute"]
Operator = Literal[">=", ">", "<=", "<", "==", "!=", "in", "contains"]


# One error naming `value`, not one per branch (value.bool, value.int, ...). Order matters: bool before int.
ConditionValue = one_of("a number, a text, true or false, or a list of texts", bool, int, float, str, list[str])


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: Field_
    op: Operator
    value: ConditionValue
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
    all: list[Rule] = Field(min_length=1, max_length=MAX_RULE_ENTRIES)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Rule] = Field(min_length=1, max_length=MAX_RULE_ENTRIES)


def _kind(value: Any) -> str:
    """Which shape a rule is, so that errors speak of that shape only, not of all three."""
    if isinstance(value, dict):
        return "all" if "all" in value else "any" if "any" in value else "condition"
    return "all" if isinstance(value, AllOf) else "any" if isinstance(value, AnyOf) else "condition"


Rule = Annotated[Union[Annotated[Condition, Tag("condition")], Annotated[AllOf, Tag("all")],  # noqa: UP007
                       Annotated[AnyOf, Tag("any")]], Discriminator(_kind)]
AllOf.model_rebuild()
AnyOf.model_rebuild()


def _group_key(node: dict[str, Any]) -> str | None:
    """Which of all/any a raw rule is, the way `_kind` tells pydantic."""
    return "all" if "all" in node else "any" if "any" in node else None


NOT_FINITE = ("must be a finite number: NaN, Infinity and numbers too large for a double (such as 1e400) "
              "cannot be compared")


def _numbers(condition: dict[str, Any], path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], float]]:
    """The floats of a raw condition, each with where it is (a list value's entries too)."""
    found = []
    for name, value in condition.items():
        for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(item, float):
                found.append((path + (name,) + (() if index is None else (index,)), item))
    return found


def _as_written(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """A rule's error location without the tags pydantic puts where a rule's shape is chosen (at
    the rule's start and after each entry's index): "condition", and "all"/"any" before the same
    field name. Idempotent: a location as written has no such part."""
    parts, chosen = list(loc), True  # a shape is chosen at the start
    written: list[str | int] = []
    for k, part in enumerate(parts):
        if chosen and (part == "condition" or (part in ("all", "any") and k + 1 < len(parts) and parts[k + 1] == part)):
            chosen = False
            continue
        written.append(part)
        chosen = isinstance(part, int)
    return tuple(written)


def _error(kind: str, message: str, loc: tuple[str | int, ...], value: Any) -> InitErrorDetails:
    # The message goes in as a template value: a literal brace in it would be read as a placeholder.
    return InitErrorDetails(type=PydanticCustomError(kind, "{message}", {"message": message}), loc=loc, input=value)


def _check_raw_rule(raw: Any, *, capped: bool) -> Any:
    """Finite numbers everywhere, and (`capped`) the depth and size limits, on the rule as sent.

    Runs before pydantic walks the rule, so a deeply nested rule is refused without being
    descended into, and errors name the part at fault as the client wrote it (rule.all[1].value),
    without the union tags pydantic would add. Without `capped` it reads stored definitions, which
    an older version may have written under other limits: those still evaluate, so they stay.
    """
    errors: list[InitErrorDetails] = []
    conditions = 0
    pending: list[tuple[Any, tuple[str | int, ...], int]] = [(raw, (), 0)]
    while pending:
        node, path, depth = pending.pop()
        if not isinstance(node, dict):
            continue  # pydantic says what it should be
        key = _group_key(node)
        if key is None:
            conditions += 1
            errors += [_error("not_finite", NOT_FINITE, loc, number) for loc, number in _numbers(node, path)
                       if not math.isfinite(number)]
        elif capped and depth == MAX_RULE_DEPTH:
            errors.append(_error("too_deep", f"nested too deep: at most {MAX_RULE_DEPTH} levels of all/any",
                                 path + (key,), node))
        elif isinstance(node[key], list):
            if capped and len(node[key]) > MAX_RULE_ENTRIES:
                errors.append(_error("too_many_entries", f"{len(node[key])} entries: at most {MAX_RULE_ENTRIES} "
                                     f"in one {key}", path + (key,), node[key]))
            pending += [(entry, path + (key, i), depth + 1) for i, entry in reversed(list(enumerate(node[key])))]
    if capped and conditions > MAX_RULE_CONDITIONS:
        errors.append(_error("too_many_conditions", f"{conditions} conditions: at most {MAX_RULE_CONDITIONS} in a "
                             "rule, all levels together", (), raw))
    if errors:
        raise ValidationError.from_exception_data("rule", errors)
    return raw


class CustomSegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"\S")
    description: str = Field(default="", max_length=1000)
    rule: Rule

    @field_validator("rule", mode="before")
    @classmethod
    def _within_limits(cls, raw: Any) -> Any:
        return _check_raw_rule(raw, capped=True)

    @field_validator("rule", mode="wrap")
    @classmethod
    def _named_as_written(cls, raw: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Errors name the part at fault as the client wrote it: rule.all[1].days, not
        rule.all.all[1].condition.days (pydantic adds the tag of each rule's shape)."""
        try:
            return handler(raw)
        except ValidationError as error:
            raise ValidationError.from_exception_data("rule", [
                _error(e["type"], e["msg"], _as_written(e["loc"]), e.get("input")) for e in error.errors()]) from None

    @field_validator("rule")
    @classmethod
    def _meaningful(cls, rule: Rule) -> Rule:
        errors = _meaningless(rule, ())
        if errors:
            raise ValidationError.from_exception_data("rule", errors)
        return rule

    @model_validator(mode="after")
    def _storable(self) -> CustomSegmentIn:
        """Store nothing that would not read back or evaluate: every later read would fail on it."""
        now = datetime.now(timezone.utc)
        stored = self.stored(now)
        try:
            again = from_stored_text(stored_text(stored))
            if again != stored:
                raise ValueError("it reads back different from what was written")
            _matches(again.rule, customer_features(None, [], {}, now), [], {}, set(), now)
        except Exception as error:  # noqa: BLE001 - whatever it is, the definition is refused, not stored
            detail = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
            raise ValidationError.from_exception_data("rule", [_error(
                "not_storable", f"cannot be stored and evaluated: {detail}", ("rule",), self.rule)]) from None
        return self

    @property
    def segment_id(self) -> str:
        return segment_id_for("custom", self.name)

    def stored(self, created_at: datetime) -> CustomSegment:
        return CustomSegment(segment_id=self.segment_id, name=self.name, description=self.description,
                             rule=self.rule, created_at=created_at)


# What each operator compares, for the fields that are not numbers (numbers: _consistent).
TEXT_OPERATORS = ("==", "!=", "in")
ORDERED_OPERATORS = (">=", ">", "<=", "<")


def _meaningless(rule: Rule, path: tuple[str | int, ...]) -> list[InitErrorDetails]:
    """Conditions of a new definition that could only ever match no one, or everyone but those
    meant: a text field ordered (`tag >= "Champions"` would mean not Champions), compared with a
    value that is not a text, `contains` on a field that is not a list, an empty `in`. Checked
    when a definition is created only: one stored before still reads, and evaluates as it did."""
    if isinstance(rule, (AllOf, AnyOf)):
        key = "all" if isinstance(rule, AllOf) else "any"
        return [error for i, entry in enumerate(getattr(rule, key)) for error in _meaningless(entry, path + (key, i))]
    c, errors = rule, []
    if c.op == "in" and isinstance(c.value, list) and not c.value:
        errors.append(_error("empty_in", "'in' needs at least one value: an empty list matches no one",
                             path + ("value",), c.value))
    if c.field in TEXT_FIELDS:
        if c.op not in TEXT_OPERATORS:
            errors.append(_error("text_operator", f"'{c.field}' is a text: compare it with ==, != or in",
                                 path + ("op",), c.op))
        elif c.op != "in" and not isinstance(c.value, str) and not (c.field == "tag" and isinstance(c.value, list)):
            # (a tag == or != a list: has one of them, or none of them)
            errors.append(_error("text_value", f"'{c.field}' is a text: compare it with a text", path + ("value",),
                                 c.value))
    elif c.field == "attribute":
        if c.op in ORDERED_OPERATORS and (isinstance(c.value, (bool, list))):
            errors.append(_error("ordered_value", f"'{c.op}' orders numbers or texts: compare with one of them",
                                 path + ("value",), c.value))
        if c.op == "contains" and isinstance(c.value, list):
            errors.append(_error("contains_value", "'contains' looks for one value in a list attribute: give one value",
                                 path + ("value",), c.value))
    return errors


class CustomSegment(BaseModel):
    segment_id: str
    name: str
    description: str
    rule: Rule
    created_at: datetime

    @field_validator("rule", mode="before")
    @classmethod
    def _finite(cls, raw: Any) -> Any:
        return _check_raw_rule(raw, capped=False)


def listed_size(definition: CustomSegment) -> int:
    """What a definition takes on every page of GET /segments: its JSON with each character past
    ASCII escaped, as the response is written (an emoji: 4 bytes sent, 12 listed). Bounded by
    MAX_DEFINITION_BODY_BYTES too, so that MAX_CUSTOM_SEGMENTS of them stay under Lambda's 6 MB."""
    return len(json.dumps(definition.model_dump(mode="json")))


# The most GET /segments lists of the definitions: MAX_CUSTOM_SEGMENTS of the largest it takes,
# so that with a page of segments the answer stays under Lambda's 6 MB.
MAX_LISTED_DEFINITIONS_BYTES = MAX_CUSTOM_SEGMENTS * MAX_DEFINITION_BODY_BYTES


def listable(definitions: list[CustomSegment]) -> tuple[list[CustomSegment], list[str]]:
    """The definitions GET /segments lists in full, in order, and the ids of those it cannot: one
    larger as listed than POST /segments takes now (stored before it bounded a definition as
    listed, or by hand), or past MAX_LISTED_DEFINITIONS_BYTES with those before it (by hand: more
    than MAX_CUSTOM_SEGMENTS). Those are still applied: only their listing would break the page."""
    listed, unlisted, total = [], [], 0
    for definition in definitions:
        size = listed_size(definition)
        if size <= MAX_DEFINITION_BODY_BYTES and total + size <= MAX_LISTED_DEFINITIONS_BYTES:
            listed.append(definition)
            total += size
        else:
            unlisted.append(definition.segment_id)
    return listed, unlisted


def stored_text(definition: CustomSegment) -> str:
    """The form a definition is stored in; creation checks that it reads back with `from_stored_text`."""
    return definition.model_dump_json()


# The most a stored definition's text may hold: every definition POST /segments took (a body of
# MAX_DEFINITION_BODY_BYTES, stored with its characters as sent) is far within it. One past it was
# put in the table by hand: it does not read, so that it can swell no listing and no evaluation.
MAX_STORED_DEFINITION_CHARS = 2 * MAX_DEFINITION_BODY_BYTES


def from_stored_text(text: str) -> CustomSegment:
    if len(text) > MAX_STORED_DEFINITION_CHARS:
        raise ValueError(f"a stored definition of {len(text):,} characters: at most {MAX_STORED_DEFINITION_CHARS:,}")
    return CustomSegment.model_validate_json(text)


_reported_failures: set[str] = set()


def matches(rule: Rule, features: CustomerFeatures, history: list[HistoryEvent], categories: dict[str, str],
            tags: set[str], now: datetime) -> bool:
    """Whether a customer is in a custom segment. A rule that raises is counted as not matching:
    one faulty definition must not fail a customer's read, nor the nightly run for everyone."""
    try:
        return _matches(rule, features, history, categories, tags, now)
    except Exception:  # noqa: BLE001 - the fault boundary of one definition
        metrics.add_metric("SegmentRuleFailures", MetricUnit.Count, 1)
        text = rule.model_dump_json()
        if text not in _reported_failures:  # once per rule and process: the nightly run meets it per customer
            _reported_failures.add(text)
            logger.exception("a custom segment rule failed to evaluate; it is skipped", extra={"rule": text})
        return False


def _matches(rule: Rule, features: CustomerFeatures, history: list[HistoryEvent], categories: dict[str, str],
             tags: set[str], now: datetime) -> bool:
    if isinstance(rule, AllOf):
        return all(_matches(r, features, history, categories, tags, now) for r in rule.all)
    if isinstance(rule, AnyOf):
        return any(_matches(r, features, history, categories, tags, now) for r in rule.any)
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
