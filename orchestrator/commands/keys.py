"""`dfl keygen DIR`: a node identity for a data directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.ledger.keys import KEY_FILE, NodeKey


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "keygen",
        help="create a node key (ECDSA P-256) in a data directory",
        description="Creates DIR/node_key.pem (owner-readable only) and prints the node's address. "
        "An existing key is never overwritten.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="the node's data directory")
    parser.set_defaults(handler=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if (directory / KEY_FILE).exists():
        print(
            f"{directory / KEY_FILE} exists; remove it first to make a new identity",
            file=sys.stderr,
        )
        return 1
    key = NodeKey.generate()
    path = key.save(directory)
    print(f"address {key.address.hex()}")
    print(f"key     {path}")
    return 0
