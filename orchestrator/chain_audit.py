"""A run directory read for the chain audit (node/ledger/audit.py): who the nodes were, who peered.

The audit's rules are over records and stay in node/; what only the orchestrator knows lives
here: the run's layout, its spec (the peer graph is drawn from it by orchestrator/topology.py,
as every runtime draws it) and the nodes' identities. Two layouts hold chains:

    RUN_DIR/spec.yaml                the experiment (every runtime writes it)
    RUN_DIR/run.json                 `dfl run` and the simulator's fault runs: nodes in index
                                     order, with their addresses, and the edges
    RUN_DIR/summary.json             `dfl simulate`: the addresses by node, the edges
    RUN_DIR/nodes/NAME/chain.sqlite  each node's chain (none for FedAvg or `--no-chain`)

A node's index is its place in that list, which is how every runtime names and wires its nodes.
With `identity: derived` (the default) each address is also recomputed from (seed, index), which
proves that mapping; the record, run.json or summary.json, must agree with the spec on the edges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from node import seeds
from node.datadir import STORE_FILE
from node.ledger import records
from node.ledger.audit import AuditReport, Experiment, Inconsistency, audit_run, short
from node.ledger.keys import NodeKey
from orchestrator.report.schema import NODES_DIR, RUN_FILE, SPEC_FILE
from orchestrator.sim.outputs import SUMMARY_FILE
from orchestrator.spec import (
    ExperimentSpec,
    SpecError,
    parse_spec,
    parse_yaml,
    spec_digest,
    spec_to_dict,
)

# canonical_spec_json's own key conversion, reused so that the digest of a spec with its plugin
# aggregator put back is taken exactly as the genesis took it.
from orchestrator.spec.write import canonical_json

LAYOUT = (
    f"a run directory (as `dfl run` and `dfl simulate` write it) holds {SPEC_FILE}, "
    f"{RUN_FILE} or {SUMMARY_FILE}, and {NODES_DIR}/<node>/{STORE_FILE} for every node of a DFL "
    "or BLADE-FL run"
)


class NotARunDirectory(ValueError):
    """The directory lacks what a run directory holds; the message says what is missing."""


@dataclass(frozen=True)
class NoChains:
    """A run that keeps no chains (FedAvg, or a chainless simulation): nothing to audit."""

    protocol: str
    reason: str


@dataclass(frozen=True)
class RunChains:
    """What the audit takes: the experiment as the run recorded it, and each node's store."""

    experiment: Experiment
    stores: dict[str, Path]


def read_run_directory(directory: Path) -> RunChains | NoChains:
    """The run's experiment and stores; NotARunDirectory when it is none, Inconsistency when
    its record contradicts its spec (another node order, other addresses, other edges)."""
    if not directory.is_dir():
        raise NotARunDirectory(f"{directory} is not a directory; {LAYOUT}")
    spec, digest = _spec(directory)
    source, record = _record(directory)
    names, recorded = _nodes(source, record)
    if len(names) != spec.nodes.count:
        raise Inconsistency(
            source,
            0,
            "run record",
            b"",
            "nodes",
            f"{source} lists {len(names)} nodes, {SPEC_FILE} has {spec.nodes.count}",
        )
    edges = tuple((u, v) for u, v in spec.edges())
    if "edges" in record and [tuple(edge) for edge in record["edges"]] != list(edges):
        raise Inconsistency(
            source,
            0,
            "run record",
            b"",
            "edges",
            f"{source} records other edges than {SPEC_FILE}'s topology draws",
        )
    addresses = _addresses(spec, source, names, recorded)
    stores = {name: directory / NODES_DIR / name / STORE_FILE for name in names}
    present = [name for name, path in stores.items() if path.is_file()]
    if spec.protocol == "fedavg" and not present:
        return NoChains(spec.protocol, "a FedAvg run keeps no ledger")
    if record.get("chain") is False and not present:
        return NoChains(spec.protocol, "the run was simulated without chains (--no-chain)")
    experiment = Experiment(
        protocol=spec.protocol,
        names=names,
        addresses=addresses,
        edges=edges,
        spec_digest=digest,
    )
    return RunChains(experiment, stores)


