"""Finding a run's chains: which directory is a run, which nodes left a chain, whose is which.

`dfl chain contributions` reads nothing but the chains, so this is all it needs of a run
directory: RUN_DIR/nodes/<name>/chain.sqlite (node/datadir.py) and the node names. A run of a
process runtime says it is one with run.json (orchestrator/report/readers.py); a simulator's
run with its spec.yaml and summary.json (orchestrator/sim/run.py). Nodes are named by run.json
when there is one, else by their directories; inside the chains they are addresses, and each
store's owner says which address is which node.

Every chain is re-verified on open (links, digests, signatures, confirmations), because a
contribution score is only worth the records it is computed from; a chain that does not verify
is left out and said so, rather than silently counted.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from node.datadir import STORE_FILE
from node.ledger.store import ChainCorrupted, ChainStore
from orchestrator.report.readers import NotARunDirectory
from orchestrator.report.schema import NODES_DIR, RUN_FILE
from orchestrator.sim.outputs import SUMMARY_FILE
from orchestrator.sim.run import SPEC_FILE
from proto.dfl.v1 import records_pb2 as pb

__all__ = ["NoChains", "NotARunDirectory", "RunChains", "open_chains"]


class NoChains(ValueError):
    """The directory is a run, but no node left a chain that can be read (a FedAvg run has none)."""


@dataclass(frozen=True)
class RunChains:
    """The run's verified chain stores, open, by node name in the run's node order."""

    directory: Path
    protocol: str  # the genesis's: "dfl" or "blade-fl"
    genesis: pb.Genesis
    stores: Mapping[str, ChainStore]
    names: Mapping[bytes, str]  # address -> node name, from each store's owner
    warnings: tuple[str, ...]

    def name_of(self, address: bytes) -> str:
        """The node's name, or a short address for a signer that left no chain here."""
        return self.names.get(address) or address.hex()[:12]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self.stores)


def _natural(name: str) -> tuple[object, ...]:
    """node2 before node10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _run_protocol_and_names(directory: Path) -> tuple[str | None, list[str]]:
    """The protocol the run says it ran and its node names; NotARunDirectory when it is none."""
    run_file = directory / RUN_FILE
    nodes_dir = directory / NODES_DIR
    on_disk = []
    if nodes_dir.is_dir():
        on_disk = sorted((p.name for p in nodes_dir.iterdir() if p.is_dir()), key=_natural)
    if run_file.is_file():
        try:
            raw = json.loads(run_file.read_text())
            names = [str(node["name"]) for node in raw.get("nodes", ())]
            protocol = raw.get("protocol")
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise NotARunDirectory(
                f"{run_file} is not a valid run description: {error!r}"
            ) from None
        extra = [name for name in on_disk if name not in names]  # directories run.json omits
        return (str(protocol) if protocol else None), names + extra
    if (directory / SPEC_FILE).is_file() and (directory / SUMMARY_FILE).is_file():
        try:
            protocol = json.loads((directory / SUMMARY_FILE).read_text()).get("protocol")
        except (ValueError, AttributeError):
            protocol = None
        return (str(protocol) if protocol else None), on_disk
    raise NotARunDirectory(
        f"{directory} is not a run directory: it has neither {RUN_FILE} (dfl run) nor "
        f"{SPEC_FILE} and {SUMMARY_FILE} (dfl simulate)"
    )


def _names_by_owner(stores: Mapping[str, ChainStore]) -> dict[bytes, str]:
    """Address -> node name; a second store of the same owner (a copied data directory) does
    not rename the node."""
    names: dict[bytes, str] = {}
    for name, store in stores.items():
        names.setdefault(store.owner, name)
    return names


@contextmanager
def open_chains(directory: Path) -> Iterator[RunChains]:
    """The run's chains, verified and open for the block; NotARunDirectory or NoChains else."""
    directory = Path(directory)
    protocol, names = _run_protocol_and_names(directory)
    warnings: list[str] = []
    with ExitStack() as stack:
        stores: dict[str, ChainStore] = {}
        for name in names:
            path = directory / NODES_DIR / name / STORE_FILE
            if not path.is_file():
                warnings.append(f"{name}: no chain store")
                continue
            try:
                store = ChainStore.open(path, verify=False)
            except (ChainCorrupted, sqlite3.DatabaseError) as error:
                warnings.append(f"{name}: chain store unreadable, left out: {error}")
                continue
            stack.callback(store.close)
            try:
                store.verify()
            except (ChainCorrupted, sqlite3.DatabaseError) as error:
                warnings.append(f"{name}: chain does not verify, left out: {error}")
                continue
            stores[name] = store
        if not stores:
            if protocol == "fedavg":
                raise NoChains(
                    f"{directory} is a fedavg run: FedAvg keeps no chain, so there are no "
                    "transactions, receipts or blocks to compute contributions from"
                )
            raise NoChains(
                f"{directory} holds no readable chain ({NODES_DIR}/<name>/{STORE_FILE})"
                + (f": {'; '.join(warnings)}" if warnings else "")
            )
        geneses = {store.genesis.digest for store in stores.values()}
        first = next(iter(stores.values()))
        if len(geneses) > 1:
            raise NoChains(f"{directory} holds chains of {len(geneses)} different experiments")
        yield RunChains(
            directory=directory,
            protocol=first.genesis.body.protocol,
            genesis=first.genesis,
            stores=stores,
            names=_names_by_owner(stores),
            warnings=tuple(warnings),
        )
