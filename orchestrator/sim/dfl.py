"""A DFL experiment in one process: the paper's simulator (section 5.2) with the chain in the loop.

Each node trains every 8-12 ticks (spec `sim.training_interval`) on a fresh batch drawn from its
label distribution, its engine signs a transaction and sends it to the neighbours, each neighbour
tests the model on 100 samples drawn from its own distribution of the test set, signs a receipt
and buffers the model, and a full buffer is aggregated by the spec's rule. Blocks are drafted,
confirmed and finalized by the same `DflEngine` a container runs, into real SQLite chain stores.
With `chain=False` the engine is the paper's own, chainless one (node/protocol/chainless.py).

The ML is a node's own: every node is a `DflHost` (node/host/dfl.py) with the keys, genesis and
random streams a node process of the same spec has. The simulator replaces only where samples
come from (the partition's streams, and test draws from the test set by the node's label
weights, one per node per instant) and what runs a model on test samples (one shared
`BatchEvaluator` for every node).

Every `sim.accuracy_interval` ticks, each node's model is tested on fresh uniform test samples
(accuracy.csv) and eq. 5's per-layer weight difference is taken (weight_diff.csv).

A spec with `faults:` has them carried out in virtual time (orchestrator/sim/faults.py): a
crashed node is rebuilt as a restarted process rebuilds itself, a fresh host resumed from its
checkpoint and an engine continuing its re-verified chain store.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from node import seeds
from node.host.checkpoint import Checkpoint
from node.host.dfl import DflHost
from node.host.dispatch import HostObserver
from node.host.samples import StreamedSamples
from node.learning.aggregation import INITIAL_REPUTATION, load_aggregator
from node.ledger.keys import NodeKey
from node.ledger.store import ChainStore
from node.protocol.chainless import ChainlessDflEngine
from node.protocol.dfl import DflEngine
from node.protocol.events import BufferedModel, SamplesCollected
from orchestrator.datasets import Dataset
from orchestrator.genesis import spec_genesis
from orchestrator.partition import Partition, SampleStream
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode
from orchestrator.sim import outputs
from orchestrator.sim.evaluation import BatchEvaluator, Job
from orchestrator.sim.faults import SimulatedFaults
from orchestrator.sim.progress import ProgressBar
from orchestrator.spec import ExperimentSpec

HONEST = ("normal", "observer")
LATENCY = 0.001  # virtual seconds a message takes


def node_keys(spec: ExperimentSpec) -> list[NodeKey]:
    """The nodes' signing keys: derived from (seed, index), as in every runtime, unless the spec
    asks for random ones."""
    if spec.identity == "random":
        return [NodeKey.generate() for _ in range(spec.nodes.count)]
    return [
        NodeKey.from_seed(seeds.identity_seed(spec.seed, index))
        for index in range(spec.nodes.count)
    ]


class _ReputationRecorder(HostObserver):
    """reputation.csv's rows: after each aggregation, the node's reputation of each generator;
    and, in a run where nodes crash, the node's checkpoint, saved as a node process saves it."""

    def __init__(self, simulation: DflSimulation, index: int) -> None:
        self.simulation = simulation
        self.index = index
        self.rows: list[tuple[float, str, str, float]] = []

    def aggregated(
        self, models: Sequence[BufferedModel], reputation: Mapping[str, float] | None
    ) -> None:
        simulation = self.simulation
        checkpoint = simulation.checkpoints.get(self.index)
        if checkpoint is not None:
            store = simulation.network.nodes[simulation.names[self.index]].store
            height = store.height if store is not None else 0
            with simulation.network.profiler.measure("other", "ml"):
                simulation.hosts[self.index].save(checkpoint, "aggregation", height)
        if not reputation:
            return  # a rule without reputations (FedAvg, HalfFedAvg) leaves no rows
        now = round(self.simulation.network.now, 3)
        name = self.simulation.names[self.index]
        for generator in sorted({m.generator.hex() for m in models}):
            value = reputation.get(generator, INITIAL_REPUTATION)
            self.rows.append((now, name, self.simulation.name_of(generator), value))


