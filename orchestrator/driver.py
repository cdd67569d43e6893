"""The orchestrator's part of a running experiment, whatever runs the nodes.

Once nodes answer gRPC somewhere (local processes, containers, a compose stack), driving them is
the same: wait until each answers GetStatus, stream each its partition of the dataset at the
spec's rate, and every evaluation interval sample each node's status, its model's accuracy on the
common test set and its /metrics counters into metrics.csv (and, when asked, into the
orchestrator's own Prometheus metrics). The runtimes only say how to reach a node and whether it
is still alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from prometheus_client.parser import text_string_to_metric_families

from node.service import tls as transport
from node.service.config import TlsFiles
from node.service.control import ControlSigner, Metadata
from node.service.peers import CHANNEL_OPTIONS
from orchestrator.datasets import load_dataset
from orchestrator.endpoint import NodeEndpoint
from orchestrator.evaluator import TestSetEvaluator
from orchestrator.exporter import OrchestratorMetrics
from orchestrator.faults import NO_FAULTS_HINT, FaultRunner, ProcessFaults
from orchestrator.injector import inject, training_samples
from orchestrator.report.schema import FAULTS_FILE, RUN_FILE, NodeSpec, run_record
from orchestrator.spec import ExperimentSpec
from proto.dfl.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"

READY_TIMEOUT = 120.0


class RunFailed(Exception):
    """A run could not start or a node died; the message says which and where its log is."""


class Fleet(Protocol):
    """The runtime's side: its nodes, whether each still runs, and the key its nodes obey."""

    spec: ExperimentSpec
    control: ControlSigner
    started_at: float
    elapsed: float | None
    tolerate_exits: bool
    down: set[str]  # nodes a scheduled fault keeps down (crashed, paused): not sampled

    @property
    def nodes(self) -> Sequence[NodeEndpoint]: ...

    def failure_of(self, node: NodeEndpoint) -> str | None:
        """None while the node runs; otherwise what happened and where its log is."""
        ...


class MetricsCsv:
    """metrics.csv in long form: time_s,node,metric,value (one row per value)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "w", newline="")  # noqa: SIM115 (closed in close)
        self._writer = csv.writer(self._file)
        self._writer.writerow(["time_s", "node", "metric", "value"])

    def write(self, time_s: float, node: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self._writer.writerow([f"{time_s:.2f}", node, metric, f"{value:.6g}"])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# Prometheus samples summed over their labels into one metrics.csv column each.
SUMMED_SAMPLES = {
    "dfl_rejected_total": "rejected",
    "dfl_bytes_sent_total": "bytes_sent",
    "dfl_pow_hashes_total": "pow_hashes",
    "dfl_mining_seconds_sum": "mining_seconds",
    "dfl_mining_seconds_count": "mining_searches",
    "dfl_forks_total": "forks",
    "dfl_send_failures_total": "send_failures",
    "dfl_rounds_total": "rounds",
}
# Samples copied as they are, when the node exports them: its process's own memory and CPU
# wherever it runs, its cgroup's only where the cgroup is the node's alone (a container).
COPIED_SAMPLES = {
    "dfl_process_memory_uss_bytes": "uss_bytes",
    "dfl_process_memory_pss_bytes": "pss_bytes",
    "dfl_process_cpu_seconds_total": "process_cpu_seconds",
    "dfl_cgroup_memory_bytes": "memory_bytes",
    "dfl_cgroup_cpu_seconds_total": "cgroup_cpu_seconds",
    "dfl_ml_pending": "ml_pending",
}


def scrape_node_metrics(url: str) -> dict[str, float]:
    """CPU seconds by task and category, and the counters the report reads, from /metrics."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = dict.fromkeys(SUMMED_SAMPLES.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dfl_cpu_seconds_total":
                key = f"cpu_seconds:{sample.labels['task']}:{sample.labels['category']}"
                values[key] = sample.value
            elif sample.name == "dfl_network_fault_messages_total":  # by fate, in + out summed
                key = f"fault_messages_{sample.labels['fate']}"
                values[key] = values.get(key, 0.0) + sample.value
            elif sample.name in SUMMED_SAMPLES:
                values[SUMMED_SAMPLES[sample.name]] += sample.value
            elif sample.name in COPIED_SAMPLES:
                values[COPIED_SAMPLES[sample.name]] = sample.value
    return values


