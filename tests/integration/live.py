"""A LocalRun driven on a background thread, and the ways tests talk to its nodes from outside.

Shared by the integration tests of both protocols: each starts a small network once per module,
looks at it through gRPC and /metrics while it runs, then finishes it and reads the run directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.ledger.errors import RejectReason
from node.service.peers import CHANNEL_OPTIONS, SERVICE
from orchestrator.datasets import DATA_DIR_ENV, ensure_dataset
from orchestrator.driver import Progress, drive
from orchestrator.runtimes.local import LocalNode, LocalRun, write_run_json
from orchestrator.spec import ExperimentSpec, load_spec, with_overrides
from proto.dfl.v1 import node_pb2, node_pb2_grpc

READY_TIMEOUT = 120.0
REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_SPEC = REPO_ROOT / "experiments" / "smoke-dfl.yaml"
# Three smoke-dfl nodes that the module's tests keep running: blocks every few seconds, fast
# evaluations, and a duration that is only an upper bound (the module ends the run).
LIVE_OVERRIDES: dict[str, Any] = {
    "nodes.count": 3,
    "duration": "10m",
    "dfl.transactions_per_block": 4,
    "dfl.fedavg_buffer": 4,
    "evaluation.interval": "4s",
    "evaluation.test_samples": 500,
}


def live_spec(extra: dict[str, Any] | None = None) -> ExperimentSpec:
    """smoke-dfl with LIVE_OVERRIDES, plus `extra` (field path: value)."""
    return with_overrides(load_spec(SMOKE_SPEC), {**LIVE_OVERRIDES, **(extra or {})})


class LiveNetwork:
    """A LocalRun whose driver (injection and sampling) runs on a thread until `finish`."""

    def __init__(self, spec: ExperimentSpec, out: Path) -> None:
        self.out = out
        self.run = LocalRun(spec, out, tolerate_exits=True)  # one test kills a node on purpose
        self.error: BaseException | None = None
        self.crash: tuple[float, float] | None = None  # (killed, back) in Unix seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run_driver, name="local-run", daemon=True)
        self._began = 0.0
        self.finished = False

    @property
    def nodes(self) -> list[LocalNode]:
        return self.run.nodes

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "spec.yaml").write_text(self.run.spec.to_yaml())
        self.run.prepare()
        for node in self.nodes:
            self.run.start(node)
        self._began = time.monotonic()
        self._thread.start()
        wait_for(
            lambda: all(node.address for node in self.nodes),
            READY_TIMEOUT,
            "every node answering GetStatus",
            self,
        )

    def _run_driver(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            await drive(
                self.run,
                Progress(None, enabled=False),
                self._stop,
                metrics_csv=self.out / "metrics.csv",
                duration=self.run.spec.duration_seconds,
            )

        try:
            asyncio.run(main())
        except BaseException as error:  # reported by wait_for and finish
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"the run's driver failed: {self.error!r}") from self.error

    @property
    def driving(self) -> bool:
        """The driver still injects and samples (False once the spec's duration is over)."""
        return self._thread.is_alive()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def finish(self) -> None:
        """Stops injection and sampling, then every node (SIGTERM), and writes run.json."""
        if self.finished:
            return
        self.finished = True
        try:
            if self._loop is not None and self._stop is not None and self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._stop.set)
            if self._thread.is_alive():
                self._thread.join(timeout=60)
        finally:
            self.run.stop_all()
        if self.run.started_at and self.run.elapsed is None:  # stopped before the driver ended
            self.run.elapsed = round(time.time() - self.run.started_at, 1)
        write_run_json(self.run)


@contextlib.contextmanager
def running(spec: ExperimentSpec, out: Path) -> Iterator[LiveNetwork]:
    """The network of `spec` started in `out`, with its dataset ready; stopped on the way out."""
    data = Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data")
    ensure_dataset(spec.dataset, data)
    live = LiveNetwork(spec, out)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_DIR_ENV, str(data))  # the driver loads the dataset by name
        try:
            live.start()
            yield live
        finally:
            try:
                live.finish()
            finally:
                live.run.stop_all()  # again: whatever finish did not get to is stopped now


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, network: LiveNetwork | None = None
) -> Any:
    """Polls `condition` until it returns something true; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if network is not None:
            network.check()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


# --- talking to a node ---------------------------------------------------------------------------


def channel(node: LocalNode, *, own_connection: bool = False) -> grpc.Channel:
    """`own_connection`: not shared with other channels to the node (gRPC shares by default),
    so the node scores and rate-limits it as a peer of its own."""
    options = (
        [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        if own_connection
        else CHANNEL_OPTIONS
    )
    return grpc.insecure_channel(node.target, options=options)


def status(node: LocalNode, timeout: float = 5.0) -> node_pb2.NodeStatus:
    with channel(node) as ch:
        return node_pb2_grpc.NodeStub(ch).GetStatus(node_pb2.StatusRequest(), timeout=timeout)


def status_or_none(node: LocalNode) -> node_pb2.NodeStatus | None:
    try:
        return status(node, timeout=2.0)
    except grpc.RpcError:
        return None


def height(node: LocalNode) -> int:
    return status(node).chain_height


def alive(node: LocalNode) -> bool:
    return node.process is not None and node.process.poll() is None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(node: LocalNode) -> Samples:
    """Every sample of the node's /metrics, parsed by prometheus_client's own parser."""
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(
        value for (sample, have), value in samples.items() if sample == name and wanted <= have
    )


def rejected(samples: Samples) -> dict[str, float]:
    return {
        reason.label: total(samples, "dfl_rejected_total", reason=reason.label)
        for reason in RejectReason
    }


def submit(
    ch: grpc.Channel, method: str, payload: bytes, timeout: float = 30.0
) -> grpc.RpcError | None:
    """Sends raw bytes to one of the record-carrying RPCs; the error, or None when accepted."""
    call = ch.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        call(payload, timeout=timeout)
    except grpc.RpcError as error:
        return error
    return None
