"""The value types of a spec: strict numbers, durations, names, and the strict model base.

Strict because YAML guesses types: `"4"` where a count belongs, or `yes` where a number does, is
a mistake in the file, not something to convert silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Self

from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Strict

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)")


def parse_seconds(value: Any) -> float:
    """Seconds from a number or a string such as `180`, `180s`, `2.5m`, `1h30m`, `500ms`."""
    if isinstance(value, bool):
        raise ValueError("must be a duration: seconds or a string like 180s, 3m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or _DURATION_PART.sub("", text).strip():
                raise ValueError(
                    f"{value!r} is not a duration (seconds, or like 180s, 3m, 1h30m, 500ms)"
                ) from None
            seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    else:
        raise ValueError("must be a duration: seconds or a string like 180s, 3m, 1h30m")
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    return seconds


Int = Annotated[int, Strict()]  # no "4" or true where a count belongs
Bool = Annotated[bool, Strict()]  # no "yes", 1 or "true" where a switch belongs
# Ints are fine, strings and booleans are not; nor are .inf and .nan, which no experiment means
# and which the canonical JSON form (orchestrator/spec/write.py) could not write.
Float = Annotated[float, Strict(), AllowInfNan(False)]
Seconds = Annotated[float, BeforeValidator(parse_seconds)]


class Model(BaseModel):
    """A spec section: unknown keys are errors, and a validated value never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with `update`, validated as a file would be (pydantic's own copy is not).

        An unvalidated copy would keep what validation derived from the old values (the parsed
        partition, the drawn edges, the built behaviours) and let through values that no file
        could hold. A bad update raises pydantic's ValidationError; `with_overrides` is the way
        for values from users, with SpecError and dotted paths.
        """
        if not update:
            return super().model_copy(deep=deep)
        changed = {
            key: value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value
            for key, value in update.items()
        }
        return self.model_validate({**self.model_dump(exclude_none=True), **changed})


def named(value: Any, what: str) -> Any:
    """Lets `x: name` stand for `x: {name: name}`."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        return value
    raise ValueError(f"must be {what} name or a mapping with name and options")


def known(value: str, choices: Sequence[str], what: str) -> str:
    """`value` if it is one of `choices`, else a ValueError that lists them."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(choices)}")
    return value
