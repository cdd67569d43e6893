"""The `dfl` command line; each command group in orchestrator/commands/ registers itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator.commands import (
    chain,
    compare,
    data,
    keys,
    load,
    node,
    orchestrate,
    report,
    run,
    simulate,
)

COMMAND_GROUPS = (run, load, simulate, orchestrate, report, compare, node, keys, chain, data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfl",
        description="dfl-testbed: run and audit blockchain-based federated learning experiments.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
