"""Shared builders for the tests: a tiny model, keys from seeds, and a four-node in-memory run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from node.ledger import records
from node.ledger.audit import Inconsistency
from node.ledger.errors import RejectReason
from node.ledger.keys import NodeKey
from node.ledger.store import ChainStore
from node.protocol.blade import BladeConfig, BladeEngine
from node.protocol.dfl import DflConfig, DflEngine
from node.protocol.events import BufferedModel, SamplesCollected
from node.protocol.events import PoolModel as BladeModel
from orchestrator.chain_audit import audit_run_directory
from orchestrator.report import SUMMARY_FILE, render_report
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode, inject_steadily
from proto.dfl.v1 import records_pb2 as pb

if TYPE_CHECKING:
    from tests.integration.live import LiveNetwork

# A small DFL experiment the simulator runs in seconds: four MLP nodes on a ring, 100 ticks.
SMALL_DFL = {
    "name": "sim-small",
    "protocol": "dfl",
    "seed": 3,
    "duration": 100,
    "model": "mlp",
    "dataset": "mnist",
    "nodes": {"count": 4, "distribution": "iid"},
    "topology": {"kind": "ring"},
    "dfl": {"fedavg_buffer": 2, "transactions_per_block": 3, "aggregator": "reputation-0.05"},
    "sim": {"training_interval": [4, 6], "accuracy_interval": 10},
}

# The BLADE-FL counterpart: four MLP clients, each test adding its own `name` and `blade` section
# (rounds and budget differ by what the test needs to see).
SMALL_BLADE = {
    "protocol": "blade-fl",
    "seed": 2,
    "duration": 500,
    "model": "mlp",
    "dataset": "mnist",
    "nodes": {"count": 4, "distribution": "iid"},
}

TINY_LAYERS = (("fc.weight", (3, 4)), ("fc.bias", (3,)))
TINY_PARAMETERS = 15


def tiny_genesis(seed: int = 7) -> pb.Genesis:
    return records.make_genesis(
        protocol="dfl",
        model_architecture="tiny",
        layers=TINY_LAYERS,
        hyperparameters={"lr": 0.01, "batch_size": 4},
        seed=seed,
    )


def tiny_weights(value: float = 0.5, count: int = TINY_PARAMETERS) -> bytes:
    return np.full(count, value, dtype="<f4").tobytes()


def key(name: str) -> NodeKey:
    return NodeKey.from_seed(name.encode())


@dataclass
class TinyHost:
    """A stand-in for the ML: deterministic weights and an accuracy derived from them."""

    rng: np.random.Generator
    aggregated: list[Sequence[BufferedModel]] = field(default_factory=list)
    trained: int = 0

    def train(self, batch_size: int) -> bytes:
        self.trained += 1
        return self.rng.uniform(-1, 1, TINY_PARAMETERS).astype("<f4").tobytes()

    def evaluate(self, model: bytes) -> float:
        weights = np.frombuffer(model, dtype="<f4")
        return float(np.clip(0.5 + weights.mean() / 2, 0.0, 1.0))

    def aggregate(self, models: Sequence[BufferedModel]) -> None:
        self.aggregated.append(models)


NAMES = ("n0", "n1", "n2", "n3")


def four_node_network(
    directory: Path | None,
    *,
    config: DflConfig | None = None,
    edges: Sequence[tuple[str, str]] | None = None,
) -> MemoryNetwork:
    """Four engines in a full mesh (by default), each with a chain store under directory/NAME."""
    config = config or DflConfig(batch_size=4, fedavg_buffer=3, transactions_per_block=3)
    genesis = tiny_genesis()
    network = MemoryNetwork(latency=0.01, tick_interval=0.5)
    for index, name in enumerate(NAMES):
        node_key = key(name)
        store = (
            ChainStore.create(directory / name, genesis, node_key.address) if directory else None
        )
        engine = DflEngine(node_key, genesis, config)
        network.add(MemoryNode(name, engine, TinyHost(np.random.default_rng(index)), store))
    network.connect(edges if edges is not None else list(combinations(NAMES, 2)))
    return network


def run_four_nodes(directory: Path | None, *, until: float = 40.0, **kwargs) -> MemoryNetwork:
    """Samples at 4 per second per node (one training per second), staggered so nodes interleave."""
    network = four_node_network(directory, **kwargs)
    for index, name in enumerate(NAMES):
        inject_steadily(network, name, rate=4, batch=4, start=0.1 + 0.13 * index, until=until - 12)
    network.run(until)
    return network


# --- BLADE-FL -----------------------------------------------------------------------------------

BLADE_DIFFICULTY = 64  # expected hashes per block: instant in tests, yet most nonces fail


def tiny_blade_genesis(difficulty: float = BLADE_DIFFICULTY) -> pb.Genesis:
    return records.make_genesis(
        protocol="blade-fl",
        model_architecture="tiny",
        layers=TINY_LAYERS,
        hyperparameters={"lr": 0.01, "pow_difficulty": difficulty},
        seed=7,
    )


@dataclass
class TinyRoundHost:
    """BLADE-FL's ML stand-in: a global vector, nudged by training, averaged per block."""

    rng: np.random.Generator
    weights: np.ndarray = field(default_factory=lambda: np.zeros(TINY_PARAMETERS, "<f4"))
    rounds: list[int] = field(default_factory=list)
    copied_from: list[tuple[bytes, ...]] = field(default_factory=list)

    def train_local(self, round: int, iterations: int) -> bytes:
        step = self.rng.uniform(-0.1, 0.1, TINY_PARAMETERS).astype("<f4")
        return (self.weights + iterations * step).astype("<f4").tobytes()

    def plagiarize(self, round: int, models: Sequence[bytes]) -> bytes:
        self.copied_from.append(tuple(models))
        noise = self.rng.normal(0, 0.01, TINY_PARAMETERS).astype("<f4")
        return (np.frombuffer(models[0], "<f4") + noise).astype("<f4").tobytes()

    def aggregate_round(self, round: int, models: Sequence[BladeModel]) -> None:
        self.rounds.append(round)
        stacked = np.stack([np.frombuffer(m.model, "<f4") for m in models])
        self.weights = stacked.mean(axis=0).astype("<f4")


