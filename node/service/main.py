"""Starting a node from the command line: `python -m node --config FILE` or `dfl node serve`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from node.service.config import NodeConfigError, load_node_config

# Large gRPC messages (1.7 MB models) allocate far faster when glibc serves them from the heap
# rather than fresh mmaps (DESIGN.md measured 10.5 ms against 3.6 ms per message).
MALLOC_SETTING = ("MALLOC_MMAP_THRESHOLD_", "67108864")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="node settings (YAML); DFL_NODE_* override")
    parser.add_argument("--log-level", default=os.environ.get("DFL_LOG_LEVEL", "INFO"))


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_node_config(args.config)
    except NodeConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from node.service.health import StartingServer, hold_start
    from node.service.tls import TlsFileError

    try:  # the port answers (NOT_SERVING) before torch loads and the chain is verified
        starting = StartingServer(config)
    except (TlsFileError, OSError) as error:  # a key others can read, a port in use
        print(f"error: {error}", file=sys.stderr)
        return 2
    with starting:  # until the node serves on the port, or failed to start
        hold_start(config.hold_start)  # a test hook (NodeConfig's docstring)
        # torch loads here, not at --help
        from node.service.blade_server import BladeNode
        from node.service.chaindir import DataDirectoryError
        from node.service.fedavg_server import FedAvgNode
        from node.service.server import DflNode

        nodes = {"blade-fl": BladeNode, "fedavg": FedAvgNode}
        try:
            node = nodes.get(config.protocol, DflNode)(config)
        except DataDirectoryError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        try:
            asyncio.run(node.serve_until_signalled())
        except TlsFileError as error:  # a peer's channel: a missing certificate
            print(f"error: {error}", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node",
        description="Run one node (DFL, BLADE-FL or FedAvg, as its config says).",
    )
    add_arguments(parser)
    return serve(parser.parse_args(argv))
