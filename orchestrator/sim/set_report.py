"""A set's results: the summary table (summary.md, summary.csv) and the set's figure.

Per case the table gives the mean over finished repetitions of the set's metric and of the
figures the summaries have (final accuracy, ticks to 0.9, final loss, the chain's share), with
the spread (min..max) when there are several repetitions, and how long the runs took.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.sim import figures
from orchestrator.sim.sweep import SweepPlan, completed_summaries

TABLE_FIELDS = ("final_accuracy", "ticks_to_0.9", "final_loss", "chain_share", "wall_seconds")


def _spread(values: Sequence[float | None]) -> tuple[float | None, float | None, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return None, None, None
    return float(np.mean(known)), float(np.min(known)), float(np.max(known))


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _text(mean: float | None, low: float | None, high: float | None, missing: int) -> str:
    if mean is None:
        return "never" if missing else "-"
    text = _number(mean)
    if low is not None and high is not None and high > low:
        text += f" ({_number(low)}..{_number(high)})"
    if missing:
        text += f" [{missing} never]"
    return text


def write_set_report(plan: SweepPlan, chain: bool = True) -> dict[str, Path]:
    definition = plan.definition
    summaries = completed_summaries(plan, chain)
    fields = [definition.metric, *(f for f in TABLE_FIELDS if f != definition.metric)]
    fields = [f for f in fields if any(f in s for runs in summaries.values() for s in runs)]
    rows: list[dict[str, Any]] = []
    for case, runs in summaries.items():
        row: dict[str, Any] = {
            "case": case.slug,
            "row": definition.rows[case.row].label,
            "column": definition.columns[case.column].label,
            "runs": f"{len(runs)}/{case.repetitions}",
        }
        for name in fields:
            values = [s.get(name) for s in runs if name in s]
            mean, low, high = _spread(values)
            row[name] = _text(mean, low, high, sum(v is None for v in values))
            row[f"{name}_mean"] = mean
        rows.append(row)
    paths = {
        "csv": _write_csv(plan.out / "summary.csv", rows),
        "md": _write_markdown(plan, rows, fields),
        "figure": _figure(plan, summaries, chain),
    }
    return paths


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_markdown(plan: SweepPlan, rows: list[dict[str, Any]], fields: list[str]) -> Path:
    header = ["row", "column", "runs", *fields]
    lines = [
        f"# {plan.definition.title}",
        "",
        "Mean over the finished repetitions, (min..max) when there are several; "
        "`never` when no run reached it.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    path = plan.out / "summary.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _figure(plan: SweepPlan, summaries: dict, chain: bool) -> Path:
    definition = plan.definition
    path = plan.out / figures.SET_FIGURE
    if definition.figure == "grid":
        cells: dict[tuple[int, int], list[Path]] = {
            (run.case.row, run.case.column): [] for run in plan.runs
        }
        for run in plan.runs:
            if run.done(chain):
                cells[(run.case.row, run.case.column)].append(run.out)
        return figures.plot_grid(
            path,
            definition.title,
            [r.label for r in definition.rows],
            [c.label for c in definition.columns],
            cells,
        )
    lines: dict[str, list[tuple[float, list[float]]]] = {}
    for case, runs in summaries.items():
        column = definition.columns[case.column]
        x = column.x if column.x is not None else float(case.column)
        values = [float(s[definition.metric]) for s in runs if s.get(definition.metric) is not None]
        lines.setdefault(definition.rows[case.row].label, []).append((x, values))
    return figures.plot_curves(path, definition.title, definition.x_label, definition.metric, lines)
