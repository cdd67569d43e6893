"""`dfl run SPEC --runtime local --out DIR`: run an experiment and write its report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RUNTIMES = ("local",)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run",
        help="run an experiment spec and write its report",
        description="Starts the spec's nodes on the chosen runtime, injects samples at the "
        "spec's rate, samples accuracy and CPU into DIR/metrics.csv, stops at the spec's "
        "duration (or Ctrl-C, which still writes the report), and writes DIR/report.md, "
        "DIR/plots/*.png and each node's data directory (keys, chain, log) under DIR/nodes/.",
    )
    parser.add_argument("spec", type=Path, metavar="SPEC", help="experiment YAML")
    parser.add_argument("--runtime", choices=RUNTIMES, default="local")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="run directory")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field, e.g. --set duration=60 --set nodes.distribution=labels:2",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from orchestrator.report import render_report
    from orchestrator.runtimes.local import RunFailed, run_local
    from orchestrator.spec import SpecError, load_spec, parse_override, with_overrides

    try:
        spec = load_spec(args.spec)
        overrides = dict(parse_override(item) for item in args.set)
        if overrides:
            spec = with_overrides(spec, overrides)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; choose a new --out", file=sys.stderr)
        return 2
    try:
        run_local(spec, args.out, progress=not args.quiet)
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        render_report(args.out)
        return 1
    report = render_report(args.out)
    print(f"report: {report}")
    return 0
