"""A BLADE-FL experiment in one process, in the paper's time units (section 5, eq. 4).

N clients each hold |D_i| samples of their label distribution (`Partition.local_datasets`). A
round: every honest client trains tau local epochs from the global model, which takes tau *
alpha time units; the last M clients (lazy) copy a peer's model of the round and add N(0,
sigma^2) noise; every client mines a proof-of-work block over the round's models, and the
network finds one in about beta time units; the block's models average into the next global
model. After block k the global model is tested on the whole test set (rounds.csv), and the run
ends after K blocks, t_sum = K (tau alpha + beta) time units later.

With the chain (the default) each client is the `BladeEngine` a container runs: signed pool
models, real SHA-256d mining at a small difficulty (`MINING_DIFFICULTY` expected hashes) whose
virtual duration is scaled so the network's expected block time is beta, votes, chain stores.
With `chain=False` the rounds run as the paper's own code does: no records, no mining, no time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from node.learning.behaviours import Behaviour
from node.learning.training import Learner, train_epochs
from node.ledger.keys import NodeKey
from node.ledger.pow import DIFFICULTY_PARAMETER
from node.ledger.store import ChainStore
from node.protocol import blade
from node.protocol.common import SamplesCollected
from node.service.learning_host import experiment_genesis
from orchestrator.datasets import Dataset
from orchestrator.partition import Partition
from orchestrator.runtimes.memory import MemoryNode
from orchestrator.sim import outputs
from orchestrator.sim.evaluation import BatchEvaluator, Job
from orchestrator.sim.network import PendingTraining, SimNetwork
from orchestrator.sim.progress import ProgressBar
from orchestrator.spec import ExperimentSpec

MINING_DIFFICULTY = 256.0  # expected hashes per block and miner: real work, a few ms of it
_BEHAVIOUR = 21


@dataclass
class BladeSimClient:
    """One client's ML for its engine: local dataset, the global model, behaviour."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    behaviour: Behaviour
    rng: np.random.Generator
    global_weights: np.ndarray
    rounds: list[int] = field(default_factory=list)
    on_aggregate: Callable[[int, np.ndarray], None] | None = None  # the simulation's recorder

    def train_local(self, round: int, iterations: int) -> bytes:
        """Never called: the simulator's network hands a round's trainings to the simulation."""
        raise RuntimeError("the simulator trains a round's clients together")

    def plagiarize(self, round: int, models: Sequence[bytes]) -> bytes:
        peers = tuple(np.frombuffer(model, "<f4") for model in models)
        copied = self.behaviour.outgoing(self.global_weights, self.rng, peer_models=peers)
        return copied.astype("<f4", copy=False).tobytes()

    def aggregate_round(self, round: int, models: Sequence[blade.PoolModel]) -> None:
        stacked = np.stack([np.frombuffer(m.model, "<f4") for m in models])
        self.global_weights = stacked.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.rounds.append(round)
        if self.on_aggregate is not None:
            self.on_aggregate(round, self.global_weights)


