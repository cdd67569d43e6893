"""`dfl report DIR`: (re-)render a run directory's report, plots and summary.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.report import NotARunDirectory, render_report


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="render a run directory's report.md, plots and summary.json",
        description="Reads DIR/run.json, metrics.csv, spec.yaml and nodes/*/{chain.sqlite,"
        "profile.json}; writes DIR/report.md, DIR/plots/*.png and DIR/summary.json. Missing node "
        "files are reported, not fatal. Exit 2 when DIR is not a run directory.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="the run directory")
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    try:
        path = render_report(args.directory)
    except NotARunDirectory as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
