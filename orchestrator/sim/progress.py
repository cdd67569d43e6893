"""A progress bar for long simulations: done/total, rate per second, time left, and a note.

On a terminal it redraws one line; elsewhere (a log file, a sweep's worker) it prints a line at
every tenth of the way, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(
        self, total: float, unit: str, *, label: str = "", stream: TextIO | None = None
    ) -> None:
        self.total = total
        self.unit = unit
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()
        self.started = time.perf_counter()
        self._next_line = 0.1

    def update(self, done: float, note: str = "") -> None:
        fraction = min(1.0, done / self.total) if self.total else 1.0
        if not self.interactive and fraction < self._next_line and fraction < 1.0:
            return
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else float("inf")
        bar = "#" * round(fraction * 24)
        text = (
            f"{self.label}[{bar:<24}] {done:g}/{self.total:g} {self.unit}s "
            f"{rate:.1f} {self.unit}s/s, {_clock(elapsed)} elapsed, {_clock(left)} left"
            + (f"  {note}" if note else "")
        )
        if self.interactive:
            self.stream.write("\r" + text + " " * 4)
        else:
            self.stream.write(text + "\n")
            while self._next_line <= fraction:
                self._next_line += 0.1
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
