"""The `local` runtime: one OS process per node on 127.0.0.1, driven by this process.

It starts the nodes (each with its own data directory, config file and log), wires the topology
through their configs, injects samples at the spec's rate, samples every node's state and test-set
accuracy into metrics.csv, and tears everything down at the end or on Ctrl-C. Children get
SIGTERM (they close their chain cleanly) then SIGKILL, and on Linux they die with this process
even if it is killed itself, so no run leaves orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import grpc
import yaml
from prometheus_client.parser import text_string_to_metric_families

from node.ledger.pow import calibrate_difficulty, measure_hash_rate
from node.service.main import MALLOC_SETTING
from node.service.peers import CHANNEL_OPTIONS
from orchestrator.datasets import load_dataset
from orchestrator.evaluator import TestSetEvaluator
from orchestrator.injector import inject
from orchestrator.partition import Partition
from orchestrator.spec import ExperimentSpec
from proto.dfl.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)

READY_TIMEOUT = 120.0
STOP_GRACE = 15.0


class RunFailed(Exception):
    """A run could not start or a node died; the message says which and where its log is."""


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound and released together, so all distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the orchestrator dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class LocalNode:
    index: int
    name: str
    data_dir: Path
    port: int
    metrics_port: int
    peers: list[str]
    behaviour: str
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    address: str = ""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalRun:
    """The processes of one run and what the orchestrator measured of them."""

    spec: ExperimentSpec
    out: Path
    nodes: list[LocalNode] = field(default_factory=list)
    started_at: float = 0.0
    tolerate_exits: bool = False  # a test that kills nodes on purpose sets this
    pow_difficulty: float | None = None  # BLADE-FL: given by the spec or calibrated in prepare
    elapsed: float | None = None  # how long it ran (a BLADE-FL run may end before its duration)

    def node_config(self, node: LocalNode) -> dict[str, Any]:
        spec = self.spec
        behaviour = spec.behaviour_of(node.index)
        return {
            "name": node.name,
            "data_dir": str(node.data_dir.resolve()),
            "listen": "127.0.0.1",
            "port": node.port,
            "metrics_port": node.metrics_port,
            "peers": node.peers,
            "model": spec.model,
            "seed": spec.seed,
            "node_seed": spec.seed * 1000 + node.index,
            "behaviour": behaviour.name,
            "behaviour_options": dict(behaviour.options),
            "test_batch": spec.dfl.test_batch,
            **self.protocol_config(node),
        }

    def protocol_config(self, node: LocalNode) -> dict[str, Any]:
        """The node config's protocol part: DFL's engine and aggregator, or BLADE-FL's rounds."""
        spec = self.spec
        if spec.blade is None:
            return {
                "protocol": "dfl",
                "aggregator": spec.dfl.aggregator.name,
                "aggregator_options": dict(spec.dfl.aggregator.options),
                "dfl": spec.dfl_config_fields(node.index),
            }
        return {"protocol": "blade-fl", "blade": blade_node_fields(spec, self.pow_difficulty)}

    def prepare(self) -> None:
        count = self.spec.nodes.count
        if self.spec.blade is not None and self.pow_difficulty is None:
            self.pow_difficulty = difficulty_for(self.spec)
        ports = free_ports(2 * count)
        names = [f"node{i}" for i in range(count)]
        neighbours: dict[int, list[int]] = {i: [] for i in range(count)}
        for a, b in self.spec.edges():
            neighbours[a].append(b)
            neighbours[b].append(a)
        for index, name in enumerate(names):
            node = LocalNode(
                index=index,
                name=name,
                data_dir=self.out / "nodes" / name,
                port=ports[2 * index],
                metrics_port=ports[2 * index + 1],
                peers=[f"127.0.0.1:{ports[2 * j]}" for j in sorted(neighbours[index])],
                behaviour=self.spec.behaviour_of(index).name,
            )
            node.data_dir.mkdir(parents=True, exist_ok=True)
            (node.data_dir / "node.yaml").write_text(yaml.safe_dump(self.node_config(node)))
            self.nodes.append(node)

    def start(self, node: LocalNode) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault(*MALLOC_SETTING)
        node.log_file = open(node.data_dir / "node.log", "ab")  # noqa: SIM115 (closed in stop)
        node.process = subprocess.Popen(
            [sys.executable, "-m", "node", "--config", str(node.data_dir / "node.yaml")],
            stdout=node.log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the orchestrator only; it stops the nodes
            preexec_fn=_die_with_parent,
        )

    def stop(self, node: LocalNode, *, kill: bool = False) -> None:
        process = node.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if node.log_file is not None:
            node.log_file.close()
            node.log_file = None

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self.stop(node)

    def dead_nodes(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is not None]


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
}


