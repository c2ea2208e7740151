"""The base of every config model: pydantic, with unknown keys and booleans-as-numbers refused.

pydantic's lax mode reads ``true`` as 1 wherever a number (or a ``Literal[1, 2]``) is expected, at
the top of a field or inside its list: ``epochs: true``, ``depth: [true, 2]`` or ``stride: true``
would silently become 1. In a config they are always a slip, so a boolean is refused wherever
the field's type has no ``bool`` in it.
"""
from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, (list, tuple)) and any(_holds_bool(v) for v in value)


def _takes_bool(annotation: Any) -> bool:
    """Whether a type (or a Literal's values) admits a boolean anywhere in it."""
    if annotation is bool or isinstance(annotation, bool) or annotation is Any:
        return True
    return any(_takes_bool(a) for a in get_args(annotation))


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: Any, info) -> Any:
        if _holds_bool(v) and not _takes_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError("Input should be a number, not a boolean")
        return v


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line naming the first failing field: ``train.epochs: Input should be ... (got -1)``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"]))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and not isinstance(err["input"], (dict, list)) and repr(err["input"]) not in msg:
        msg = f"{msg} (got {err['input']!r})"
    return f"{loc}: {msg}" if loc else msg
