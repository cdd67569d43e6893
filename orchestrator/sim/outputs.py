"""What a simulation writes: CSV series in the DFL simulator's shapes, and the run's summary.

accuracy.csv has one row per record (tick, then one column per node), as the original's
`accuracy.csv`; weight_diff.csv one row per record with one column per layer (paper eq. 5);
reputation.csv one row per aggregation and generator; summary.json the figures a sweep tabulates.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from node.datadir import CATEGORIES
from node.service.profiler import Profiler

ACCURACY_FILE = "accuracy.csv"
WEIGHT_DIFF_FILE = "weight_diff.csv"
REPUTATION_FILE = "reputation.csv"
CHAIN_FILE = "chain.csv"
ROUNDS_FILE = "rounds.csv"
SUMMARY_FILE = "summary.json"
FINAL_RECORDS = 5  # the paper's figures are read off the last few records


def cpu_figures(profiler: Profiler) -> dict[str, Any]:
    """A run's CPU by category and the chain's share of it, as a node's report gives them."""
    by_category = profiler.by_category()
    profiled = sum(by_category.values())
    blockchain = by_category.get("blockchain", 0.0)
    counts = profiler.counts()
    # Every category, 0 where none was spent (FedAvg's blockchain), so runs compare key by key
    seconds = {**dict.fromkeys(CATEGORIES, 0.0), **by_category}
    return {
        "cpu_seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
        "chain_share": round(blockchain / profiled, 4) if profiled else 0.0,
        # Where the chain's share comes from: every (task, category), with how often it ran.
        "cpu_by_task": [
            {"task": task, "category": category, "seconds": round(seconds, 3), "scopes": count}
            for (task, category), seconds in sorted(profiler.totals().items())
            for count in (counts.get((task, category), 0),)
        ],
    }


def layer_groups(names: Sequence[str]) -> dict[str, list[int]]:
    """Parameter indices by layer: `conv1.weight` and `conv1.bias` are one layer, `conv1`."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault(name.rsplit(".", 1)[0], []).append(index)
    return groups


def layer_sums(
    flat: np.ndarray, slices: Sequence[slice], groups: dict[str, list[int]]
) -> list[float]:
    """Per layer, the sum of all its weights and biases: eq. 5's model_n for one model."""
    return [
        float(sum(flat[slices[i]].sum(dtype=np.float64) for i in members))
        for members in groups.values()
    ]


def weight_difference(sums: np.ndarray) -> np.ndarray:
    """Paper eq. 5 for N models (rows) and L layers (columns): the mean absolute difference of
    each layer's weight sum between neighbours on a ring of the nodes, one value per layer."""
    n = len(sums)
    if n < 2:
        return np.zeros(sums.shape[1])
    ring = np.abs(np.diff(sums, axis=0)).sum(axis=0) + np.abs(sums[0] - sums[-1])
    return ring / n


class SeriesCsv:
    """A CSV written row by row and flushed, so a run cut short still leaves its series."""

    def __init__(self, path: Path, header: Sequence[str]) -> None:
        self.path = path
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(header)

    def write(self, row: Iterable[Any]) -> None:
        self._writer.writerow([_cell(value) for value in row])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_series(path: Path) -> tuple[list[str], np.ndarray]:
    """A series CSV back as (header, rows as floats)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [[float(cell) for cell in row] for row in reader if row]
    return header, np.array(rows, dtype=np.float64).reshape(len(rows), len(header))


def first_tick_at(ticks: np.ndarray, values: np.ndarray, level: float) -> float | None:
    """The first tick at which `values` reaches `level`, or None."""
    hits = np.flatnonzero(values >= level)
    return float(ticks[hits[0]]) if len(hits) else None


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Written whole or not at all: its presence is what marks a run finished."""
    partial = path.with_suffix(".partial")
    text = json.dumps(summary, indent=2, default=_json_default) + "\n"
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def read_summary(directory: Path) -> dict[str, Any]:
    return json.loads((directory / SUMMARY_FILE).read_text(encoding="utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.floating | np.integer):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
