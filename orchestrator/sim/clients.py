"""What the BLADE-FL and FedAvg simulations share: clients with fixed local datasets, in rounds.

Both protocols run the same clients (BLADE-FL's `BladeHost`, node/host/blade.py, each holding its
`Partition.local_datasets` share), record the global model after each round on the whole test
set (rounds.csv), and end after their rounds or at `duration`. Kept here once so that a
difference between the two runs' outputs is the protocols', never two copies drifting apart;
the subclasses (blade.py, fedavg.py) say only how their engines are built and what their
summaries add.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from node.host.blade import BladeHost
from node.host.dispatch import HostObserver
from node.host.resemblance import Resemblance
from node.ledger.store import ChainStore
from node.protocol.events import PoolModel
from orchestrator.datasets import Dataset
from orchestrator.partition import Partition
from orchestrator.runtimes.memory import MemoryNetwork
from orchestrator.sim import outputs
from orchestrator.sim.dfl import node_keys
from orchestrator.sim.evaluation import BatchEvaluator, Job
from orchestrator.sim.progress import ProgressBar
from orchestrator.spec import ExperimentSpec


def local_hosts(
    spec: ExperimentSpec, dataset: Dataset, dataset_size: int, batch_size: int
) -> list[BladeHost]:
    """Every client's host, holding its fixed local dataset (the samples the orchestrator's
    injector gives the same node of the same spec first, orchestrator/injector.py)."""
    partition = Partition.build(spec.partition(), spec.nodes.count, dataset.train_labels, spec.seed)
    hosts = []
    for index, indices in enumerate(partition.local_datasets(dataset.train_labels, dataset_size)):
        host = BladeHost(
            model=spec.model,
            seed=spec.seed,
            index=index,
            behaviour=spec.behaviour(index),
            dataset_size=dataset_size,
            batch_size=batch_size,
            test_batch=spec.dfl.test_batch,
            measures=False,  # rounds.csv tests the global model on the whole test set
        )
        host.collect(dataset.train_images[indices], dataset.train_labels[indices])
        hosts.append(host)
    return hosts


class RoundRecorder(HostObserver):
    """rounds.csv: the global model after each round, as the observed client holds it."""

    def __init__(self, simulation: RoundsSimulation) -> None:
        self.simulation = simulation
        self.rounds: list[int] = []

    def round_aggregated(
        self, round: int, models: Sequence[PoolModel], found: Sequence[Resemblance]
    ) -> None:
        simulation = self.simulation
        self.rounds.append(round)
        loss, accuracy = simulation.record(
            round, simulation.network.now, simulation.hosts[simulation.observed].global_weights
        )
        if simulation.bar is not None:
            simulation.bar.update(round, f"loss {loss:.3f} accuracy {accuracy:.3f}")


class RoundsSimulation:
    """A run of `rounds` rounds of clients with fixed local datasets; subclasses build the
    engines (`_build`) and say what their run and summary add (`_run`, `_summary`)."""

    observed = 0  # the client whose global model rounds.csv tests

    def __init__(
        self,
        spec: ExperimentSpec,
        dataset: Dataset,
        out: Path,
        *,
        rounds: int,
        dataset_size: int,
        batch_size: int,
        progress: bool,
    ) -> None:
        self.spec = spec
        self.rounds = rounds
        self.out = out
        self.progress = progress
        self.bar: ProgressBar | None = None
        self.evaluator = BatchEvaluator(spec.model)
        self.test = Job(np.empty(0, np.float32), dataset.test_images, dataset.test_labels)
        self.names = [f"client{i}" for i in range(spec.nodes.count)]
        self.keys = node_keys(spec)
        self.hosts = local_hosts(spec, dataset, dataset_size, batch_size)
        self.rows: list[list[Any]] = []

    def start_network(self, network: MemoryNetwork) -> None:
        """The subclass's network, and the recorder listening to it: they come together."""
        self.network = network
        self.recorder = RoundRecorder(self)

    def record(self, round: int, when: float, weights: np.ndarray) -> tuple[float, float]:
        job = Job(weights, self.test.images, self.test.labels)
        ((loss, accuracy),) = self.evaluator.losses([job])
        self.rows.append([round, when, loss, accuracy])
        return loss, accuracy

    # --- running -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.progress:
            self.bar = ProgressBar(self.rounds, "round", label=f"{self.spec.name} ")
        started, cpu_started = time.perf_counter(), time.process_time()
        self.record(0, 0.0, self.hosts[self.observed].global_weights)
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
        """Every client's engine on the network; the chain stores to close after the run."""
        raise NotImplementedError

    def _run(self, stores: Sequence[ChainStore]) -> dict[str, Any]:
        """The run's figures for the summary (`_advance`, then `_figures`)."""
        raise NotImplementedError

    def _summary(self, wall: float, extra: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _advance(self) -> Counter[str]:
        """Runs the network to the last round or `duration`; every engine's counters, summed."""
        network = self.network
        while network.now < self.spec.duration_seconds and len(self.recorder.rounds) < self.rounds:
            network.run(min(self.spec.duration_seconds, network.now + 1.0))
        counters: Counter[str] = Counter()
        for node in network.nodes.values():
            for name, value in node.engine.state.counters.items():
                counters[name] += value
        return counters

    def _figures(self, protocol: dict[str, Any]) -> dict[str, Any]:
        """The figures every run reports, around the protocol's own (in this order)."""
        network = self.network
        return {
            "virtual_time": round(network.now, 2),
            **outputs.cpu_figures(network.profiler),
            "rejected": sum(sum(n.rejections.values()) for n in network.nodes.values()),
            **protocol,
            "genesis_digest": self.genesis.digest.hex(),
            "addresses": {
                name: key.address.hex() for name, key in zip(self.names, self.keys, strict=True)
            },
        }

    def _write_summary(
        self,
        wall: float,
        extra: dict[str, Any],
        *,
        protocol: str,
        chain: bool,
        clients: dict[str, Any],
        local_epochs: int,
        timing: dict[str, Any],
    ) -> dict[str, Any]:
        """summary.json: `clients` follows the client count, `timing` the local epochs."""
        last = self.rows[-1]
        complete = last[0] == self.rounds  # cut off at `duration`, it has no final loss
        summary = {
            "name": self.spec.name,
            "protocol": protocol,
            "seed": self.spec.seed,
            "chain": chain,
            "clients": self.spec.nodes.count,
            **clients,
            "rounds": self.rounds,
            "rounds_done": last[0],
            "local_epochs": local_epochs,
            **timing,
            "wall_seconds": round(wall, 2),
            "final_loss": round(float(last[2]), 5) if complete else None,
            "final_accuracy": round(float(last[3]), 4) if complete else None,
            **extra,
        }
        outputs.write_summary(self.out / outputs.SUMMARY_FILE, summary)
        return summary
