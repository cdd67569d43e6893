"""`dfl chain verify|export|spec DIR` and `dfl chain audit RUN_DIR`: check a node's chain store
offline, or re-run it; audit every chain of a run against the others and the experiment."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from node.ledger import records
from node.ledger.export import export_lines
from node.ledger.store import ChainCorrupted, ChainStore
from orchestrator.commands.chain_contributions import add_contributions


def register(commands: argparse._SubParsersAction) -> None:
    chain = commands.add_parser("chain", help="verify or export a node's chain store")
    actions = chain.add_subparsers(dest="chain_command", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify",
        help="re-check every block's links, digests, signatures and confirmations",
        description="Exit 0 when the chain verifies; exit 1 printing the first bad height and the "
        "reason; exit 2 when there is no readable store.",
    )
    verify.add_argument(
        "directory", type=Path, metavar="DIR", help="data directory or chain.sqlite"
    )
    verify.set_defaults(handler=run_verify)

    export = actions.add_parser(
        "export",
        help="print the chain as JSON lines (models replaced by their digests)",
        description="One JSON object per line: the genesis (height 0), then every block.",
    )
    export.add_argument(
        "directory", type=Path, metavar="DIR", help="data directory or chain.sqlite"
    )
    export.set_defaults(handler=run_export)

    spec = actions.add_parser(
        "spec",
        help="print the experiment spec the chain was produced by (YAML)",
        description="The genesis carries the canonical experiment spec; this prints it as YAML "
        "that `dfl simulate` and `dfl run` accept, so any chain can be re-run: "
        "`dfl chain spec DIR > again.yaml && dfl run again.yaml`. Exit 1 when the spec does not "
        "match the digest the genesis records; exit 2 when there is no store or no spec in it.",
    )
    spec.add_argument("directory", type=Path, metavar="DIR", help="data directory or chain.sqlite")
    spec.set_defaults(handler=run_spec)

    audit = actions.add_parser(
        "audit",
        help="check every node's chain of a run, on its own and against the others",
        description="Audits the chain of every node of a run directory (as `dfl run` and "
        "`dfl simulate` write it): each chain verifies on its own (as `dfl chain verify`); "
        "every genesis is the same and records the run's spec; each store belongs to its node. "
        "DFL: every transaction in a node's chain is that node's, once in the run; every "
        "receipt names its transaction and was written by another node of the run, no further "
        "from the generator in the topology than its ttl says (tx.ttl - received_at_ttl hops); "
        "every confirmation was signed by the writer of the receipt it confirms, a neighbour of "
        "the chain's node, and no receipt is confirmed twice. BLADE-FL: miners and models are "
        "the run's nodes, and the chains hold the same block at every height below both heads "
        "(they may differ at the lower head: a vote the run ended before settling). "
        "Exit 0 printing one line per node and a total (also for a run without chains, such as "
        "FedAvg: nothing there can be inconsistent); exit 1 naming the first inconsistency "
        "(node, height, record and digest, rule); exit 2 when RUN_DIR is not a run directory.",
    )
    audit.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR",
        help="a run directory: spec.yaml, run.json or summary.json, nodes/<node>/chain.sqlite",
    )
    audit.set_defaults(handler=run_audit)

    add_contributions(actions)


def run_verify(args: argparse.Namespace) -> int:
    try:
        with ChainStore.open(args.directory, verify=False) as store:
            summary = store.verify()
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ChainCorrupted as error:
        print(f"INVALID at height {error.height}: {error.reason}: {error.detail}")
        return 1
    except sqlite3.DatabaseError as error:
        print(f"INVALID: the store is not a readable SQLite database: {error}")
        return 1
    print(
        f"OK: {summary.height} blocks, {summary.transactions} transactions, "
        f"{summary.receipts} receipts, {summary.confirmations} confirmations; "
        f"head {summary.head_digest.hex()}"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    try:
        store = ChainStore.open(args.directory, verify=False)
    except (FileNotFoundError, ChainCorrupted, sqlite3.DatabaseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with store:
        for line in export_lines(store):
            print(line)
    return 0


def run_spec(args: argparse.Namespace) -> int:
    from orchestrator.spec import SpecError, parse_spec, spec_to_yaml

    try:
        with ChainStore.open(args.directory, verify=False) as store:
            body = store.genesis.body
    except (FileNotFoundError, ChainCorrupted, sqlite3.DatabaseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not body.spec:
        print(f"error: the genesis of {args.directory} records no experiment spec", file=sys.stderr)
        return 2
    if records.spec_digest(body.spec) != body.spec_digest:
        print("INVALID: the genesis's spec does not match its spec digest")
        return 1
    try:
        spec = parse_spec(json.loads(body.spec), f"{args.directory} (genesis)")
    except (SpecError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(spec_to_yaml(spec), end="")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from node.ledger.audit import Inconsistency, short
    from orchestrator.chain_audit import NoChains, NotARunDirectory, audit_run_directory

    try:
        report = audit_run_directory(args.run_dir)
    except NotARunDirectory as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Inconsistency as error:
        print(
            f"INCONSISTENT: node {error.node}, height {error.height}, {error.record} "
            f"{short(error.digest)}: {error.rule}: {error.detail}"
        )
        return 1
    if isinstance(report, NoChains):
        print(f"OK: no chains to audit ({report.protocol}): {report.reason}")
        return 0
    for chain in report.chains:
        print(
            f"{chain.node}: OK: {chain.blocks} blocks, {chain.transactions} transactions, "
            f"{chain.receipts} receipts, {chain.confirmations} confirmations; "
            f"head {short(chain.head)}"
        )
    for name in report.missing:
        print(f"{name}: not audited: the run directory holds no chain store of it")
    print(
        f"OK: {len(report.chains)} chains, {report.total('blocks')} blocks, "
        f"{report.total('transactions')} transactions, {report.total('receipts')} receipts, "
        f"{report.total('confirmations')} confirmations checked "
        f"({report.protocol}, genesis {short(report.genesis_digest)})"
    )
    return 0
