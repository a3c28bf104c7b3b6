"""Per-entry validation of batches: one bad entry is reported, the others go on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True)
class Rejection:
    index: int
    id: str | None
    errors: list[FieldError]


@dataclass
class Checked(Generic[M]):
    valid: list[M] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # each valid entry's index in the batch

    def reject_stored(self, refused: dict[int, FieldError], id_field: str) -> None:
        """Move entries that storage refused (by their place in `valid`) to `rejected`."""
        for place, error in refused.items():
            self.rejected.append(Rejection(self.positions[place], getattr(self.valid[place], id_field), [error]))
        self.rejected.sort(key=lambda rejection: rejection.index)


    def refuse(self, refusal: Callable[[M], FieldError | None], id_field: str) -> None:
        """Move valid entries that a rule refuses to `rejected`, each with the rule's reason."""
        kept: list[M] = []
        positions: list[int] = []
        for entry, position in zip(self.valid, self.positions):
            error = refusal(entry)
            if error is None:
                kept.append(entry)
                positions.append(position)
            else:
                self.rejected.append(Rejection(position, getattr(entry, id_field), [error]))
        self.valid, self.positions = kept, positions
        self.rejected.sort(key=lambda rejection: rejection.index)


def field_errors(error: ValidationError) -> list[FieldError]:
    """Pydantic errors as (dotted field path, message); model-level messages name their field."""
    result = []
    for item in error.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if not path and ": " in message:
            path, message = message.split(": ", 1)
        if item["type"] == "extra_forbidden":
            message = "unknown field (it would be lost)"
        result.append(FieldError(path or "entry", message))
    return result


def validate_each(
    entries: list[Any], model: type[M], id_field: str, context: dict[str, Any] | None = None
) -> Checked[M]:
    checked: Checked[M] = Checked()
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict):
            checked.rejected.append(
                Rejection(index, None, [FieldError("entry", "must be a JSON object")])
            )
            continue
        try:
            checked.valid.append(model.model_validate(raw, context=context))
            checked.positions.append(index)
        except ValidationError as error:
            entry_id = raw.get(id_field)
            checked.rejected.append(
                Rejection(index, entry_id if isinstance(entry_id, str) else None, field_errors(error))
            )
    return checked


def one_of(described: str, *branches: Any) -> Any:
    """A union of JSON value types whose error is one message, where pydantic gives one per branch
    (`attributes.l.bool: Input should be a valid boolean`, `attributes.l.constrained-int: ...`, and
    so on). A value of a type the union takes gets its own branch's message (a text too long, a
    number too large); any other gets "must be `described`". Valid values are the union's, as before."""
    union = Union[branches]  # noqa: UP007 - built from the branches given
    by_type = {_json_type(branch): TypeAdapter(branch) for branch in branches}

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            adapter = by_type.get(type(value))
            if adapter is None:
                raise PydanticCustomError("value_type", "must be {described}", {"described": described}) from None
            try:
                adapter.validate_python(value)
            except ValidationError as error:
                first = error.errors(include_url=False)[0]
                where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
                raise PydanticCustomError("value_invalid", "{where}{message}",
                                          {"where": f"{where.lstrip('.')}: " if where else "",
                                           "message": first["msg"]}) from None
            raise  # the branch alone takes it: the union's own reason then

    return Annotated[union, WrapValidator(validate)]


def _json_type(branch: Any) -> type:
    """The Python type of the JSON values a branch takes: Annotated[str, ...] -> str, list[str] -> list."""
    while get_origin(branch) is Annotated:
        branch = get_args(branch)[0]
    return get_origin(branch) or branch