def blade_network(
    directory: Path | None,
    config: BladeConfig,
    *,
    hash_rate: float = 1e4,
    latency: float = 0.01,
    lazy: Sequence[str] = (),
) -> MemoryNetwork:
    """Four BLADE-FL clients in a full mesh, each with a chain store under directory/NAME."""
    genesis = tiny_blade_genesis()
    network = MemoryNetwork(latency=latency, tick_interval=0.5, hash_rate=hash_rate)
    for index, name in enumerate(NAMES):
        node_key = key(name)
        store = (
            ChainStore.create(directory / name, genesis, node_key.address) if directory else None
        )
        client = replace(config, lazy=name in lazy)
        engine = BladeEngine(node_key, genesis, client)
        network.add(MemoryNode(name, engine, TinyRoundHost(np.random.default_rng(index)), store))
    network.connect(list(combinations(NAMES, 2)))
    for index, name in enumerate(NAMES):
        network.schedule(0.1 + 0.05 * index, name, SamplesCollected(config.dataset_size))
    return network


# --- the chain audit ----------------------------------------------------------------------------


def assert_audit_passes(*run_dirs: Path) -> None:
    """`dfl chain audit RUN_DIR` finds nothing inconsistent in each (a run without chains
    passes too): called after every test that makes a run directory, so that every runtime's
    chains are audited against each other and the experiment, not only verified one by one."""
    for run_dir in run_dirs:
        try:
            audit_run_directory(Path(run_dir))
        except Inconsistency as error:
            raise AssertionError(f"dfl chain audit {run_dir}: {error}") from None


# --- live runs (tests/integration) --------------------------------------------------------------


def assert_refused(error: grpc.RpcError | None, reason: RejectReason, what: str) -> None:
    """`error` (from tests.integration.live.submit) is the refusal `reason` names, in its gRPC
    status and its details: every protocol's node must answer a bad record the same way."""
    assert error is not None, f"{what} that should fail with {reason.label} was accepted"
    assert error.code() == grpc.StatusCode[reason.grpc_status]
    assert error.details().startswith(reason.label), error.details()


def finished_summary(network: LiveNetwork, *, audit: bool = False) -> dict[str, Any]:
    """The live run ended and checked (its chains audited too, with `audit`), its report
    rendered, and its summary: what every protocol's end-of-run tests read."""
    network.finish()
    network.check()
    if audit:
        assert_audit_passes(network.out)
    render_report(network.out)
    return json.loads((network.out / SUMMARY_FILE).read_text())
