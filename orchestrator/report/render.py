"""Rendering a run directory: report.md, plots/*.png and summary.json, from one summary.

Matplotlib is imported only when plots are drawn (plots.py), so importing the report stays cheap
for the CLI.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.report.markdown import report_markdown
from orchestrator.report.readers import load_run
from orchestrator.report.schema import PLOTS_DIR, REPORT_FILE, SUMMARY_FILE
from orchestrator.report.summary import summarize


def render_report(directory: Path | str) -> Path:
    """Writes DIR/report.md, DIR/plots/*.png and DIR/summary.json; returns the report's path."""
    data = load_run(directory)
    summary = summarize(data)
    plot_dir = data.directory / PLOTS_DIR
    plot_dir.mkdir(exist_ok=True)
    from orchestrator.report import plots  # matplotlib is heavy: load it only when drawing

    plots.draw_plots(data, summary, plot_dir)
    summary_path = data.directory / SUMMARY_FILE
    summary_path.write_text(json.dumps(json_ready(asdict(summary)), indent=2) + "\n")
    report_path = data.directory / REPORT_FILE
    report_path.write_text(report_markdown(data, summary))
    return report_path


def json_ready(value: Any) -> Any:
    """`value` with NaN and infinities as None: they are not JSON (json.dumps writes a bare NaN,
    which strict parsers refuse). summary.json and `dfl compare`'s compare.json both go through
    here."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value