class Progress:
    """One status line per sample: elapsed time, then accuracy and chain height.

    Per node for a few nodes; for more than fit on a line, the spread over nodes instead.
    """

    PER_NODE_UP_TO = 6

    def __init__(self, duration: float | None, enabled: bool) -> None:
        self.duration = duration
        self.enabled = enabled

    def line(self, elapsed: float, rows: dict[str, dict[str, float]]) -> str:
        of = f"/{self.duration:.0f}" if self.duration is not None else ""
        head = f"[{elapsed:6.1f}{of} s] "
        if len(rows) > self.PER_NODE_UP_TO:
            accuracy = [row.get("accuracy_test", float("nan")) for row in rows.values()]
            heights = [int(row.get("chain_height", 0)) for row in rows.values()]
            return head + (
                f"{len(rows)} nodes: acc min {min(accuracy):.3f} mean "
                f"{sum(accuracy) / len(accuracy):.3f} max {max(accuracy):.3f} | "
                f"blk {min(heights)}-{max(heights)}"
            )
        return head + " | ".join(
            f"{name} acc {row.get('accuracy_test', float('nan')):.3f} "
            f"blk {int(row.get('chain_height', 0))}"
            for name, row in rows.items()
        )

    def show(self, elapsed: float, rows: dict[str, dict[str, float]]) -> None:
        if self.enabled and rows:
            print(self.line(elapsed, rows), flush=True)


async def wait_ready(
    fleet: Fleet, stubs: dict[str, node_pb2_grpc.NodeStub], timeout: float = READY_TIMEOUT
) -> None:
    """Until every node answers GetStatus (its address recorded), or RunFailed."""
    deadline = time.monotonic() + timeout
    for node in fleet.nodes:
        while True:
            failure = fleet.failure_of(node)
            if failure is not None:
                raise RunFailed(f"{node.name} stopped while starting: {failure}")
            try:
                status = await stubs[node.name].GetStatus(node_pb2.StatusRequest(), timeout=2.0)
                node.address = status.address.hex()
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    message = f"{node.name} did not answer within {timeout:.0f} s"
                    raise RunFailed(message) from None
                await asyncio.sleep(0.5)


def signed(fleet: Fleet, node: NodeEndpoint, method: str) -> Callable[[], Metadata]:
    """Fresh control metadata for each call of `method` on `node` (known once it answered)."""
    return lambda: fleet.control.metadata(method, bytes.fromhex(node.address))


@dataclass
class TestedModel:
    """A node's model version the orchestrator last fetched, and its test-set accuracy."""

    version: bytes
    accuracy: float


async def sample(
    fleet: Fleet,
    stubs: dict[str, node_pb2_grpc.NodeStub],
    evaluator: TestSetEvaluator,
    tested: dict[str, TestedModel] | None = None,
) -> dict[str, dict[str, float]]:
    """Every running node's status, test-set accuracy and /metrics counters, now.

    With `tested` (kept by the caller between samples), a node whose model has not changed
    since the last sample sends no weights and its accuracy is not measured again."""
    tested = {} if tested is None else tested
    loop = asyncio.get_running_loop()
    rows: dict[str, dict[str, float]] = {}
    for node in fleet.nodes:
        if node.name in fleet.down or fleet.failure_of(node) is not None:
            continue
        try:
            status = await stubs[node.name].GetStatus(node_pb2.StatusRequest(), timeout=10.0)
            known = tested.get(node.name)
            model = await stubs[node.name].GetModel(
                node_pb2.ModelRequest(known_version=known.version if known else b""),
                timeout=30.0,
                metadata=signed(fleet, node, "GetModel")(),
            )
            url = node.metrics_url
            scraped = await loop.run_in_executor(None, scrape_node_metrics, url) if url else {}
        except (grpc.aio.AioRpcError, OSError) as error:
            reason = (
                f"{error.code().name} ({error.details()})"
                if isinstance(error, grpc.aio.AioRpcError)
                else str(error)
            )
            log.warning("could not sample %s: %s", node.name, reason)
            continue
        if model.unchanged and known is not None:
            accuracy = known.accuracy
        else:
            accuracy = await loop.run_in_executor(None, evaluator.accuracy, model.weights)
            tested[node.name] = TestedModel(model.version, accuracy)
        rows[node.name] = {
            "accuracy_test": accuracy,
            "accuracy_local": status.local_accuracy,
            "chain_height": status.chain_height,
            "transactions_sent": status.transactions_sent,
            "transactions_received": status.transactions_received,
            "samples_injected": status.samples_collected,
            **scraped,
        }
    return rows


