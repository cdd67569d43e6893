"""A BLADE-FL experiment in one process, in the paper's time units (section 5, eq. 4).

N clients each hold |D_i| samples of their label distribution (`Partition.local_datasets`). A
round: every honest client trains tau local epochs from the global model, which takes tau *
alpha time units; the last M clients (lazy) copy a peer's model of the round and add N(0,
sigma^2) noise; every client mines a proof-of-work block over the round's models, and the
network finds one in about beta time units; the block's models average into the next global
model. After block k the global model is tested on the whole test set (rounds.csv), and the run
ends after K blocks, t_sum = K (tau alpha + beta) time units later.

Every client is the `BladeHost` (node/host/blade.py) a client process runs, with its keys,
genesis and random streams. With the chain (the default) its engine is the `BladeEngine` a
container runs: signed pool models, real SHA-256d mining at a small difficulty
(`MINING_DIFFICULTY` expected hashes) whose virtual duration is scaled so the network's expected
block time is beta, votes, chain stores. With `chain=False` the engine is the paper's own rounds
(node/protocol/blade_chainless.py): train, copy, average; no records and no mining, so a round
takes only its training time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from node.host.blade import BladeHost
from node.host.dispatch import HostObserver
from node.host.genesis import blade_extras
from node.host.resemblance import Resemblance
from node.ledger.store import ChainStore
from node.protocol.blade import BladeEngine
from node.protocol.blade_chainless import ChainlessBladeEngine
from node.protocol.events import PoolModel, SamplesCollected
from orchestrator.datasets import Dataset
from orchestrator.genesis import spec_genesis
from orchestrator.partition import Partition
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode
from orchestrator.sim import outputs
from orchestrator.sim.dfl import LATENCY, node_keys
from orchestrator.sim.evaluation import BatchEvaluator, Job
from orchestrator.sim.progress import ProgressBar
from orchestrator.spec import ExperimentSpec

MINING_DIFFICULTY = 256.0  # expected hashes per block and miner: real work, a few ms of it


class _RoundRecorder(HostObserver):
    """rounds.csv: the global model after each block, as the first client holds it."""

    def __init__(self, simulation: BladeSimulation) -> None:
        self.simulation = simulation
        self.rounds: list[int] = []

    def round_aggregated(
        self, round: int, models: Sequence[PoolModel], found: Sequence[Resemblance]
    ) -> None:
        simulation = self.simulation
        self.rounds.append(round)
        loss, accuracy = simulation.record(
            round, simulation.network.now, simulation.hosts[0].global_weights
        )
        if simulation.bar is not None:
            simulation.bar.update(round, f"loss {loss:.3f} accuracy {accuracy:.3f}")


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
        self.bar: ProgressBar | None = None
        self.evaluator = BatchEvaluator(spec.model)
        self.test = Job(np.empty(0, np.float32), dataset.test_images, dataset.test_labels)
        self.names = [f"client{i}" for i in range(spec.nodes.count)]
        self.keys = node_keys(spec)
        partition = Partition.build(
            spec.partition(), spec.nodes.count, dataset.train_labels, spec.seed
        )
        local = partition.local_datasets(dataset.train_labels, self.blade.dataset_size)
        self.hosts: list[BladeHost] = []
        for index, indices in enumerate(local):
            host = BladeHost(
                model=spec.model,
                seed=spec.seed,
                index=index,
                behaviour=spec.behaviour(index),
                dataset_size=self.blade.dataset_size,
                batch_size=self.blade.batch_size,
                test_batch=spec.dfl.test_batch,
                measures=False,  # rounds.csv tests the global model on the whole test set
            )
            host.collect(dataset.train_images[indices], dataset.train_labels[indices])
            self.hosts.append(host)
        self.rows: list[list[Any]] = []
        # Each miner needs MINING_DIFFICULTY hashes on average; the first of `count` finds a
        # block in about 1/count of that, which is to take beta time units.
        self.network = MemoryNetwork(
            latency=LATENCY,
            hash_rate=MINING_DIFFICULTY / (spec.nodes.count * self.blade.beta),
        )
        self.recorder = _RoundRecorder(self)

    def record(self, round: int, when: float, weights: np.ndarray) -> tuple[float, float]:
        job = Job(weights, self.test.images, self.test.labels)
        ((loss, accuracy),) = self.evaluator.losses([job])
        self.rows.append([round, when, loss, accuracy])
        return loss, accuracy

    # --- running -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.progress:
            self.bar = ProgressBar(self.blade.rounds, "round", label=f"{self.spec.name} ")
        started, cpu_started = time.perf_counter(), time.process_time()
        self.record(0, 0.0, self.hosts[0].global_weights)
        stores = self._build()
        try:
            extra = self._run(stores)
        finally:
            for store in stores:
                store.close()
            if self.bar is not None:
                self.bar.close()
        wall = time.perf_counter() - started
        extra["process_cpu_seconds"] = round(time.process_time() - cpu_started, 2)
        writer = outputs.SeriesCsv(
            self.out / outputs.ROUNDS_FILE, ["round", "time", "loss", "accuracy"]
        )
        for row in self.rows:
            writer.write(row)
        writer.close()
        for name, host in zip(self.names, self.hosts, strict=True):
            (self.out / "nodes" / name).mkdir(parents=True, exist_ok=True)
            host.sample_log.write(self.out / "nodes" / name)
        return self._summary(wall, extra)

    def _build(self) -> list[ChainStore]:
        """Every client's engine on the network: BladeEngine with a chain store, or (without
        the chain) the paper's own rounds: train, copy, average, no records, no mining."""
        spec, section = self.spec, self.blade
        self.genesis = spec_genesis(
            spec,
            learner=self.hosts[0].learner,
            extra=blade_extras(
                difficulty=MINING_DIFFICULTY,
                rounds=section.rounds,
                local_iterations=section.iterations,
                dataset_size=section.dataset_size,
                batch_size=section.batch_size,
            ),
        )
        stores = []
        for index, (name, key, host) in enumerate(
            zip(self.names, self.keys, self.hosts, strict=True)
        ):
            config = section.config(
                clients=spec.nodes.count,
                lazy=host.behaviour.copies_peers,
                # The honest models of a round all arrive at one instant; a lazy client copies
                # at the next tick rather than after the protocol's default 5 time units.
                lazy_wait=0.5,
            )
            store = None
            engine: BladeEngine | ChainlessBladeEngine
            if self.chain:
                store = ChainStore.create(self.out / "nodes" / name, self.genesis, key.address)
                stores.append(store)
                engine = BladeEngine(key, self.genesis, config)
            else:
                engine = ChainlessBladeEngine(key.address, config)
            node = MemoryNode(
                name,
                engine,
                host,
                store,
                observer=self.recorder if index == 0 else None,
                epoch_seconds=section.alpha or 1.0,
            )
            self.network.add(node)
            self.network.schedule(0.0, name, SamplesCollected(section.dataset_size))
        count = spec.nodes.count
        self.network.connect(
            [(self.names[a], self.names[b]) for a in range(count) for b in range(a + 1, count)]
        )
        return stores

    def _run(self, stores: Sequence[ChainStore]) -> dict[str, Any]:
        network, section = self.network, self.blade
        while (
            network.now < self.spec.duration_seconds and len(self.recorder.rounds) < section.rounds
        ):
            network.run(min(self.spec.duration_seconds, network.now + 1.0))
        counters: dict[str, int] = {}
        for node in network.nodes.values():
            for name, value in node.engine.state.counters.items():
                counters[name] = counters.get(name, 0) + value
        extra: dict[str, Any] = {
            "virtual_time": round(network.now, 2),
            **outputs.cpu_figures(network.profiler),
            "rejected": sum(sum(n.rejections.values()) for n in network.nodes.values()),
            "genesis_digest": self.genesis.digest.hex(),
            "addresses": {
                name: key.address.hex() for name, key in zip(self.names, self.keys, strict=True)
            },
        }
        if stores:
            extra["heights"] = sorted({store.height for store in stores})
            extra["chains_agree"] = len({store.head_digest for store in stores}) == 1
            extra["forks"] = counters.get("forks", 0)
        return extra

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
            "lazy_clients": sum(h.behaviour.copies_peers for h in self.hosts),
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
