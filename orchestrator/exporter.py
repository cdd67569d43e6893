"""The orchestrator's own Prometheus metrics: what it measures of the nodes from outside.

A node reports accuracy on its own recent samples; only the orchestrator holds the common test
set, so the fair accuracy (the one the dashboards plot per node) is exported from here, labelled
with the node it measured. So is what the orchestrator does to the nodes: which scheduled
faults (the spec's `faults:`) are in effect on which node, for the dashboards' fault panel and
their fault-window annotations. During `dfl load`, the load generator's requests too
(orchestrator/load/live.py: dfl_load_requests_total, dfl_load_request_duration_seconds,
dfl_load_users), for the dashboards' Load row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from orchestrator.load.live import LoadCollector


class OrchestratorMetrics:
    """Gauges and counters labelled by node, on a registry of their own."""

    def __init__(self) -> None:
        self._server: WSGIServer | None = None
        self.registry = CollectorRegistry()
        self.test_accuracy = Gauge(
            "dfl_test_accuracy",
            "The node's current model on the orchestrator's common test set (0-1).",
            ("node",),
            registry=self.registry,
        )
        self.samples_injected = Counter(
            "dfl_orchestrator_samples_injected",
            "Training samples the orchestrator delivered to the node.",
            ("node",),
            registry=self.registry,
        )
        self.evaluations = Counter(
            "dfl_orchestrator_evaluations",
            "Test-set evaluations of the node's model.",
            ("node",),
            registry=self.registry,
        )
        self.fault_active = Gauge(
            "dfl_fault_active",
            "1 while a scheduled fault of this kind (crash, pause, latency, loss, partition) is "
            "in effect on the node, 0 once it is lifted.",
            ("kind", "node"),
            registry=self.registry,
        )
        self._active_faults: dict[tuple[str, str], int] = {}
        self._load = LoadCollector()
        self.registry.register(self._load)

    def watch_load(self, live_file: Path) -> None:
        """Exports a load test's requests from the file its Locust process keeps writing
        (orchestrator/load/live.py); until then the dfl_load_* families have no samples."""
        self._load.path = live_file

    def fault_changed(self, kind: str, nodes: Iterable[str], active: bool) -> None:
        """A fault of `kind` began (`active`) or was lifted on the nodes (by name).

        Counted per kind and node, so that the gauge stays 1 until the last of two overlapping
        faults of one kind on a node is lifted; a lift without a begin leaves it at 0.
        """
        for node in nodes:
            key = (kind, node)
            count = max(self._active_faults.get(key, 0) + (1 if active else -1), 0)
            self._active_faults[key] = count
            self.fault_active.labels(kind, node).set(1 if count else 0)

    def injected_into(self, node: str) -> Callable[[int], None]:
        """A callback for the injector: counts samples the node accepted."""
        counter = self.samples_injected.labels(node)
        return counter.inc

    def sampled(self, node: str, values: dict[str, float]) -> None:
        accuracy = values.get("accuracy_test")
        if accuracy is not None:
            self.test_accuracy.labels(node).set(accuracy)
            self.evaluations.labels(node).inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """/metrics on host:port from a daemon thread, until `close`."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
