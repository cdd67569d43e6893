"""Driving the flooder (tests/integration/flooder.py) from a test or a benchmark: the node's
RSS watched from /proc, the flooder run as a process, a local network with the limits a test
sets, and the whole "valid flood at 10x capacity" measurement.

Kept apart from the flooder so that the flooder process imports neither the orchestrator nor
torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.flooder import REPO_ROOT, ValidRecords

# --- driving a flood from a test or a benchmark --------------------------------------------------
#
# Imports of the orchestrator and the test network stay inside these functions: the flooder
# process itself needs none of them (nor torch).


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set (VmRSS) or its peak since the last reset (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Resets the process's VmHWM to its current RSS (Linux clear_refs 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssWatch:
    """The highest VmRSS of `pid` seen while running, polled every `interval` seconds; with
    VmHWM (reset at the start) as well, so a peak between two polls is not missed."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rss-watch", daemon=True)
        self._hwm = False

    def __enter__(self) -> RssWatch:
        self._hwm = reset_peak(self.pid)
        self.peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, ValueError):
            self.peak = max(self.peak, rss_kib(self.pid, "VmHWM") if self._hwm else 0)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, ValueError):
                self.peak = max(self.peak, rss_kib(self.pid))


class FloodProcess:
    """This module run as a process; its JSON lines are collected as they come."""

    def __init__(self, target: str, *args: str) -> None:
        command = [sys.executable, "-m", "tests.integration.flooder", "--target", target, *args]
        self.started = time.time()
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, name="flooder-out", daemon=True),
            threading.Thread(target=self._read_errors, name="flooder-err", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.lines.append(json.loads(line))

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._errors.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._errors)

    @property
    def last(self) -> dict[str, Any]:
        counts = [line for line in self.lines if "sent" in line]
        return counts[-1] if counts else {}

    def wait(self, timeout: float) -> dict[str, Any]:
        """Its last line, once it has exited (killed after `timeout`); fails if it failed."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the flooder did not finish within {timeout:.0f} s") from None
        for reader in self._readers:
            reader.join(timeout=5)
        if self.process.returncode != 0 or not self.last.get("done"):
            raise AssertionError(
                f"the flooder exited with {self.process.returncode}: {self.stderr[-2000:]}"
            )
        return self.last

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def network_with_limits(spec: Any, out: Path, limits: dict[str, float]) -> Iterator[Any]:
    """tests/integration/live.py's `running`, with `limits` in every node's config."""
    from dataclasses import dataclass, field

    from orchestrator.datasets import DATA_DIR_ENV, ensure_dataset
    from orchestrator.runtimes.local import LocalNode, LocalRun
    from tests.integration.live import LiveNetwork

    @dataclass
    class LimitedRun(LocalRun):
        limits: dict[str, float] = field(default_factory=dict)

        def node_config(self, node: LocalNode) -> dict[str, Any]:
            return {**super().node_config(node), "limits": self.limits}

    data = Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data")
    ensure_dataset(spec.dataset, data)
    previous = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(data)  # the driver loads the dataset by name
    live = LiveNetwork(spec, out)
    live.run = LimitedRun(spec, out, tolerate_exits=True, limits=dict(limits))
    try:
        live.start()
        yield live
    finally:
        try:
            live.finish()
        finally:
            live.run.stop_all()
            if previous is None:
                os.environ.pop(DATA_DIR_ENV, None)
            else:
                os.environ[DATA_DIR_ENV] = previous


SMOKE_SPEC = REPO_ROOT / "experiments" / "smoke-dfl.yaml"
# One node. An evaluation on 800 samples costs about 160 ms of ML time (against 12 ms on the
# smoke test's 100), so the node evaluates about 5 models a second and ten times that, 50
# transactions of 1.7 MB a second, is a flood two cores can send and receive; on 100 samples
# the flood would be 500 a second, more than the flooder and the node's gRPC can move here.
# Injection and the local batch match (128 a second, batch 128: one training step a second) so
# that training leaves the ML thread mostly to evaluations.
ONE_NODE = {  # overrides of experiments/smoke-dfl.yaml
    "nodes.count": 1,
    "duration": "10m",
    "dfl.test_batch": 800,
    "dfl.batch_size": 128,
    "nodes.injection_rate": 128,
    "evaluation.interval": "30s",
    "evaluation.test_samples": 200,
}
# Only the bounded ML queue may stop a flood of valid records: no rate or budget bites first.
UNLIMITED_RATES = {
    "requests_per_second": 100_000.0,
    "request_burst": 100_000.0,
    "evaluations_per_minute": 1_000_000.0,
}


@dataclass(frozen=True)
class FloodMemory:
    """What `measure_flood_memory` found; RSS figures in KiB."""

    ml_ms_per_evaluation: float  # ML thread CPU per evaluation, its share of aggregation included
    training_share: float  # of the ML thread, over the warm-up
    capacity: float  # evaluations a second the ML thread has room for
    flood_rate: float  # offered, sends a second
    flood_seconds: float
    sent: int
    skipped: int  # not sent: the flooder's calls in flight were at their bound
    by_reason: dict[str, int]  # the node's answers to the flood
    evaluated_per_second: float  # by the node while flooded
    rss_before: int  # VmRSS just before the flood
    rss_before_peak: int  # the highest RSS of the warm-up (normal operation)
    rss_peak: int  # the highest RSS while flooded
    rejected: dict[str, float]  # the node's dfl_rejected_total, what the flood added

    @property
    def ratio(self) -> float:
        """Peak while flooded over the peak of normal operation."""
        return self.rss_peak / self.rss_before_peak

    @property
    def ratio_to_sample(self) -> float:
        return self.rss_peak / self.rss_before

    def lines(self) -> list[str]:
        mib = 1024
        answers = ", ".join(f"{n} {reason}" for reason, n in sorted(self.by_reason.items()))
        return [
            f"evaluation: {self.ml_ms_per_evaluation:.1f} ms of ML CPU each, training takes "
            f"{self.training_share:.0%} of the ML thread: capacity {self.capacity:.2f}/s",
            f"flood: {self.flood_rate:.1f} valid transactions/s offered "
            f"({self.flood_rate / self.capacity:.1f}x capacity) for {self.flood_seconds:.0f} s: "
            f"{self.sent} sent, {self.skipped} skipped; answers: {answers}",
            f"evaluated while flooded: {self.evaluated_per_second:.2f}/s",
            f"RSS before: {self.rss_before / mib:.0f} MiB (warm-up peak "
            f"{self.rss_before_peak / mib:.0f} MiB); peak while flooded: "
            f"{self.rss_peak / mib:.0f} MiB",
            f"ratio peak / warm-up peak: {self.ratio:.3f} (peak / RSS just before: "
            f"{self.ratio_to_sample:.3f})",
        ]


def _ml_counters(node: Any) -> dict[str, float]:
    from tests.integration.live import scrape, total

    samples = scrape(node)
    ml = {
        task: total(samples, "dfl_cpu_seconds_total", task=task, category="ml")
        for task in ("receive_transaction", "update_model", "generate_transaction")
    }
    return {
        "evaluations": total(samples, "dfl_receipts_total", direction="written"),
        "at": time.monotonic(),
        **ml,
    }


def measure_flood_memory(
    network: Any,
    *,
    multiple: float = 10.0,
    flood_seconds: float = 15.0,
    warmup_seconds: float = 8.0,
    warmup_rate: float = 2.0,
    connections: int = 4,
    identities: int = 8,
) -> FloodMemory:
    """Floods the network's first node with valid transactions at `multiple` times its
    evaluation capacity and watches its RSS.

    Once the node holds a full test batch of samples (so an evaluation costs what it will
    cost), a warm-up sends it valid transactions at `warmup_rate`, well below capacity: its
    normal work, and the measure of one evaluation's ML time (the node's profiler), from which
    the capacity follows. Then the flooder process sends `multiple` times that, pre-signed by
    `identities` keys over `connections` connections, while RssWatch follows the node.
    """
    from proto.dfl.v1 import node_pb2, node_pb2_grpc
    from tests.integration.live import channel, rejected, scrape, status, submit, wait_for

    node = network.nodes[0]
    pid = node.process.pid
    test_batch = network.run.spec.dfl.test_batch
    wait_for(
        lambda: status(node).samples_collected >= test_batch,
        120,
        f"{node.name} to hold {test_batch} samples",
        network,
    )
    signed = network.run.control.metadata("GetModel", bytes.fromhex(node.address))
    with channel(node) as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        weights = stub.GetModel(node_pb2.ModelRequest(), timeout=30, metadata=signed).weights
        genesis = stub.GetStatus(node_pb2.StatusRequest(), timeout=10).genesis_digest
    weights_file = network.out / "flood-weights.bin"
    weights_file.write_bytes(weights)

    count = max(1, int(warmup_seconds * warmup_rate))
    warmup = ValidRecords(genesis, weights, identities, count, ttl=network.run.spec.dfl.ttl)
    before = _ml_counters(node)
    with RssWatch(pid) as normal, channel(node, own_connection=True) as ch:
        for index in range(count):
            due = before["at"] + index / warmup_rate
            time.sleep(max(0.0, due - time.monotonic()))
            for _ in range(50):  # a training step may hold the queue for a moment
                error = submit(ch, "SubmitTransaction", warmup.payload(index))
                if error is None or not (error.details() or "").startswith("queue_full"):
                    break
                time.sleep(0.1)
            assert error is None, f"warm-up transaction refused: {error.details()}"
        wait_for(
            lambda: _ml_counters(node)["evaluations"] >= before["evaluations"] + count,
            120,
            f"{node.name} to evaluate the warm-up's transactions",
            network,
        )
        time.sleep(1.0)  # the next tick's counters hold the last aggregation too
        after = _ml_counters(node)
    evaluations = after["evaluations"] - before["evaluations"]
    evaluation_ml = sum(after[t] - before[t] for t in ("receive_transaction", "update_model"))
    per_evaluation = evaluation_ml / evaluations
    training_share = (after["generate_transaction"] - before["generate_transaction"]) / (
        after["at"] - before["at"]
    )
    capacity = max(0.05, 1.0 - training_share) / per_evaluation
    rate = multiple * capacity

    rss_before = rss_kib(pid)
    rejected_before = rejected(scrape(node))
    flooder = FloodProcess(
        node.target,
        "--kind=valid",
        f"--weights={weights_file}",
        f"--rate={rate:.3f}",
        f"--duration={flood_seconds}",
        f"--connections={connections}",
        f"--identities={identities}",
        f"--ttl={network.run.spec.dfl.ttl}",
    )
    try:
        with RssWatch(pid) as flooded:
            wait_for(lambda: flooder.lines, 60, "the flooder to start", network)
            start = _ml_counters(node)
            last = flooder.wait(timeout=flood_seconds + 60)
            end = _ml_counters(node)
    finally:
        flooder.stop()
    rejected_after = rejected(scrape(node))
    evaluated = (end["evaluations"] - start["evaluations"]) / (end["at"] - start["at"])
    return FloodMemory(
        ml_ms_per_evaluation=per_evaluation * 1000,
        training_share=training_share,
        capacity=capacity,
        flood_rate=rate,
        flood_seconds=flood_seconds,
        sent=last["sent"],
        skipped=last["skipped"],
        by_reason=last["by_reason"],
        evaluated_per_second=evaluated,
        rss_before=rss_before,
        rss_before_peak=max(normal.peak, rss_before),
        rss_peak=flooded.peak,
        rejected={
            label: rejected_after[label] - rejected_before[label]
            for label in rejected_after
            if rejected_after[label] != rejected_before[label]
        },
    )
