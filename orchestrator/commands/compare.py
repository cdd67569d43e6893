"""`dfl compare RUN_A RUN_B ...`: finished run directories side by side (e.g. DFL vs BLADE-FL)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.compare import DEFAULT_OUT, TooFewRuns, compare_runs
from orchestrator.report import NotARunDirectory

RUN_DIRECTORY = (
    "a run directory is what `dfl run --out DIR` writes: run.json, metrics.csv, spec.yaml and "
    "nodes/<name>/{profile.json,chain.sqlite}"
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare finished runs side by side (accuracy, CPU, blockchain share, bytes sent)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""\
Compares two or more finished run directories, e.g. a DFL and a BLADE-FL run of one
experiment. Per run:
  - test-set accuracy against wall-clock time: mean over nodes, with a min..max band
  - final test-set accuracy (mean and min over nodes), nodes, duration, protocol
  - CPU seconds by category (ml, blockchain, network), summed over nodes and per node
  - blockchain share of the profiled CPU: mean over nodes and min..max
  - bytes sent per node (metric bytes_sent; "not recorded" for runs without it)
  - any protocol-specific figures of the run summary (BLADE-FL's, for instance)

Writes OUT/compare.md, OUT/compare.json, OUT/accuracy.png and OUT/cpu.png (OUT is
{DEFAULT_OUT} unless --out says otherwise); the run directories are only read.
Exit 2 when fewer than two runs are given or an argument is not a run directory.""",
    )
    parser.add_argument(
        "directories",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="a run directory (run.json, metrics.csv, nodes/<name>/...), as `dfl run` writes it",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"directory for the comparison, created if missing (default: {DEFAULT_OUT})",
    )
    parser.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    try:
        path = compare_runs(args.directories, args.out)
    except TooFewRuns as error:
        print(f"error: {error}, got {len(args.directories)}", file=sys.stderr)
        return 2
    except NotARunDirectory as error:
        print(f"error: {error}\n({RUN_DIRECTORY})", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
