"""How a figure is printed in Markdown: table cells and tables.

The run report and `dfl compare` print their numbers through here, so a figure reads the same in
both; a figure the run did not record is "n/a" rather than an error or a zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.25 -> "25.0 %"."""
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def big(value: float | None) -> str:
    """A large count with thousands separators: 24,450,400."""
    return "n/a" if value is None else f"{value:,.0f}"


def sci(value: float | None) -> str:
    """Scientific notation, for figures that span orders of magnitude (a difference std)."""
    return "n/a" if value is None else f"{value:.2e}"


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def short_seconds(seconds: float) -> str:
    """A window's length without a spurious decimal: 30 -> "30 s", 6.29 -> "6.3 s"."""
    return f"{seconds:.0f} s" if abs(seconds - round(seconds)) < 0.05 else f"{seconds:.1f} s"


def duration(seconds: float) -> str:
    """A run's length, with minutes once it has any: 75 -> "75.0 s (1 min 15 s)"."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.1f} s ({minutes} min {rest} s)" if minutes else f"{seconds:.1f} s"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: str = "") -> str:
    """A Markdown table; `numeric` marks right-aligned columns ("n"), by default all but the
    first."""
    numeric = numeric or "-" + "n" * (len(header) - 1)
    align = ["---:" if flag == "n" else "---" for flag in numeric]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
