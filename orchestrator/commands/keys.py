"""`dfl keygen DIR`: a node identity for a data directory; `dfl control-key DIR`: the key an
orchestrator signs control calls with, for nodes started by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.ledger.keys import KEY_FILE, NodeKey
from node.service.control import KEY_FILE as CONTROL_KEY_FILE
from node.service.control import PUBLIC_FILE, ControlSigner


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "keygen",
        help="create a node key (ECDSA P-256) in a data directory",
        description="Creates DIR/node_key.pem (owner-readable only) and prints the node's address. "
        "An existing key is never overwritten.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="the node's data directory")
    parser.set_defaults(handler=run_keygen)

    control = commands.add_parser(
        "control-key",
        help="create an orchestrator key for nodes started by hand",
        description="Creates DIR/control_key.pem (the orchestrator's private key, owner-readable "
        "only) and DIR/control_key.pub (its public key in hex), and prints how to pass them: "
        "nodes take control calls (InjectSamples, AddPeer, RemovePeer, GetModel) only when "
        "signed by a key their config names as control_key. `dfl run` and `docker compose up` "
        "make their own; this is for nodes you start with `dfl node serve`.",
    )
    control.add_argument("directory", type=Path, metavar="DIR", help="where to write the key")
    control.set_defaults(handler=run_control_key)


def _exists(path: Path, what: str) -> bool:
    """A key is never overwritten: True (after saying so) when `path` holds one already."""
    if path.exists():
        print(f"{path} exists; remove it first to make a new {what}", file=sys.stderr)
        return True
    return False


def run_keygen(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if _exists(directory / KEY_FILE, "identity"):
        return 1
    key = NodeKey.generate()
    path = key.save(directory)
    print(f"address {key.address.hex()}")
    print(f"key     {path}")
    return 0


def run_control_key(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if _exists(directory / CONTROL_KEY_FILE, "key"):
        return 1
    signer = ControlSigner.generate()
    path = signer.save(directory)
    print(f"private key  {path}  (keep it; only the orchestrator reads it)")
    print(f"public key   {directory / PUBLIC_FILE}")
    print()
    print("Give every node the public key, one of:")
    print(f"  node.yaml:    control_key: {signer.public_hex}")
    print(f"  environment:  DFL_NODE_CONTROL_KEY={signer.public_hex}")
    print(f"  a file:       control_key_file: {directory / PUBLIC_FILE}")
    print("and the orchestrator the private key:")
    print(f"  dfl orchestrate SPEC --node ... --control-key {path}   (or DFL_CONTROL_KEY={path})")
    return 0
