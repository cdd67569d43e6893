"""What is wrong with a spec: every problem at once, each with its field path and, for a file, line.

A research run with a typo does not crash, it silently measures the default; so a spec is refused
with all of its problems listed, and one edit of the file can fix them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Location = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (dotted field path, file line if known) and what."""

    path: str
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.path}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot be used; `problems` lists every one found, the message shows them all."""

    def __init__(self, source: str, problems: Sequence[Problem] = ()) -> None:
        """`SpecError(source, problems)`; `SpecError(message)` alone for a problem with no field."""
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        if not count:
            super().__init__(source)
            return
        lines = "\n".join("  " + p.render(source) for p in self.problems)
        super().__init__(
            f"invalid experiment spec {source} ({count} problem{'s' * (count != 1)}):\n{lines}"
        )

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.problems]


class FieldProblems(ValueError):
    """Raised by a cross-field check to report problems at paths below the model that checks.

    Pydantic would file a model validator's error under the model's own path; the reader turns
    these back into one problem per named field.
    """

    def __init__(self, problems: Sequence[tuple[Location, str]]) -> None:
        super().__init__("; ".join(f"{dotted(loc)}: {message}" for loc, message in problems))
        self.problems = list(problems)


def check(problems: Sequence[tuple[Location, str]]) -> None:
    """Raises the problems found by a cross-field check, if there are any."""
    if problems:
        raise FieldProblems(problems)


def dotted(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"
