"""A node's /metrics, scraped over HTTP on 127.0.0.1 and parsed as Prometheus parses it."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.ledger.errors import RejectReason
from node.protocol.events import MessageKind
from node.service.metrics import MetricsServer, NodeMetrics
from node.service.profiler import CATEGORIES, TASKS, Profiler

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics() -> NodeMetrics:
    return NodeMetrics(Profiler())


@pytest.fixture
def server(metrics: NodeMetrics) -> Iterator[MetricsServer]:
    running = metrics.serve(0, host="127.0.0.1")
    yield running
    running.stop()


def scrape_text(server: MetricsServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        return reply.read().decode()


def scrape(server: MetricsServer) -> tuple[set[str], Samples]:
    """Family names and every sample, keyed by (sample name, labels)."""
    families = list(text_string_to_metric_families(scrape_text(server)))
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return {family.name for family in families}, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def test_every_family_is_exposed_from_the_start(server: MetricsServer) -> None:
    names, samples = scrape(server)
    # The parser names counter families without `_total`; samples keep it.
    assert {
        "dfl_cpu_seconds",
        "dfl_process_cpu_seconds",
        "dfl_accuracy",
        "dfl_chain_height",
        "dfl_blocks",
        "dfl_transactions_generated",
        "dfl_transactions_sent",
        "dfl_transactions_received",
        "dfl_transactions_forwarded",
        "dfl_transactions_relayed",
        "dfl_rejected",
        "dfl_receipts",
        "dfl_confirmations",
        "dfl_confirmations_per_block",
        "dfl_transactions_per_block",
        "dfl_reputation",
        "dfl_samples_injected",
        "dfl_aggregations",
        "dfl_gossip_latency_seconds",
        "dfl_peers",
        "dfl_info",  # an Info metric: a gauge of 1 in the text format
        "dfl_pow_hashes",
        "dfl_mining_seconds",
        "dfl_forks",
        "dfl_rounds",
    } <= names
    for reason in RejectReason:
        assert value(samples, "dfl_rejected_total", reason=reason.label) == 0
    for direction in ("written", "collected"):
        assert value(samples, "dfl_receipts_total", direction=direction) == 0
    for direction in ("sent", "received"):
        assert value(samples, "dfl_confirmations_total", direction=direction) == 0
    for task in TASKS:
        for category in CATEGORIES:
            assert value(samples, "dfl_cpu_seconds_total", task=task, category=category) >= 0
    assert value(samples, "dfl_accuracy", dataset="local") == 0
    assert value(samples, "dfl_gossip_latency_seconds_count") == 0


def test_cpu_seconds_are_the_profilers_totals(metrics: NodeMetrics, server: MetricsServer) -> None:
    with metrics.profiler.measure("generate_block", "blockchain"):
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
    _, samples = scrape(server)
    exported = value(samples, "dfl_cpu_seconds_total", task="generate_block", category="blockchain")
    assert exported == pytest.approx(metrics.profiler.totals()["generate_block", "blockchain"])
    assert exported >= 0.05
    assert value(samples, "dfl_cpu_seconds_total", task="mine", category="ml") == 0
    assert value(samples, "dfl_process_cpu_seconds_total") >= exported

    # The first scrape was served inside an (observe, network) scope; the second one sees it.
    _, samples = scrape(server)
    assert value(samples, "dfl_cpu_seconds_total", task="observe", category="network") > 0


def test_rejections_count_by_reason(metrics: NodeMetrics, server: MetricsServer) -> None:
    metrics.rejected(RejectReason.BAD_SIGNATURE)
    metrics.rejected(RejectReason.BAD_SIGNATURE)
    metrics.rejected(RejectReason.EXPIRED)
    _, samples = scrape(server)
    assert value(samples, "dfl_rejected_total", reason="bad_signature") == 2
    assert value(samples, "dfl_rejected_total", reason="expired") == 1
    assert value(samples, "dfl_rejected_total", reason="duplicate") == 0


def test_rejected_takes_a_reason_or_its_label_and_nothing_else(metrics: NodeMetrics) -> None:
    metrics.rejected("duplicate")
    metrics.rejected(RejectReason.DUPLICATE)
    assert metrics.registry.get_sample_value("dfl_rejected_total", {"reason": "duplicate"}) == 2
    with pytest.raises(ValueError):
        metrics.rejected("no_such_reason")


def test_traffic_and_send_failures(metrics: NodeMetrics, server: MetricsServer) -> None:
    _, samples = scrape(server)
    for kind in MessageKind:
        assert value(samples, "dfl_bytes_sent_total", kind=kind.value) == 0
    metrics.bytes_sent(MessageKind.TRANSACTION.value, 1700)
    metrics.bytes_sent(MessageKind.TRANSACTION.value, 300)
    metrics.send_failed("node-2:50051", "UNAVAILABLE")
    _, samples = scrape(server)
    assert value(samples, "dfl_bytes_sent_total", kind="transaction") == 2000
    assert value(samples, "dfl_bytes_sent_total", kind="draft_block") == 0
    assert value(samples, "dfl_send_failures_total", peer="node-2:50051", code="UNAVAILABLE") == 1


def test_set_reputations_replaces_the_whole_set(
    metrics: NodeMetrics, server: MetricsServer
) -> None:
    metrics.set_reputations({"a:1": 0.5, "b:1": 0.25})
    metrics.set_reputations({"b:1": 0.75, "c:1": 1.0})
    _, samples = scrape(server)
    reputations = {
        dict(labels)["peer"]: v for (name, labels), v in samples.items() if name == "dfl_reputation"
    }
    assert reputations == {"b:1": 0.75, "c:1": 1.0}


def test_engine_counters_are_synced_by_their_change(
    metrics: NodeMetrics, server: MetricsServer
) -> None:
    counters: Counter[str] = Counter(
        transactions_sent=6,
        transactions_received=2,
        receipts_written=2,
        confirmations_received=5,
        blocks_finalized=1,
        blocks_timed_out=1,
    )
    metrics.sync_engine_counters(counters)
    metrics.sync_engine_counters(counters)  # nothing changed: nothing added
    counters.update(transactions_sent=3, aggregations=1, receipts_collected=4)
    metrics.sync_engine_counters(counters)

    _, samples = scrape(server)
    assert value(samples, "dfl_transactions_sent_total") == 9
    assert value(samples, "dfl_transactions_received_total") == 2
    assert value(samples, "dfl_transactions_forwarded_total") == 0
    assert value(samples, "dfl_receipts_total", direction="written") == 2
    assert value(samples, "dfl_receipts_total", direction="collected") == 4
    assert value(samples, "dfl_confirmations_total", direction="received") == 5
    assert value(samples, "dfl_aggregations_total") == 1
    assert value(samples, "dfl_blocks_total") == 1
    # A key without a metric of its own is kept, not dropped.
    assert value(samples, "dfl_engine_events_total", event="blocks_timed_out") == 1


def test_a_restarted_engine_counts_from_zero_again(
    metrics: NodeMetrics, server: MetricsServer
) -> None:
    metrics.sync_engine_counters({"transactions_received": 10})
    metrics.sync_engine_counters({"transactions_received": 3})  # a fresh engine
    _, samples = scrape(server)
    assert value(samples, "dfl_transactions_received_total") == 13


def test_gauges_histograms_and_info(metrics: NodeMetrics, server: MetricsServer) -> None:
    metrics.set_info("0xabc", "d1f0")
    metrics.set_accuracy(0.91)
    metrics.set_accuracy(0.88, dataset="test")
    metrics.block_finalized(height=4, transactions=12, confirmations=35)
    metrics.set_reputation("node-2:50051", 0.7)
    metrics.set_reputation("node-3:50051", 0.4)
    metrics.set_peers(["node-2:50051", "node-4:50051"])
    metrics.transaction_received(create_time=100.0, now=100.02)
    metrics.transaction_received(create_time=100.0, now=99.0)  # skewed clock: counted as 0
    metrics.samples_injected(8)
    metrics.pow_hashes(480_000)
    metrics.mining_finished(1.5)
    metrics.fork_seen()
    metrics.round_completed()

    _, samples = scrape(server)
    assert value(samples, "dfl_info", address="0xabc", genesis="d1f0") == 1
    assert value(samples, "dfl_accuracy", dataset="local") == pytest.approx(0.91)
    assert value(samples, "dfl_accuracy", dataset="test") == pytest.approx(0.88)
    assert value(samples, "dfl_chain_height") == 4
    assert value(samples, "dfl_transactions_per_block") == 12
    assert value(samples, "dfl_confirmations_per_block") == 35
    assert value(samples, "dfl_peers") == 2
    assert value(samples, "dfl_reputation", peer="node-2:50051") == pytest.approx(0.7)
    assert ("dfl_reputation", frozenset({("peer", "node-3:50051")})) not in samples
    assert value(samples, "dfl_gossip_latency_seconds_count") == 2
    assert value(samples, "dfl_gossip_latency_seconds_sum") == pytest.approx(0.02)
    assert value(samples, "dfl_gossip_latency_seconds_bucket", le="0.025") == 2
    assert value(samples, "dfl_gossip_latency_seconds_bucket", le="0.01") == 1
    assert value(samples, "dfl_samples_injected_total") == 8
    assert value(samples, "dfl_pow_hashes_total") == 480_000
    assert value(samples, "dfl_mining_seconds_count") == 1
    assert value(samples, "dfl_forks_total") == 1
    assert value(samples, "dfl_rounds_total") == 1


def test_two_nodes_in_one_process_keep_separate_series() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    first.rejected(RejectReason.DUPLICATE)
    first_server, second_server = first.serve(0, "127.0.0.1"), second.serve(0, "127.0.0.1")
    try:
        _, first_samples = scrape(first_server)
        _, second_samples = scrape(second_server)
    finally:
        first_server.stop()
        second_server.stop()
    assert value(first_samples, "dfl_rejected_total", reason="duplicate") == 1
    assert value(second_samples, "dfl_rejected_total", reason="duplicate") == 0


def test_a_stopped_server_refuses_connections(metrics: NodeMetrics) -> None:
    running = metrics.serve(0, "127.0.0.1")
    assert "dfl_chain_height" in scrape_text(running)
    running.stop()
    with pytest.raises(urllib.error.URLError):
        scrape_text(running)