class BladeSimulation:
    def __init__(
        self,
        spec: ExperimentSpec,
        dataset: Dataset,
        out: Path,
        *,
        chain: bool = True,
        progress: bool = True,
    ) -> None:
        if spec.blade is None:
            raise ValueError(f"{spec.name} is a {spec.protocol} experiment, not blade-fl")
        self.spec = spec
        self.blade = spec.blade
        self.out = out
        self.chain = chain
        self.progress = progress
        self.evaluator = BatchEvaluator(spec.model)
        self.test = Job(np.empty(0, np.float32), dataset.test_images, dataset.test_labels)
        self.names = [f"client{i}" for i in range(spec.nodes.count)]
        self.learner = Learner(spec.model, seed=spec.seed)  # the initial global model
        partition = Partition.build(
            spec.partition(), spec.nodes.count, dataset.train_labels, spec.seed
        )
        local = partition.local_datasets(dataset.train_labels, self.blade.dataset_size)
        self.clients = [
            BladeSimClient(
                name=name,
                images=dataset.train_images[indices],
                labels=dataset.train_labels[indices],
                behaviour=spec.behaviour(index),
                rng=np.random.default_rng([spec.seed, _BEHAVIOUR, index]),
                global_weights=self.learner.weights(),
            )
            for index, (name, indices) in enumerate(zip(self.names, local, strict=True))
        ]
        self.rows: list[list[Any]] = []

    # --- ML ------------------------------------------------------------------------------------

    def _train(self, clients: Sequence[BladeSimClient], epochs: int) -> list[bytes]:
        out = []
        for client in clients:
            self.learner.set_weights(client.global_weights)
            self.learner.solver.reset()  # BLADE-FL builds a fresh optimizer every round
            if client.behaviour.trains:
                images, labels = client.behaviour.batch(client.images, client.labels, client.rng)
                train_epochs(
                    self.learner, images, labels, epochs, self.blade.batch_size, client.rng
                )
            outgoing = client.behaviour.outgoing(self.learner.weights(), client.rng)
            out.append(outgoing.astype("<f4", copy=False).tobytes())
        return out

    def _train_batch(self, pending: Sequence[PendingTraining]) -> list[bytes]:
        clients = [item.node.host for item in pending]
        epochs = {item.action.iterations for item in pending}
        assert len(epochs) == 1 and all(isinstance(c, BladeSimClient) for c in clients)
        return self._train(clients, epochs.pop())  # type: ignore[arg-type]

    def _record(self, round: int, when: float, weights: np.ndarray) -> tuple[float, float]:
        job = Job(weights, self.test.images, self.test.labels)
        ((loss, accuracy),) = self.evaluator.losses([job])
        self.rows.append([round, when, loss, accuracy])
        return loss, accuracy

    # --- running -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        bar = (
            ProgressBar(self.blade.rounds, "round", label=f"{self.spec.name} ")
            if self.progress
            else None
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        self._record(0, 0.0, self.learner.weights())
        extra: dict[str, Any] = {}
        try:
            if self.chain:
                extra = self._run_chain(bar)
            else:
                self._run_plain(bar)
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - started
        extra["process_cpu_seconds"] = round(time.process_time() - cpu_started, 2)
        writer = outputs.SeriesCsv(
            self.out / outputs.ROUNDS_FILE, ["round", "time", "loss", "accuracy"]
        )
        for row in self.rows:
            writer.write(row)
        writer.close()
        return self._summary(wall, extra)

    def _run_plain(self, bar: ProgressBar | None) -> None:
        """The paper's code: train, copy, average; time is counted, not simulated."""
        blade_section = self.blade
        honest = [c for c in self.clients if c.behaviour.name != "lazy"]
        lazy = [c for c in self.clients if c.behaviour.name == "lazy"]
        round_time = blade_section.iterations * (blade_section.alpha or 1.0) + blade_section.beta
        for round in range(1, blade_section.rounds + 1):
            models = self._train(honest, blade_section.iterations)
            peers = [np.frombuffer(m, "<f4") for m in models]
            for client in lazy:
                copied = client.behaviour.outgoing(client.global_weights, client.rng, peers)
                models.append(copied.astype("<f4", copy=False).tobytes())
            average = np.stack([np.frombuffer(m, "<f4") for m in models]).mean(axis=0)
            for client in self.clients:
                client.global_weights = average.astype(np.float32)
            loss, accuracy = self._record(round, round * round_time, self.clients[0].global_weights)
            if bar is not None:
                bar.update(round, f"loss {loss:.3f} accuracy {accuracy:.3f}")

    def _run_chain(self, bar: ProgressBar | None) -> dict[str, Any]:
        spec, blade_section = self.spec, self.blade
        alpha = blade_section.alpha or 1.0
        count = spec.nodes.count
        # Each miner needs MINING_DIFFICULTY hashes on average; the first of `count` finds a
        # block in about 1/count of that, which is to take beta time units.
        network = SimNetwork(
            train=self._train_batch,
            epoch_time=alpha,
            hash_rate=MINING_DIFFICULTY / (count * blade_section.beta),
        )
        genesis = experiment_genesis(
            spec.model,
            spec.seed,
            self.learner,
            protocol="blade-fl",
            extra={
                DIFFICULTY_PARAMETER: MINING_DIFFICULTY,
                "rounds": blade_section.rounds,
                "local_iterations": blade_section.iterations,
                "dataset_size": blade_section.dataset_size,
                "batch_size": blade_section.batch_size,
            },
        )
        stores = []
        for name, client in zip(self.names, self.clients, strict=True):
            key = NodeKey.from_seed(f"sim/{spec.seed}/{name}".encode())
            config = blade.BladeConfig(
                clients=count,
                rounds=blade_section.rounds,
                local_iterations=blade_section.iterations,
                dataset_size=blade_section.dataset_size,
                collect_timeout=blade_section.collect_timeout,
                vote_timeout=blade_section.vote_timeout,
                lazy=client.behaviour.name == "lazy",
                # The honest models of a round all arrive at one instant; a lazy client copies
                # at the next tick rather than after the protocol's default 5 time units.
                lazy_wait=0.5,
            )
            store = ChainStore.create(self.out / "nodes" / name, genesis, key.address)
            stores.append(store)
            network.add(MemoryNode(name, blade.BladeEngine(key, genesis, config), client, store))
            network.schedule(0.0, name, SamplesCollected(blade_section.dataset_size))
        network.connect(
            [(self.names[a], self.names[b]) for a in range(count) for b in range(a + 1, count)]
        )

        def record(round: int, weights: np.ndarray) -> None:
            loss, accuracy = self._record(round, network.now, weights)
            if bar is not None:
                bar.update(round, f"loss {loss:.3f} accuracy {accuracy:.3f}")

        first = self.clients[0]
        first.on_aggregate = record
        try:
            while network.now < spec.duration_seconds and len(first.rounds) < blade_section.rounds:
                network.run(min(spec.duration_seconds, network.now + 1.0))
            heads = {store.head_digest for store in stores}
            heights = [store.height for store in stores]
        finally:
            for store in stores:
                store.close()
        by_category = network.profiler.by_category()
        profiled = sum(by_category.values())
        counters: dict[str, int] = {}
        for node in network.nodes.values():
            for name, value in node.engine.state.counters.items():
                counters[name] = counters.get(name, 0) + value
        return {
            "virtual_time": round(network.now, 2),
            "heights": sorted(set(heights)),
            "chains_agree": len(heads) == 1,
            "forks": counters.get("forks", 0),
            "cpu_seconds": {k: round(v, 3) for k, v in sorted(by_category.items())},
            "chain_share": round(by_category.get("blockchain", 0.0) / profiled, 4)
            if profiled
            else 0.0,
            "rejected": sum(sum(n.rejections.values()) for n in network.nodes.values()),
        }

    def _summary(self, wall: float, extra: dict[str, Any]) -> dict[str, Any]:
        blade_section = self.blade
        last = self.rows[-1]
        complete = last[0] == blade_section.rounds  # cut off at `duration`, it has no final loss
        summary = {
            "name": self.spec.name,
            "protocol": "blade-fl",
            "seed": self.spec.seed,
            "chain": self.chain,
            "clients": self.spec.nodes.count,
            "lazy_clients": sum(c.behaviour.name == "lazy" for c in self.clients),
            "noise_variance": blade_section.noise_variance,
            "rounds": blade_section.rounds,
            "rounds_done": last[0],
            "local_epochs": blade_section.iterations,
            "t_sum": blade_section.t_sum,
            "wall_seconds": round(wall, 2),
            "final_loss": round(float(last[2]), 5) if complete else None,
            "final_accuracy": round(float(last[3]), 4) if complete else None,
            **extra,
        }
        outputs.write_summary(self.out / outputs.SUMMARY_FILE, summary)
        return summary