def scrape_node_metrics(port: int) -> dict[str, float]:
    """CPU seconds by task and category, and the counters the report reads, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = dict.fromkeys(SUMMED_SAMPLES.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dfl_cpu_seconds_total":
                key = f"cpu_seconds:{sample.labels['task']}:{sample.labels['category']}"
                values[key] = sample.value
            elif sample.name in SUMMED_SAMPLES:
                values[SUMMED_SAMPLES[sample.name]] += sample.value
    return values


def difficulty_for(spec: ExperimentSpec) -> float:
    """BLADE-FL's difficulty: the spec's, or calibrated to `beta` from this machine's hash rate."""
    blade = spec.blade
    assert blade is not None
    if blade.difficulty is not None:
        return blade.difficulty
    rate = measure_hash_rate()
    difficulty = calibrate_difficulty(blade.beta, spec.nodes.count, os.cpu_count() or 1, rate)
    log.info(
        "difficulty %.3g: %.2f M hashes/s per core, %d clients, beta %.1f s",
        difficulty,
        rate / 1e6,
        spec.nodes.count,
        blade.beta,
    )
    return difficulty


def blade_node_fields(spec: ExperimentSpec, difficulty: float | None) -> dict[str, Any]:
    """A BLADE-FL client's `blade` settings (BladeConfig fields plus the host's)."""
    blade = spec.blade
    assert blade is not None and difficulty is not None
    return {
        "clients": spec.nodes.count,
        "rounds": blade.rounds,
        "local_iterations": blade.iterations,
        "dataset_size": blade.dataset_size,
        "collect_timeout": blade.collect_timeout,
        "vote_timeout": blade.vote_timeout,
        "difficulty": difficulty,
        "batch_size": blade.batch_size,
    }


class Progress:
    """One status line per sample: elapsed time, then accuracy and chain height per node."""

    def __init__(self, duration: float, enabled: bool) -> None:
        self.duration = duration
        self.enabled = enabled

    def show(self, elapsed: float, rows: dict[str, dict[str, float]]) -> None:
        if not self.enabled:
            return
        parts = [
            f"{name} acc {row.get('accuracy_test', float('nan')):.3f} "
            f"blk {int(row.get('chain_height', 0))}"
            for name, row in rows.items()
        ]
        print(f"[{elapsed:6.1f}/{self.duration:.0f} s] " + " | ".join(parts), flush=True)


