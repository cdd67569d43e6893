"""A node's Prometheus metrics: names `dfl_*`, base units (seconds), `_total` on counters.

Every node owns a `CollectorRegistry` of its own rather than the library's global one, so that
several nodes can live in one test process (or one simulator) without their series colliding.

Where the numbers come from, so that nothing is counted twice:

- CPU seconds per (task, category) are read from the `Profiler` at scrape time by a custom
  collector; the profiler is the only bookkeeping.
- Everything the protocol engine already counts (`state.counters`) reaches Prometheus through
  `sync_engine_counters`, which adds the change since the previous sync. The node calls it after
  each batch of events; no other code increments those counters.
- The typed methods cover what the engine cannot know: rejections (validation raises before the
  engine's state changes), gossip latency, accuracy, reputation, peers, mining, chain height.

Series that carry a closed label set (every reject reason, both directions of receipts and
confirmations, every task and category) exist from the start at zero, so a dashboard's
`rate(...)` has data before the first event and an absent series always means a broken node.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.ledger.errors import RejectReason
from node.protocol.events import MessageKind
from node.service.profiler import (
    CATEGORIES,
    TASKS,
    Profiler,
    process_cpu_seconds,
)
from node.service.resources import cgroup_cpu_seconds, cgroup_memory_bytes, process_memory

# Gossip on one host or a LAN takes milliseconds; emulated WAN latency and big models seconds.
# Between 50 ms and 500 ms, where a loaded host's gossip and an injected delay of a few hundred
# ms put the median, the buckets are 25-100 ms wide: histogram_quantile interpolates linearly
# within a bucket, and with the old 0.1-0.25-0.5 steps a p50 was off by up to ~40 ms, too coarse
# to tell whether 200 ms of latency on one node moved another node's median.
GOSSIP_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3,
    0.4, 0.5, 0.75, 1, 2.5, 5, 10,
)  # fmt: skip
# A BLADE-FL round's mining is bounded by the round time: seconds to minutes.
MINING_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


SCORED_PEERS_SHOWN = (
    20  # bounded label cardinality: a flood of connections is not a flood of series
)


class ProfilerCollector(Collector):
    """Exports the profiler's totals when scraped, plus the process's own CPU.

    `sum(dfl_cpu_seconds_total) / dfl_process_cpu_seconds_total` is the profiler's coverage.
    """

    def __init__(self, profiler: Profiler) -> None:
        self._profiler = profiler

    def describe(self) -> Iterable[Metric]:
        # Names only: lets the registry refuse a duplicate without running a collection.
        yield CounterMetricFamily("dfl_cpu_seconds", "", labels=("task", "category"))
        yield CounterMetricFamily("dfl_process_cpu_seconds", "")

    def collect(self) -> Iterable[Metric]:
        totals = self._profiler.attributed_totals()
        cpu = CounterMetricFamily(
            "dfl_cpu_seconds",
            "Thread CPU time attributed by the node's profiler, by task and category.",
            labels=("task", "category"),
        )
        for task in TASKS:
            for category in CATEGORIES:
                cpu.add_metric((task, category), totals.get((task, category), 0.0))
        yield cpu
        yield CounterMetricFamily(
            "dfl_process_cpu_seconds",
            "User plus system CPU time of the node's whole process (every thread).",
            value=process_cpu_seconds(),
        )


class ResourceCollector(Collector):
    """The node's memory, and its container's memory and CPU, read when scraped.

    The process's own figures (USS, PSS from /proc/self/smaps_rollup) exist wherever the kernel
    has them. The cgroup's exist only when the cgroup is the node's alone, as a container's is:
    a local process shares its cgroup with the machine's other processes, and exporting that
    cgroup's figures labelled with the node's name showed the machine's memory as the node's.
    A figure the node cannot vouch for is a family without a sample (declared, so the metric
    stays documented, but no series), never a zero. The process's CPU is
    `dfl_process_cpu_seconds_total` (ProfilerCollector); prometheus_client's own process
    collector, which would duplicate it, is not on the node's registry.
    """

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("dfl_process_memory_uss_bytes", "")
        yield GaugeMetricFamily("dfl_process_memory_pss_bytes", "")
        yield CounterMetricFamily("dfl_cgroup_cpu_seconds", "")
        yield GaugeMetricFamily("dfl_cgroup_memory_bytes", "")

    def collect(self) -> Iterable[Metric]:
        memory = process_memory()
        yield _maybe(
            GaugeMetricFamily(
                "dfl_process_memory_uss_bytes",
                "Memory only the node's process maps (unique set size): what stopping it frees.",
            ),
            memory and memory.uss_bytes,
        )
        yield _maybe(
            GaugeMetricFamily(
                "dfl_process_memory_pss_bytes",
                "The node's process's memory with shared pages divided among their users "
                "(proportional set size): summed over a machine's nodes, what they take together.",
            ),
            memory and memory.pss_bytes,
        )
        yield _maybe(
            CounterMetricFamily(
                "dfl_cgroup_cpu_seconds",
                "CPU time of the node's cgroup (its container's); no sample where the node "
                "shares its cgroup with other processes.",
            ),
            cgroup_cpu_seconds(),
        )
        yield _maybe(
            GaugeMetricFamily(
                "dfl_cgroup_memory_bytes",
                "Memory of the node's cgroup (its container's) less inactive page cache; no "
                "sample where the node shares its cgroup with other processes.",
            ),
            cgroup_memory_bytes(),
        )


def _maybe(family: GaugeMetricFamily | CounterMetricFamily, value: float | None) -> Metric:
    """The family with its one sample, or declared without one when the figure is unknown."""
    if value is not None:
        family.add_metric((), value)
    return family


_REJECT_LABELS = frozenset(reason.label for reason in RejectReason)

# Engine counter key -> (NodeMetrics attribute, label values). Keys not listed here are exported
# under dfl_engine_events_total{event=key}, so a counter added to an engine is never lost.
ENGINE_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "transactions_generated": ("transactions_generated_total", ()),
    "transactions_sent": ("transactions_sent_total", ()),
    "transactions_received": ("transactions_received_total", ()),
    "transactions_forwarded": ("transactions_forwarded_total", ()),
    "transactions_relayed": ("transactions_relayed_total", ()),
    "receipts_written": ("receipts_total", ("written",)),
    "receipts_collected": ("receipts_total", ("collected",)),
    "confirmations_sent": ("confirmations_total", ("sent",)),
    "confirmations_received": ("confirmations_total", ("received",)),
    "aggregations": ("aggregations_total", ()),
    "blocks_finalized": ("blocks_total", ()),
    # BLADE-FL
    "models_sent": ("transactions_sent_total", ()),
    "models_received": ("transactions_received_total", ()),
    "blocks_appended": ("blocks_total", ()),
    "forks": ("forks_total", ()),
}


class NodeMetrics:
    """One node's metrics on its own registry, with the typed calls the node makes."""

    def __init__(self, profiler: Profiler | None = None) -> None:
        self.profiler = profiler if profiler is not None else Profiler()
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(ProfilerCollector(self.profiler))
        r.register(ResourceCollector())

        self.info = Info("dfl", "The node's address and the genesis it follows.", registry=r)
        self.accuracy = Gauge(
            "dfl_accuracy",
            "Model accuracy (0-1); dataset=local is the node's own recent samples.",
            ("dataset",),
            registry=r,
        )
        self.chain_height = Gauge("dfl_chain_height", "Height of the last block.", registry=r)
        self.peers = Gauge("dfl_peers", "Neighbours the node currently sends to.", registry=r)
        self.reputation = Gauge(
            "dfl_reputation", "The node's current reputation of each peer.", ("peer",), registry=r
        )
        self.transactions_per_block = Gauge(
            "dfl_transactions_per_block", "Transactions in the last finalized block.", registry=r
        )
        self.peer_score = Gauge(
            "dfl_peer_score",
            f"Misbehaviour score of the {SCORED_PEERS_SHOWN} worst-scored peers (connection, or "
            "generator:ADDRESS); at the ban score a peer is refused for a while.",
            ("peer",),
            registry=r,
        )
        self.network_fault = Gauge(
            "dfl_network_fault",
            "The network fault injected on this node now: delay and jitter (s), loss "
            "(probability), cut (peers cut off).",
            ("kind",),
            registry=r,
        )
        self.network_fault_messages_total = Counter(
            "dfl_network_fault_messages",
            "Peer messages an injected network fault dropped or delayed, by direction.",
            ("direction", "fate"),
            registry=r,
        )
        self.ml_pending = Gauge(
            "dfl_ml_pending", "ML jobs queued or running on the node's ML thread.", registry=r
        )
        self.peers_banned = Gauge(
            "dfl_peers_banned",
            "Connections and generators refused for misbehaviour now.",
            registry=r,
        )
        self.confirmations_per_block = Gauge(
            "dfl_confirmations_per_block", "Confirmations in the last finalized block.", registry=r
        )

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        self.blocks_total = counter("dfl_blocks", "Blocks this node finalized.")
        self.transactions_generated_total = counter(
            "dfl_transactions_generated", "Transactions this node created."
        )
        self.transactions_sent_total = counter(
            "dfl_transactions_sent", "Own transactions sent, one per neighbour."
        )
        self.transactions_received_total = counter(
            "dfl_transactions_received", "New transactions received from neighbours."
        )
        self.transactions_forwarded_total = counter(
            "dfl_transactions_forwarded", "Others' transactions sent on, one per neighbour."
        )
        self.transactions_relayed_total = counter(
            "dfl_transactions_relayed", "Known transactions sent back with new receipts."
        )
        self.rejected_total = counter(
            "dfl_rejected", "Records refused by validation, by reason.", ("reason",)
        )
        self.receipts_total = counter(
            "dfl_receipts",
            "Receipts written by this node or collected for its own.",
            ("direction",),
        )
        self.confirmations_total = counter(
            "dfl_confirmations", "Block confirmations sent or received.", ("direction",)
        )
        self.samples_injected_total = counter("dfl_samples_injected", "Training samples received.")
        self.aggregations_total = counter(
            "dfl_aggregations", "Model aggregations (FedAvg and others)."
        )
        self.bytes_sent_total = counter(
            "dfl_bytes_sent", "Payload bytes delivered to peers, by message kind.", ("kind",)
        )
        self.send_failures_total = counter(
            "dfl_send_failures",
            "Sends given up on, by peer and gRPC status name.",
            ("peer", "code"),
        )
        self.engine_events_total = counter(
            "dfl_engine_events", "Engine counters without a metric of their own.", ("event",)
        )
        self.gossip_latency_seconds = Histogram(
            "dfl_gossip_latency_seconds",
            "From another node's transaction's create_time to its first arrival here.",
            buckets=GOSSIP_LATENCY_BUCKETS,
            registry=r,
        )
        # BLADE-FL
        self.pow_hashes_total = counter("dfl_pow_hashes", "Proof-of-work hashes computed.")
        self.mining_seconds = Histogram(
            "dfl_mining_seconds",
            "Time from the start of mining to a block found or the round's end.",
            buckets=MINING_BUCKETS,
            registry=r,
        )
        self.forks_total = counter("dfl_forks", "Competing blocks seen at a height already filled.")
        self.rounds_total = counter("dfl_rounds", "BLADE-FL rounds completed.")

        for reason in RejectReason:
            self.rejected_total.labels(reason.label)
        for direction in ("written", "collected"):
            self.receipts_total.labels(direction)
        for direction in ("sent", "received"):
            self.confirmations_total.labels(direction)
        for kind in MessageKind:
            self.bytes_sent_total.labels(kind.value)
        self.accuracy.labels("local")
        self.set_network_fault(0.0, 0.0, 0.0, 0)
        for direction in ("in", "out"):
            for fate in ("dropped", "delayed"):
                self.network_fault_messages_total.labels(direction, fate)

        self._reputation_peers: set[str] = set()
        self._scored_peers: set[str] = set()
        self._synced: dict[str, int] = {}
        self._lock = threading.Lock()

    # --- typed calls --------------------------------------------------------------------------

    def set_info(self, address: str, genesis: str) -> None:
        """Identify the node; `genesis` is the genesis digest in hex."""
        self.info.info({"address": address, "genesis": genesis})

    def set_accuracy(self, value: float, dataset: str = "local") -> None:
        self.accuracy.labels(dataset).set(value)

    def set_chain_height(self, height: int) -> None:
        self.chain_height.set(height)

    def block_finalized(self, height: int, transactions: int, confirmations: int) -> None:
        """The gauges of a finalized block; dfl_blocks_total comes from the engine's counters."""
        self.chain_height.set(height)
        self.transactions_per_block.set(transactions)
        self.confirmations_per_block.set(confirmations)

    def rejected(self, reason: RejectReason | str) -> None:
        """Count one refused record; a string must be a RejectReason's label."""
        label = reason.label if isinstance(reason, RejectReason) else reason
        if label not in _REJECT_LABELS:
            raise ValueError(f"not a reject reason: {label!r}")
        self.rejected_total.labels(label).inc()

    def bytes_sent(self, kind: str, count: int) -> None:
        """Payload bytes delivered to a peer, by message kind (MessageKind.value)."""
        self.bytes_sent_total.labels(kind).inc(count)

    def send_failed(self, peer: str, code: str) -> None:
        """A send given up on; `code` is the gRPC status name (UNAVAILABLE, DEADLINE_EXCEEDED)."""
        self.send_failures_total.labels(peer, code).inc()

    def transaction_received(self, create_time: float, now: float) -> None:
        """Gossip latency of one new transaction; both Unix seconds (clock skew clamps at 0)."""
        self.gossip_latency_seconds.observe(max(0.0, now - create_time))

    def set_peers(self, peers: Iterable[str]) -> None:
        """The current neighbours; reputation series of peers no longer present are dropped."""
        current = set(peers)
        self.peers.set(len(current))
        with self._lock:
            for gone in self._reputation_peers - current:
                self.reputation.remove(gone)
            self._reputation_peers &= current

    def set_reputation(self, peer: str, value: float) -> None:
        with self._lock:
            self._reputation_peers.add(peer)
            self.reputation.labels(peer).set(value)

    def set_reputations(self, reputations: Mapping[str, float]) -> None:
        """Every peer's reputation at once; peers missing from `reputations` are dropped."""
        with self._lock:
            for gone in self._reputation_peers - set(reputations):
                self.reputation.remove(gone)
            self._reputation_peers = set(reputations)
            for peer, value in reputations.items():
                self.reputation.labels(peer).set(value)

    def set_network_fault(self, delay: float, jitter: float, loss: float, cut: int) -> None:
        for kind, value in (("delay", delay), ("jitter", jitter), ("loss", loss), ("cut", cut)):
            self.network_fault.labels(kind).set(value)

    def network_fault_message(self, direction: str, fate: str) -> None:
        self.network_fault_messages_total.labels(direction, fate).inc()

    def set_peer_scores(self, scores: Mapping[str, float], banned: int) -> None:
        """The worst-scored peers' scores (others' series are dropped) and the count of bans."""
        worst = sorted(
            ((score, peer) for peer, score in scores.items() if score > 0), reverse=True
        )[:SCORED_PEERS_SHOWN]
        shown = {peer for _, peer in worst}
        with self._lock:
            for gone in self._scored_peers - shown:
                self.peer_score.remove(gone)
            self._scored_peers = shown
            for score, peer in worst:
                self.peer_score.labels(peer).set(score)
        self.peers_banned.set(banned)

    def samples_injected(self, count: int) -> None:
        self.samples_injected_total.inc(count)

    def pow_hashes(self, count: int) -> None:
        self.pow_hashes_total.inc(count)

    def mining_finished(self, seconds: float) -> None:
        self.mining_seconds.observe(seconds)

    def fork_seen(self) -> None:
        self.forks_total.inc()

    def round_completed(self) -> None:
        self.rounds_total.inc()

    def sync_engine_counters(self, counters: Mapping[str, int]) -> None:
        """Add to the Prometheus counters what each engine counter gained since the last sync.

        A counter that went down means a new engine (a restart): its whole value is new, as in
        Prometheus's own reset handling.
        """
        with self._lock:
            for key, value in counters.items():
                last = self._synced.get(key, 0)
                delta = value - last if value >= last else value
                self._synced[key] = value
                if delta <= 0:
                    continue
                attribute, labels = ENGINE_COUNTERS.get(key, ("engine_events_total", (key,)))
                metric: Counter = getattr(self, attribute)
                (metric.labels(*labels) if labels else metric).inc(delta)

    # --- exposition -----------------------------------------------------------------------------

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Serve /metrics for this registry on a daemon thread; port 0 picks a free port.

        Scrapes are charged to the profiler as (other, network), so that serving them does not
        show up as a gap in its coverage.
        """
        app = make_wsgi_app(self.registry)
        profiler = self.profiler

        def profiled_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            with profiler.measure("observe", "network"):
                return list(app(environ, start_response))

        server_class = _ThreadingServerV6 if ":" in host else _ThreadingServer
        httpd = make_server(host, port, profiled_app, server_class, handler_class=_QuietHandler)
        thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        return MetricsServer(httpd, thread)


@dataclass
class MetricsServer:
    """A running /metrics endpoint: `port` is the bound port (useful after port 0)."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.httpd.server_port

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServerV6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        pass
