"""What a node's own /metrics say about a load test: what it refused and why, what it evaluated.

Locust sees answers; the node's counters say what became of them. A scrape before the load and
one after give, per node: every refusal by reason (dfl_rejected_total, which the node counts as
it answers, so the difference is exact), the new models it received and the receipts it wrote
for them, evaluations that failed, its ML queue, bans, gossip latency and samples injected,
and the CPU its profiler puts on receiving transactions, by category (what one more
transaction costs it: the step mode's bound).

The engine's counters reach /metrics at the node's ticks, together with its ML queue gauge, so
a scrape whose queue is empty shows every model received by then answered with a receipt (or
a failed evaluation): the end scrape waits for one (`settled`).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

REJECTED_PREFIX = "rejected:"  # rejected:<reason label>
RECEIVE_CPU_PREFIX = "receive_cpu:"  # receive_cpu:<category>, the receive_transaction task's
RECEIVE_TASK = "receive_transaction"
# Sample name (and label, value) -> key in the flat figures.
SAMPLES: Mapping[str, str] = {
    "dfl_transactions_received_total": "transactions_received",
    "dfl_ml_pending": "ml_pending",
    "dfl_peers_banned": "peers_banned",
    "dfl_samples_injected_total": "samples_injected",
    "dfl_gossip_latency_seconds_sum": "gossip_latency_sum",
    "dfl_gossip_latency_seconds_count": "gossip_latency_count",
    "dfl_process_cpu_seconds_total": "process_cpu_seconds",
}
LABELLED: Mapping[tuple[str, str, str], str] = {
    ("dfl_receipts_total", "direction", "written"): "receipts_written",
    ("dfl_engine_events_total", "event", "evaluations_failed"): "evaluations_failed",
}


def parse_figures(text: str) -> dict[str, float]:
    """The figures of one /metrics exposition (absent ones are 0, except ml_pending)."""
    figures = dict.fromkeys([*SAMPLES.values(), *LABELLED.values()], 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dfl_rejected_total":
                figures[REJECTED_PREFIX + sample.labels["reason"]] = sample.value
            elif sample.name == "dfl_cpu_seconds_total":
                if sample.labels.get("task") == RECEIVE_TASK:
                    figures[RECEIVE_CPU_PREFIX + sample.labels["category"]] = sample.value
            elif sample.name in SAMPLES:
                figures[SAMPLES[sample.name]] = sample.value
            else:
                for (name, label, value), key in LABELLED.items():
                    if sample.name == name and sample.labels.get(label) == value:
                        figures[key] = sample.value
    return figures


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """One node's figures now; OSError when it does not answer."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_figures(response.read().decode())


def settled(figures: Mapping[str, float]) -> bool:
    """Is every model the node received by its last tick evaluated (its ML queue empty)?"""
    return figures.get("ml_pending", 0.0) == 0.0


def rejected(figures: Mapping[str, float]) -> dict[str, float]:
    """{reason label: count} of one scrape."""
    return {
        key.removeprefix(REJECTED_PREFIX): value
        for key, value in figures.items()
        if key.startswith(REJECTED_PREFIX)
    }


def receive_cpu(figures: Mapping[str, float]) -> dict[str, float]:
    """{category: CPU seconds} the node spent receiving transactions."""
    return {
        key.removeprefix(RECEIVE_CPU_PREFIX): value
        for key, value in figures.items()
        if key.startswith(RECEIVE_CPU_PREFIX)
    }


def difference(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """What each counter gained between two scrapes; a gauge (ml_pending) is taken as after."""
    return {
        key: value if key == "ml_pending" else value - before.get(key, 0.0)
        for key, value in after.items()
    }