async def _wait_ready(run: LocalRun, stubs: dict[str, node_pb2_grpc.NodeStub]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    for node in run.nodes:
        while True:
            if node.process is not None and node.process.poll() is not None:
                raise RunFailed(
                    f"{node.name} exited with {node.process.returncode} while starting; "
                    f"see {node.data_dir / 'node.log'}"
                )
            try:
                status = await stubs[node.name].GetStatus(node_pb2.StatusRequest(), timeout=2.0)
                node.address = status.address.hex()
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    message = f"{node.name} did not answer within {READY_TIMEOUT:.0f} s"
                    raise RunFailed(message) from None
                await asyncio.sleep(0.5)


async def _sample(
    run: LocalRun,
    stubs: dict[str, node_pb2_grpc.NodeStub],
    evaluator: TestSetEvaluator,
) -> dict[str, dict[str, float]]:
    """Every node's status, test-set accuracy and CPU counters, now."""
    loop = asyncio.get_running_loop()
    rows: dict[str, dict[str, float]] = {}
    for node in run.nodes:
        if node.process is None or node.process.poll() is not None:
            continue
        try:
            status = await stubs[node.name].GetStatus(node_pb2.StatusRequest(), timeout=10.0)
            model = await stubs[node.name].GetModel(node_pb2.ModelRequest(), timeout=30.0)
            scraped = await loop.run_in_executor(None, scrape_node_metrics, node.metrics_port)
        except (grpc.aio.AioRpcError, OSError) as error:
            log.warning("could not sample %s: %s", node.name, error)
            continue
        accuracy = await loop.run_in_executor(None, evaluator.accuracy, model.weights)
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


async def drive(run: LocalRun, progress: Progress, stop: asyncio.Event) -> None:
    """Injects, samples and watches the started nodes until the duration ends or `stop` is set."""
    spec = run.spec
    dataset = load_dataset(spec.dataset)
    partition = Partition.build(
        spec.nodes.distribution, spec.nodes.count, dataset.train_labels, spec.seed
    )
    evaluator = TestSetEvaluator(spec.model, dataset, spec.evaluation.test_samples, seed=spec.seed)
    channels = {
        node.name: grpc.aio.insecure_channel(node.target, options=CHANNEL_OPTIONS)
        for node in run.nodes
    }
    stubs = {name: node_pb2_grpc.NodeStub(channel) for name, channel in channels.items()}
    metrics = MetricsCsv(run.out / "metrics.csv")
    try:
        await _wait_ready(run, stubs)
        loop = asyncio.get_running_loop()
        start = loop.time()
        run.started_at = time.time()
        injecting = asyncio.Event()
        injectors = [
            asyncio.ensure_future(
                inject(
                    stubs[node.name],
                    partition.stream(node.index, dataset.train_images, dataset.train_labels),
                    spec.injection_rate_of(node.index),
                    injecting,
                )
            )
            for node in run.nodes
        ]
        duration = spec.duration_seconds
        while not stop.is_set():
            elapsed = loop.time() - start
            if elapsed >= duration:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), timeout=min(spec.evaluation.interval_seconds, duration - elapsed)
                )
            rows = await _sample(run, stubs, evaluator)
            elapsed = loop.time() - start
            for name, values in rows.items():
                metrics.write(elapsed, name, values)
            progress.show(elapsed, rows)
            if spec.blade is not None and _all_rounds_done(run, rows, spec.blade.rounds):
                log.info("every client holds all %d blocks: the run is complete", spec.blade.rounds)
                break
            dead = run.dead_nodes()
            if dead and not run.tolerate_exits:
                names = ", ".join(f"{n.name} ({n.data_dir / 'node.log'})" for n in dead)
                raise RunFailed(f"node(s) exited during the run: {names}")
        run.elapsed = loop.time() - start
        injecting.set()
        await asyncio.gather(*injectors, return_exceptions=True)
    finally:
        metrics.close()
        for channel in channels.values():
            await channel.close()


def _all_rounds_done(run: LocalRun, rows: dict[str, dict[str, float]], rounds: int) -> bool:
    return len(rows) == len(run.nodes) and all(
        row.get("chain_height", 0) >= rounds for row in rows.values()
    )


def write_run_json(run: LocalRun) -> None:
    info = {
        "name": run.spec.name,
        "runtime": "local",
        "protocol": run.spec.protocol,
        "started_at": datetime.fromtimestamp(run.started_at or time.time(), UTC).isoformat(),
        "duration_s": run.spec.duration_seconds if run.elapsed is None else run.elapsed,
        **({"pow_difficulty": run.pow_difficulty} if run.pow_difficulty is not None else {}),
        "nodes": [
            {
                "name": node.name,
                "address": node.address,
                "peers": [other.name for other in run.nodes if other.target in set(node.peers)],
                "behaviour": node.behaviour,
            }
            for node in run.nodes
        ],
    }
    (run.out / "run.json").write_text(json.dumps(info, indent=2))


@contextlib.contextmanager
def _sigint_sets(stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Ctrl-C or SIGTERM ends the run early but still cleanly (report written)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def run_local(spec: ExperimentSpec, out: Path, *, progress: bool = True) -> LocalRun:
    """Runs the experiment to its end (or Ctrl-C) and leaves everything in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(spec.to_yaml())
    run = LocalRun(spec, out)
    run.prepare()

    async def main() -> None:
        stop = asyncio.Event()
        with _sigint_sets(stop, asyncio.get_running_loop()):
            await drive(run, Progress(spec.duration_seconds, progress), stop)

    try:
        for node in run.nodes:
            run.start(node)
        asyncio.run(main())
    finally:
        run.stop_all()
        write_run_json(run)
    return run
