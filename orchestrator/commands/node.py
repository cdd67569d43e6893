"""`dfl node serve --config FILE`: run one node in the foreground."""

from __future__ import annotations

import argparse

from node.service.main import add_arguments, serve


def register(commands: argparse._SubParsersAction) -> None:
    node = commands.add_parser("node", help="run a single node")
    actions = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "serve",
        help="serve one node until SIGTERM or Ctrl-C",
        description="Starts a DFL node: gRPC on --port, /metrics on metrics_port, its key and "
        "chain in data_dir (created on first start, verified and continued on the next). "
        "Settings come from --config and DFL_NODE_<SETTING> environment variables.",
    )
    add_arguments(run)
    run.set_defaults(handler=serve)