class DflSimulation:
    """Builds the nodes of `spec`, runs them for `spec.duration` ticks, writes DIR's files."""

    def __init__(
        self,
        spec: ExperimentSpec,
        dataset: Dataset,
        out: Path,
        *,
        chain: bool = True,
        progress: bool = True,
    ) -> None:
        if spec.protocol != "dfl":
            raise ValueError(f"{spec.name} is a {spec.protocol} experiment, not dfl")
        self.spec = spec
        self.out = out
        self.chain = chain
        self.progress = progress
        self.ticks = round(spec.duration_seconds)
        self.evaluator = BatchEvaluator(spec.model)
        self.test_images, self.test_labels = dataset.test_images, dataset.test_labels
        self.network = MemoryNetwork(latency=LATENCY, seed=spec.seed)
        self.names = [f"node{i}" for i in range(spec.nodes.count)]
        self.keys = node_keys(spec)
        self.hosts: list[DflHost] = []
        self.recorders: list[_ReputationRecorder] = []
        self.stores: list[ChainStore] = []
        self.checkpoints: dict[int, Checkpoint] = {}  # nodes that may crash: index -> theirs
        self._build(dataset)

    def _now(self) -> float:
        return self.network.now

    def name_of(self, generator: str) -> str:
        """A node's name from the hex address the aggregator knows it by."""
        return self._names_by_address.get(generator, generator)

    # --- set-up --------------------------------------------------------------------------------

    def _build(self, dataset: Dataset) -> None:
        spec, seed = self.spec, self.spec.seed
        partition = Partition.build(spec.partition(), spec.nodes.count, dataset.train_labels, seed)
        self.label_weights = partition.weights
        self._names_by_address = {
            key.address.hex(): name for key, name in zip(self.keys, self.names, strict=True)
        }
        self._samples = []
        for index in range(spec.nodes.count):
            test_stream = SampleStream(
                self.test_images,
                self.test_labels,
                partition.weights[index],
                seeds.stream(seed, seeds.Purpose.TEST_STREAM, index),
            )
            train_stream = partition.stream(index, dataset.train_images, dataset.train_labels)
            self._samples.append(StreamedSamples(train_stream, test_stream, self._now))
            self.hosts.append(self._host(index))
        self.genesis = spec_genesis(spec, learner=self.hosts[0].learner)
        crashing = {i for f in spec.faults if f.kind == "crash" for i in f.nodes}
        for index, (name, key, host) in enumerate(
            zip(self.names, self.keys, self.hosts, strict=True)
        ):
            store = None
            if self.chain:
                store = ChainStore.create(self.out / "nodes" / name, self.genesis, key.address)
                self.stores.append(store)
            if index in crashing:
                self.checkpoints[index] = Checkpoint(self.out / "nodes" / name, self.genesis)
            engine = self._engine(index, store)
            recorder = _ReputationRecorder(self, index)
            self.recorders.append(recorder)
            self.network.add(MemoryNode(name, engine, host, store, observer=recorder))
        self.network.connect([(self.names[a], self.names[b]) for a, b in spec.edges()])
        self._schedule_training()
        self.slices = self.hosts[0].learner.flat.slices
        parameter_names = [name for name, _ in self.hosts[0].learner.module.named_parameters()]
        self.layers = outputs.layer_groups(parameter_names)

    def _host(self, index: int) -> DflHost:
        """Node `index`'s host as a node process builds it: the initial model, a fresh
        aggregator; its samples continue the partition's streams."""
        spec, aggregator = self.spec, self.spec.dfl.aggregator
        return DflHost(
            model=spec.model,
            seed=spec.seed,
            index=index,
            aggregator=load_aggregator(aggregator.name, **aggregator.options),
            behaviour=spec.behaviour(index),
            samples=self._samples[index],
            test_batch=spec.dfl.test_batch,
            tester=self.evaluator,
            track_local_accuracy=False,  # accuracy.csv is the simulator's record
        )

    def _engine(self, index: int, store: ChainStore | None) -> DflEngine | ChainlessDflEngine:
        """The engine a node process builds: continuing its store's chain, if it has one."""
        config = self.spec.dfl_config(index)
        if store is None:
            return ChainlessDflEngine(self.keys[index].address, config)
        return DflEngine(
            self.keys[index],
            self.genesis,
            config,
            height=store.height,
            head_digest=store.head_digest,
            draft=store.draft(),
        )

    def restart(self, index: int) -> None:
        """Node `index` after a crash, as its process restarts: its store reopened (and so
        re-verified), a fresh host on its checkpoint, an engine continuing the chain."""
        name = self.names[index]
        node = self.network.nodes[name]
        if node.store is not None:
            node.store.close()
            node.store = ChainStore.open(self.out / "nodes" / name)
            self.stores[index] = node.store
        host = self._host(index)
        saved = self.checkpoints[index].load() if index in self.checkpoints else None
        if saved is not None:
            host.resume_from(saved)
        self.hosts[index] = host
        self.network.restart(name, self._engine(index, node.store), host)

    def _schedule_training(self) -> None:
        """Each node's training ticks, drawn up front: a batch arrives, the engine trains."""
        low, high = self.spec.sim.training_interval
        batch = self.spec.dfl.batch_size
        for index, name in enumerate(self.names):
            rng = seeds.stream(self.spec.seed, seeds.Purpose.SCHEDULE, index)
            tick = int(rng.integers(low, high + 1))
            while tick <= self.ticks:
                self.network.schedule(float(tick), name, SamplesCollected(batch))
                tick += int(rng.integers(low, high + 1))

    # --- records -------------------------------------------------------------------------------

    def _record(self, tick: int, writers: dict[str, outputs.SeriesCsv]) -> list[float]:
        jobs = []
        for index, host in enumerate(self.hosts):
            rng = seeds.stream(self.spec.seed, seeds.Purpose.RECORD, index, tick)
            picks = rng.choice(len(self.test_labels), self.spec.sim.test_samples, replace=False)
            jobs.append(
                Job(
                    host.learner.flat.weights.numpy(),
                    self.test_images[picks],
                    self.test_labels[picks],
                )
            )
        with self.network.profiler.measure("other", "ml"):
            accuracies = self.evaluator.accuracies(jobs)
            sums = np.array(
                [outputs.layer_sums(job.weights, self.slices, self.layers) for job in jobs]
            )
        writers["accuracy"].write([tick, *accuracies])
        writers["weight_diff"].write([tick, *outputs.weight_difference(sums)])
        for recorder in self.recorders:
            for row in recorder.rows:
                writers["reputation"].write(row)
            recorder.rows.clear()
        return accuracies

    # --- running -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        writers = {
            "accuracy": outputs.SeriesCsv(self.out / outputs.ACCURACY_FILE, ["tick", *self.names]),
            "weight_diff": outputs.SeriesCsv(
                self.out / outputs.WEIGHT_DIFF_FILE, ["tick", *self.layers]
            ),
            "reputation": outputs.SeriesCsv(
                self.out / outputs.REPUTATION_FILE, ["tick", "node", "generator", "reputation"]
            ),
        }
        interval = self.spec.sim.accuracy_interval
        faults = SimulatedFaults(self, self.out) if self.spec.faults else None
        bar = ProgressBar(self.ticks, "tick", label=f"{self.spec.name} ") if self.progress else None
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            accuracies = self._record(0, writers)
            if faults is not None:
                faults.sample(0, accuracies)
            for tick in sorted({*range(interval, self.ticks + 1, interval), self.ticks}):
                if faults is not None:
                    faults.run_until(float(tick))
                self.network.run(float(tick))
                accuracies = self._record(tick, writers)
                if faults is not None:
                    faults.sample(tick, accuracies)
                if bar is not None:
                    bar.update(tick, f"mean accuracy {np.mean(accuracies):.3f}")
            wall = time.perf_counter() - started
            self.process_cpu = time.process_time() - cpu_started
            chain_rows = self._chain_rows()
            fault_rows = faults.finish(self.ticks) if faults is not None else None
            for name, host in zip(self.names, self.hosts, strict=True):
                (self.out / "nodes" / name).mkdir(parents=True, exist_ok=True)
                host.sample_log.write(self.out / "nodes" / name)
        finally:
            for writer in writers.values():
                writer.close()
            if bar is not None:
                bar.close()
            for store in self.stores:
                store.close()
        return self._summary(wall, chain_rows, fault_rows)

    def _chain_rows(self) -> list[dict[str, Any]]:
        rows = []
        for node, host in zip(self.network.nodes.values(), self.hosts, strict=True):
            counters = node.engine.state.counters
            row: dict[str, Any] = {"node": node.name, "behaviour": host.behaviour.name}
            if node.store is not None:
                row["height"] = node.store.height
            for name in (
                "transactions_generated",
                "transactions_received",
                "receipts_written",
                "receipts_collected",
                "blocks_finalized",
                "blocks_timed_out",
                "confirmations_sent",
                "aggregations",
            ):
                row[name] = counters.get(name, 0)
            row["messages_sent"] = node.messages_sent
            row["bytes_sent"] = node.bytes_sent
            row["rejected"] = sum(node.rejections.values())
            rows.append(row)
        path = self.out / outputs.CHAIN_FILE
        writer = outputs.SeriesCsv(path, list(rows[0]))
        for row in rows:
            writer.write(row.values())
        writer.close()
        return rows

    def _summary(
        self,
        wall: float,
        chain_rows: list[dict[str, Any]],
        fault_rows: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        _, series = outputs.read_series(self.out / outputs.ACCURACY_FILE)
        ticks, values = series[:, 0], series[:, 1:]
        honest = [i for i, h in enumerate(self.hosts) if h.behaviour.name in HONEST]
        mean_honest = values[:, honest].mean(axis=1)
        final = values[-outputs.FINAL_RECORDS :, honest].mean(axis=0)
        summary = {
            "name": self.spec.name,
            "protocol": "dfl",
            "seed": self.spec.seed,
            "chain": self.chain,
            "ticks": self.ticks,
            "nodes": self.spec.nodes.count,
            "wall_seconds": round(wall, 2),
            "ticks_per_second": round(self.ticks / wall, 2) if wall else None,
            **outputs.cpu_figures(self.network.profiler),
            # all threads, torch's included: the profile counts the simulator's thread
            "process_cpu_seconds": round(self.process_cpu, 2),
            "evaluations": self.evaluator.evaluations,
            "measured_nodes": [self.names[i] for i in honest],
            "final_accuracy": round(float(final.mean()), 4),
            "final_accuracy_by_node": {
                self.names[i]: round(float(a), 4) for i, a in zip(honest, final, strict=True)
            },
            "ticks_to_0.9": outputs.first_tick_at(ticks, mean_honest, 0.9),
            "blocks_finalized": sum(row.get("blocks_finalized", 0) for row in chain_rows),
            "rejected": sum(row["rejected"] for row in chain_rows),
            "genesis_digest": self.genesis.digest.hex(),
            "addresses": {
                name: key.address.hex() for name, key in zip(self.names, self.keys, strict=True)
            },
            "edges": [list(edge) for edge in self.spec.edges()],
        }
        if fault_rows is not None:
            summary["faults"] = fault_rows  # the rows of faults.md, as a report's summary.json
        outputs.write_summary(self.out / outputs.SUMMARY_FILE, summary)
        return summary