def audit_run_directory(directory: Path) -> AuditReport | NoChains:
    """The audit of every chain of the run in `directory` (Inconsistency at the first fault)."""
    run = read_run_directory(directory)
    if isinstance(run, NoChains):
        return run
    return audit_run(run.experiment, run.stores)


def _spec(directory: Path) -> tuple[ExperimentSpec, bytes]:
    """The run's spec and the digest of its canonical form (what a genesis records).

    An aggregator is a plugin that need not import where the audit runs (the run may have had it
    on its own path), and the chains do not depend on it: such a spec is read with a built-in
    aggregator in its place, and its digest is taken with the spec's own aggregator put back.
    """
    path = directory / SPEC_FILE
    if not path.is_file():
        raise NotARunDirectory(f"{directory} has no {SPEC_FILE}; {LAYOUT}")
    try:
        text = path.read_text(encoding="utf-8")
        spec = parse_yaml(text, str(path))
        return spec, spec_digest(spec)
    except (OSError, UnicodeDecodeError) as error:
        raise NotARunDirectory(f"{path} is not readable: {error}") from None
    except SpecError as error:
        if error.paths != ["dfl.aggregator"]:
            raise NotARunDirectory(f"{path} is not a readable experiment spec: {error}") from None
        refused = error
    raw = yaml.safe_load(text)
    written = raw["dfl"]["aggregator"]
    raw["dfl"]["aggregator"] = "fedavg"
    try:
        spec = parse_spec(raw, str(path))
    except SpecError:
        raise NotARunDirectory(f"{path} is not a readable experiment spec: {refused}") from None
    data = spec_to_dict(spec)
    data["dfl"]["aggregator"] = written
    if isinstance(written, dict) and not written.get("options"):
        data["dfl"]["aggregator"] = written["name"]  # as the spec writes an option-less one
    return spec, records.spec_digest(canonical_json(data))


def _record(directory: Path) -> tuple[str, dict[str, Any]]:
    """run.json where there is one (it names every node), else the simulator's summary.json."""
    for name in (RUN_FILE, SUMMARY_FILE):
        path = directory / name
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise NotARunDirectory(f"{path} is not readable JSON: {error}") from None
            if not isinstance(record, dict):
                raise NotARunDirectory(f"{path} is not a JSON object")
            return name, record
    raise NotARunDirectory(f"{directory} has neither {RUN_FILE} nor {SUMMARY_FILE}; {LAYOUT}")


def _nodes(source: str, record: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Node names in index order and the hex addresses the record gives (empty: none known)."""
    try:
        if source == RUN_FILE:
            nodes = [(str(n["name"]), str(n.get("address") or "")) for n in record["nodes"]]
        else:
            nodes = [(str(k), str(v or "")) for k, v in record["addresses"].items()]
    except (KeyError, TypeError, AttributeError) as error:
        raise NotARunDirectory(f"{source} does not list the run's nodes: {error!r}") from None
    return tuple(name for name, _ in nodes), {name: a for name, a in nodes if a}


def _addresses(
    spec: ExperimentSpec, source: str, names: tuple[str, ...], recorded: dict[str, str]
) -> dict[str, bytes]:
    addresses: dict[str, bytes] = {}
    for index, name in enumerate(names):
        try:
            address = bytes.fromhex(recorded[name]) if name in recorded else None
        except ValueError:
            raise Inconsistency(
                name,
                0,
                "run record",
                b"",
                "identity",
                f"{source} records address {recorded[name]!r}, not hex",
            ) from None
        if spec.identity == "derived":
            derived = NodeKey.from_seed(seeds.identity_seed(spec.seed, index)).address
            if address is not None and address != derived:
                raise Inconsistency(
                    name,
                    0,
                    "run record",
                    address,
                    "identity",
                    f"{source} records address {short(address)}; node {index}'s identity "
                    f"(seed {spec.seed}, index {index}) is {short(derived)}",
                )
            address = derived
        if address is not None:
            addresses[name] = address
    return addresses