async def drive(
    fleet: Fleet,
    progress: Progress,
    stop: asyncio.Event,
    *,
    metrics_csv: Path | None = None,
    exporter: OrchestratorMetrics | None = None,
    duration: float | None = None,
    ready_timeout: float = READY_TIMEOUT,
    alongside: Callable[[Fleet, asyncio.Event, OrchestratorMetrics | None], Awaitable[bool]]
    | None = None,
    tls: TlsFiles | None = None,
) -> None:
    """Injects, samples and watches the started nodes until `duration` ends or `stop` is set.

    `duration` None runs until `stop` (a compose stack's orchestrator). `alongside` is more
    work for the same span (`dfl load`'s Locust process): started once every node answers,
    given the fleet, an event set when the run ends and the exporter, and awaited before this
    returns, so while the nodes still run. If it ends on its own with True, so does the run
    (`dfl load --step`: after its last stage), at the next sample.

    `tls`: the orchestrator's own certificate, when the nodes serve mutual TLS; by default the
    fleet's `client_tls`, if it has one (a runtime that made the run's CA keeps it there).
    """
    spec = fleet.spec
    dataset = load_dataset(spec.dataset)
    samples = training_samples(spec, dataset)
    evaluator = TestSetEvaluator(spec.model, dataset, spec.evaluation.test_samples, seed=spec.seed)
    tls = tls or getattr(fleet, "client_tls", None)
    channels = {
        node.name: transport.channel(node.target, tls, CHANNEL_OPTIONS, server_name=node.tls_name)
        for node in fleet.nodes
    }
    stubs = {name: node_pb2_grpc.NodeStub(channel) for name, channel in channels.items()}
    metrics = MetricsCsv(metrics_csv) if metrics_csv is not None else None
    try:
        await wait_ready(fleet, stubs, ready_timeout)
        loop = asyncio.get_running_loop()
        start = loop.time()
        fleet.started_at = time.time()
        injecting = asyncio.Event()
        injectors = [
            asyncio.ensure_future(
                inject(
                    stubs[node.name],
                    samples[node.index],
                    spec.injection_rate_of(node.index),
                    injecting,
                    metadata=signed(fleet, node, "InjectSamples"),
                    on_accepted=exporter.injected_into(node.name) if exporter else None,
                )
            )
            for node in fleet.nodes
        ]
        faults = _fault_runner(fleet, stubs, metrics_csv, exporter)
        faulting = (
            asyncio.ensure_future(faults.run(start, injecting)) if faults is not None else None
        )
        beside = asyncio.ensure_future(alongside(fleet, injecting, exporter)) if alongside else None
        interval = spec.evaluation.interval_seconds
        tested: dict[str, TestedModel] = {}
        while not stop.is_set():
            elapsed = loop.time() - start
            if duration is not None and elapsed >= duration:
                break
            if beside is not None and beside.done() and not beside.exception() and beside.result():
                log.info("the load test is over: so is the run")
                break
            wait = interval if duration is None else min(interval, duration - elapsed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            rows = await sample(fleet, stubs, evaluator, tested)
            elapsed = loop.time() - start
            for name, values in rows.items():
                if metrics is not None:
                    metrics.write(elapsed, name, values)
                if exporter is not None:
                    exporter.sampled(name, values)
            progress.show(elapsed, rows)
            if spec.blade is not None and _all_rounds_done(fleet, rows, spec.blade.rounds):
                log.info("every client holds all %d blocks: the run is complete", spec.blade.rounds)
                break
            if spec.fedavg is not None and _all_rounds_done(
                fleet, rows, spec.fedavg.rounds, "rounds"
            ):
                log.info("every node holds the global model of round %d: done", spec.fedavg.rounds)
                break
            failed = [
                f"{node.name} ({failure})"
                for node in fleet.nodes
                if (failure := fleet.failure_of(node)) is not None
            ]
            if failed and not fleet.tolerate_exits:
                raise RunFailed(f"node(s) stopped during the run: {', '.join(failed)}")
        fleet.elapsed = loop.time() - start
        injecting.set()
        await asyncio.gather(*injectors, return_exceptions=True)
        if faulting is not None:
            await faulting
        if beside is not None:
            await beside
    finally:
        if metrics is not None:
            metrics.close()
        for channel in channels.values():
            await channel.close()


def _fault_runner(
    fleet: Fleet,
    stubs: dict[str, node_pb2_grpc.NodeStub],
    metrics_csv: Path | None,
    exporter: OrchestratorMetrics | None,
) -> FaultRunner | None:
    """The spec's fault schedule against this fleet, if it has one (RunFailed if the runtime
    cannot carry faults out)."""
    spec = fleet.spec
    if not spec.faults:
        return None
    if not isinstance(fleet, ProcessFaults):
        raise RunFailed(f"this runtime cannot carry out the spec's faults: {NO_FAULTS_HINT}")
    nodes = sorted(fleet.nodes, key=lambda node: node.index)

    async def set_network(index: int, fault: node_pb2.NetworkFault) -> None:
        node = nodes[index]
        metadata = signed(fleet, node, "SetNetworkFault")()
        await stubs[node.name].SetNetworkFault(fault, timeout=5.0, metadata=metadata)

    async def heights() -> dict[str, int]:
        found = {}
        for node in nodes:
            if node.name in fleet.down:
                continue
            try:
                status = await stubs[node.name].GetStatus(node_pb2.StatusRequest(), timeout=2.0)
            except grpc.aio.AioRpcError:
                continue
            found[node.name] = status.chain_height
        return found

    directory = metrics_csv.parent if metrics_csv is not None else Path(".")
    names = [node.name for node in nodes]

    def changed(kind: str, indices: Sequence[int], active: bool) -> None:
        if exporter is not None:
            exporter.fault_changed(kind, [names[i] for i in indices], active)

    return FaultRunner(
        spec,
        fleet,
        set_network,
        fleet.peer_address,
        directory / FAULTS_FILE,
        heights,
        on_change=changed,
    )


def _all_rounds_done(
    fleet: Fleet, rows: dict[str, dict[str, float]], rounds: int, column: str = "chain_height"
) -> bool:
    """Every node sampled holds `rounds` rounds by `column`: BLADE-FL's blocks, or FedAvg's
    rounds (dfl_rounds_total: it keeps no chain)."""
    return len(rows) == len(fleet.nodes) and all(
        row.get(column, 0) >= rounds for row in rows.values()
    )


@contextlib.contextmanager
def signals_set(stop: asyncio.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM ends the run early but still cleanly (chains collected, report written)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def write_run_info(
    fleet: Fleet,
    out: Path,
    runtime: str,
    peers: dict[str, list[str]],
    extra: dict[str, Any],
) -> None:
    """run.json: what the report needs besides metrics.csv (who ran, how long, who peered)."""
    spec = fleet.spec
    nodes = [
        NodeSpec(
            name=node.name,
            address=node.address,
            peers=tuple(peers.get(node.name, [])),
            behaviour=spec.behaviour_of(node.index).name,
        )
        for node in fleet.nodes
    ]
    record = run_record(
        spec,
        runtime,
        started_at=fleet.started_at or time.time(),
        duration_s=spec.duration_seconds if fleet.elapsed is None else fleet.elapsed,
        nodes=nodes,
        **extra,
    )
    (out / RUN_FILE).write_text(record)


def run_experiment(fleet: Fleet, out: Path, *, progress: bool, **options: Any) -> None:
    """Drives the started nodes for the spec's duration (or until Ctrl-C): metrics.csv in out.

    `options` go to `drive` (the exporter, a longer ready timeout).
    """
    spec = fleet.spec

    async def main() -> None:
        stop = asyncio.Event()
        with signals_set(stop):
            await drive(
                fleet,
                Progress(spec.duration_seconds, progress),
                stop,
                metrics_csv=out / METRICS_FILE,
                duration=spec.duration_seconds,
                **options,
            )

    asyncio.run(main())
