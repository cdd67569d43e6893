"""A DFL experiment in one process: the paper's simulator (section 5.2) with the chain in the loop.

Each node trains every 8-12 ticks (spec `sim.training_interval`) on a fresh batch drawn from its
label distribution, its engine signs a transaction and sends it to the neighbours, each neighbour
tests the model on 100 samples drawn from its own distribution of the test set, signs a receipt
and buffers the model, and a full buffer is aggregated by the spec's rule. Blocks are drafted,
confirmed and finalized by the same `DflEngine` a container runs, into real SQLite chain stores.
With `chain=False` the engine is the paper's own, chainless one (node/protocol/chainless.py).

Every `sim.accuracy_interval` ticks, each node's model is tested on fresh uniform test samples
(accuracy.csv) and eq. 5's per-layer weight difference is taken (weight_diff.csv).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from node.learning.aggregation import (
    INITIAL_REPUTATION,
    CheckedAggregator,
    ReceivedModel,
    load_aggregator,
)
from node.learning.behaviours import Behaviour
from node.learning.training import Learner
from node.ledger.keys import NodeKey
from node.ledger.store import ChainStore
from node.protocol.chainless import ChainlessDflEngine
from node.protocol.common import SamplesCollected
from node.protocol.dfl import BufferedModel, DflEngine
from node.service.learning_host import experiment_genesis
from orchestrator.datasets import Dataset
from orchestrator.partition import Partition, SampleStream
from orchestrator.runtimes.memory import MemoryNode
from orchestrator.sim import outputs
from orchestrator.sim.evaluation import BatchEvaluator, Job
from orchestrator.sim.network import PendingEvaluation, SimNetwork
from orchestrator.sim.progress import ProgressBar
from orchestrator.spec import ExperimentSpec

# Independent random streams per node under the experiment seed.
_TEST, _SCHEDULE, _BEHAVIOUR, _ACCURACY = 11, 12, 13, 14
HONEST = ("normal", "observer")


@dataclass
class DflSimNode:
    """One node's ML for its engine: model, samples, behaviour, aggregation rule, reputation."""

    name: str
    learner: Learner
    behaviour: Behaviour
    aggregator: CheckedAggregator
    train_stream: SampleStream
    test_stream: SampleStream  # the node's own label distribution over the test set
    rng: np.random.Generator
    names_by_address: dict[bytes, str]
    clock: Callable[[], float]
    reputation: dict[str, float] = field(default_factory=dict)
    reputation_rows: list[tuple[float, str, str, float]] = field(default_factory=list)
    last_accuracy: float = 0.0  # from the latest accuracy record: eq. 2-4 never read it

    def train(self, batch_size: int) -> bytes:
        images, labels = self.train_stream.draw(batch_size)
        if self.behaviour.trains:
            images, labels = self.behaviour.batch(images, labels, self.rng)
            self.learner.train_step(images, labels)
        outgoing = self.behaviour.outgoing(self.learner.weights(), self.rng)
        return outgoing.astype("<f4", copy=False).tobytes()

    def evaluate(self, model: bytes) -> float:
        """Unbatched, for a network without a batch evaluator (tests)."""
        images, labels = self.test_stream.draw(self.learner.test_batch_size)
        return self.learner.accuracy_of(np.frombuffer(model, "<f4").copy(), images, labels)

    def aggregate(self, models: Sequence[BufferedModel]) -> None:
        received = [
            ReceivedModel(
                np.frombuffer(m.model, "<f4"),
                m.accuracy,
                self.names_by_address.get(m.generator, m.generator.decode(errors="replace")),
            )
            for m in models
        ]
        updated = self.aggregator.update_model(
            self.learner.weights(), self.last_accuracy, received, self.reputation
        )
        self.learner.set_weights(updated)
        if not self.reputation:
            return  # a rule without reputations (FedAvg, HalfFedAvg) leaves no rows
        now = self.clock()
        for generator in sorted({str(r.generator) for r in received}):
            value = self.reputation.get(generator, INITIAL_REPUTATION)
            self.reputation_rows.append((round(now, 3), self.name, generator, value))


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
        self.network = SimNetwork(evaluate=self._evaluate_batch)
        self.names = [f"node{i}" for i in range(spec.nodes.count)]
        self.hosts: list[DflSimNode] = []
        self.stores: list[ChainStore] = []
        self.evaluations = 0
        self._build(dataset)

    # --- set-up --------------------------------------------------------------------------------

    def _build(self, dataset: Dataset) -> None:
        spec, seed = self.spec, self.spec.seed
        partition = Partition.build(spec.partition(), spec.nodes.count, dataset.train_labels, seed)
        self.label_weights = partition.weights
        keys = [NodeKey.from_seed(f"sim/{seed}/{name}".encode()) for name in self.names]
        names_by_address = {key.address: name for key, name in zip(keys, self.names, strict=True)}
        names_by_address.update({name.encode(): name for name in self.names})  # chainless ids
        aggregator = spec.dfl.aggregator
        genesis = None
        for index, name in enumerate(self.names):
            learner = Learner(spec.model, seed=seed, test_batch_size=spec.dfl.test_batch)
            if genesis is None:
                genesis = experiment_genesis(spec.model, seed, learner)
            host = DflSimNode(
                name=name,
                learner=learner,
                behaviour=spec.behaviour(index),
                aggregator=load_aggregator(aggregator.name, **aggregator.options),
                train_stream=partition.stream(index, dataset.train_images, dataset.train_labels),
                test_stream=SampleStream(
                    self.test_images,
                    self.test_labels,
                    partition.weights[index],
                    np.random.default_rng([seed, _TEST, index]),
                ),
                rng=np.random.default_rng([seed, _BEHAVIOUR, index]),
                names_by_address=names_by_address,
                clock=lambda: self.network.now,
            )
            config = spec.dfl_config(index)
            store = None
            engine: DflEngine | ChainlessDflEngine
            if self.chain:
                engine = DflEngine(keys[index], genesis, config)
                store = ChainStore.create(self.out / "nodes" / name, genesis, keys[index].address)
                self.stores.append(store)
            else:
                engine = ChainlessDflEngine(name, config)
            self.hosts.append(host)
            self.network.add(MemoryNode(name, engine, host, store))
        self.network.connect([(self.names[a], self.names[b]) for a, b in spec.edges()])
        self._schedule_training()
        self.slices = self.hosts[0].learner.flat.slices
        parameter_names = [name for name, _ in self.hosts[0].learner.module.named_parameters()]
        self.layers = outputs.layer_groups(parameter_names)

    def _schedule_training(self) -> None:
        """Each node's training ticks, drawn up front: a batch arrives, the engine trains."""
        low, high = self.spec.sim.training_interval
        batch = self.spec.dfl.batch_size
        for index, name in enumerate(self.names):
            rng = np.random.default_rng([self.spec.seed, _SCHEDULE, index])
            tick = int(rng.integers(low, high + 1))
            while tick <= self.ticks:
                self.network.schedule(float(tick), name, SamplesCollected(batch))
                tick += int(rng.integers(low, high + 1))

    # --- the hot path --------------------------------------------------------------------------

    def _evaluate_batch(self, pending: Sequence[PendingEvaluation]) -> list[float]:
        """One test draw per node per instant, shared by the models that node tests then."""
        draws: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        jobs = []
        for item in pending:
            host = item.node.host
            assert isinstance(host, DflSimNode)
            if host.name not in draws:
                draws[host.name] = host.test_stream.draw(self.spec.dfl.test_batch)
            images, labels = draws[host.name]
            jobs.append(Job(np.frombuffer(item.action.model, "<f4"), images, labels))
        self.evaluations += len(jobs)
        return self.evaluator.accuracies(jobs)

    def _record(self, tick: int, writers: dict[str, outputs.SeriesCsv]) -> list[float]:
        jobs = []
        for index, host in enumerate(self.hosts):
            rng = np.random.default_rng([self.spec.seed, _ACCURACY, index, tick])
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
        for host, accuracy in zip(self.hosts, accuracies, strict=True):
            host.last_accuracy = accuracy
        writers["accuracy"].write([tick, *accuracies])
        writers["weight_diff"].write([tick, *outputs.weight_difference(sums)])
        for host in self.hosts:
            for row in host.reputation_rows:
                writers["reputation"].write(row)
            host.reputation_rows.clear()
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
        bar = ProgressBar(self.ticks, "tick", label=f"{self.spec.name} ") if self.progress else None
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            self._record(0, writers)
            for tick in sorted({*range(interval, self.ticks + 1, interval), self.ticks}):
                self.network.run(float(tick))
                accuracies = self._record(tick, writers)
                if bar is not None:
                    bar.update(tick, f"mean accuracy {np.mean(accuracies):.3f}")
            wall = time.perf_counter() - started
            self.process_cpu = time.process_time() - cpu_started
            chain_rows = self._chain_rows()
        finally:
            for writer in writers.values():
                writer.close()
            if bar is not None:
                bar.close()
            for store in self.stores:
                store.close()
        return self._summary(wall, chain_rows)

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

    def _summary(self, wall: float, chain_rows: list[dict[str, Any]]) -> dict[str, Any]:
        _, series = outputs.read_series(self.out / outputs.ACCURACY_FILE)
        ticks, values = series[:, 0], series[:, 1:]
        honest = [i for i, h in enumerate(self.hosts) if h.behaviour.name in HONEST]
        mean_honest = values[:, honest].mean(axis=1)
        final = values[-outputs.FINAL_RECORDS :, honest].mean(axis=0)
        by_category = self.network.profiler.by_category()
        profiled = sum(by_category.values())
        summary = {
            "name": self.spec.name,
            "protocol": "dfl",
            "seed": self.spec.seed,
            "chain": self.chain,
            "ticks": self.ticks,
            "nodes": self.spec.nodes.count,
            "wall_seconds": round(wall, 2),
            "ticks_per_second": round(self.ticks / wall, 2) if wall else None,
            "cpu_seconds": {k: round(v, 3) for k, v in sorted(by_category.items())},
            # all threads, torch's included: the profile above counts the simulator's thread
            "process_cpu_seconds": round(self.process_cpu, 2),
            "chain_share": round(by_category.get("blockchain", 0.0) / profiled, 4)
            if profiled
            else 0.0,
            "evaluations": self.evaluations,
            "evaluation_batches": self.network.evaluation_batches,
            "measured_nodes": [self.names[i] for i in honest],
            "final_accuracy": round(float(final.mean()), 4),
            "final_accuracy_by_node": {
                self.names[i]: round(float(a), 4) for i, a in zip(honest, final, strict=True)
            },
            "ticks_to_0.9": outputs.first_tick_at(ticks, mean_honest, 0.9),
            "blocks_finalized": sum(row.get("blocks_finalized", 0) for row in chain_rows),
            "rejected": sum(row["rejected"] for row in chain_rows),
        }
        outputs.write_summary(self.out / outputs.SUMMARY_FILE, summary)
        return summary
