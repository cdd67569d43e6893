"""Shared builders for the tests: a tiny model, keys from seeds, and a four-node in-memory run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from node.ledger import records
from node.ledger.keys import NodeKey
from node.ledger.store import ChainStore
from node.protocol.dfl import BufferedModel, DflConfig, DflEngine
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode, inject_steadily
from proto.dfl.v1 import records_pb2 as pb

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
