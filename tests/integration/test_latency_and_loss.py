"""Injected latency and loss on real node processes, measured the way a dashboard measures them.

Latency. 200 ms on one node must show in that node's gossip-latency median and not in the
others'. The median is read from `dfl_gossip_latency_seconds` as Prometheus's histogram_quantile
reads it: the difference of the cumulative buckets between two scrapes is a window's
distribution, and the quantile is interpolated linearly within the bucket it falls in.

The histogram counts the first arrival of another node's transaction (one gossip hop, not a
receipt's round trip). The fault delays what the node receives and what it sends, so its
neighbours get its transactions late too: that is the network working as asked, not a
leak, and it is kept to a minority of what any other node measures. The delayed node is a leaf
hanging off node 0 of a five-node full mesh: nodes 1-4 never talk to it, and node 0 hears it as
one neighbour of five. With ttl 1 nothing is forwarded beyond the first hop, so the late copies
go no further than node 0.

A run's latencies drift (models warm up, another process shares the two cores), which over a
minute moves a median by tens of milliseconds. So the delay is switched on and off in several
short stretches and each node's healthy and delayed stretches are pooled: drift falls on both
alike, and what differs is the fault. After each switch a moment passes before counting starts,
so that messages held back across it do not count on the wrong side.

Loss. 20 % loss on another node: the lost messages show in its dropped counter, the senders
retry them (so far fewer sends are given up on, in `dfl_send_failures_total`, than were lost),
and the network goes on learning and stays up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from orchestrator.spec import load_spec, with_overrides
from tests.integration.live import (
    LiveNetwork,
    Samples,
    alive,
    running,
    scrape,
    status,
    total,
    wait_for,
)
from tests.support import assert_audit_passes

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

MESH = range(5)
SLOW = 5  # the delayed node: its only neighbour is node 0
LOSSY = 2  # a mesh node with four neighbours
EDGES = [[i, j] for i in MESH for j in MESH if i < j] + [[0, SLOW]]

DELAY = 0.2  # seconds
WARM_UP = 15.0  # the first transactions, receipts and aggregations
STRETCH = 10.0  # each healthy and each delayed stretch
CYCLES = 3  # healthy, delayed; three times; then healthy once more
SETTLE = 1.5  # after a switch: messages held back across it arrive, receipts come home
EARLY = 0.5  # a stretch's window ends this long before the next switch (a scrape may be late)
LOSS_AT = WARM_UP + (2 * CYCLES + 1) * STRETCH + 3.0
LOSS_FOR = 20.0
LOSS = 0.2
TAIL = 8.0  # after the loss: still learning?
DURATION = LOSS_AT + LOSS_FOR + SETTLE + TAIL + 1.0

DELAYED_AT = [WARM_UP + (2 * i + 1) * STRETCH for i in range(CYCLES)]
HEALTHY_AT = [WARM_UP + 2 * i * STRETCH for i in range(CYCLES + 1)]

RISE_AT_LEAST = 0.150  # the delayed node's median, delayed minus healthy
OTHERS_WITHIN = 0.050  # every other node's, either way
ENOUGH = {"slow": 15, "other": 50}  # observations a median needs to mean anything

OVERRIDES = {
    "nodes.count": len(MESH) + 1,
    "topology.kind": "edges",
    "topology.edges": EDGES,
    "duration": DURATION,
    # What is measured is the network. Every node trains at the same moments (the injectors
    # keep time together), and a node busy training answers late; LeNet's training spread the
    # latencies over 0-300 ms and moved a 10 s stretch's median by 30 ms; the MLP trains in a
    # fraction of the time and sends half the bytes.
    "model": "mlp",
    "evaluation.interval": "10m",  # once, at the end: the driver's test-set runs cost CPU too
    "evaluation.test_samples": 200,
    "faults": [
        *(
            {"at": at, "kind": "latency", "nodes": [SLOW], "delay": f"{DELAY * 1000:.0f}ms",
             "jitter": "0ms", "duration": STRETCH}
            for at in DELAYED_AT
        ),
        {"at": LOSS_AT, "kind": "loss", "nodes": [LOSSY], "probability": LOSS,
         "duration": LOSS_FOR},
    ],
}  # fmt: skip

Buckets = dict[float, float]  # upper bound (le) -> cumulative count, +Inf included


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """The q-quantile of cumulative bucket counts, estimated as Prometheus's histogram_quantile
    does: linear interpolation within the bucket the rank falls in (the first from 0), and the
    highest finite bound when it falls in +Inf. NaN without observations.

    Written out here rather than taken from a library so that the test reads the histogram
    exactly as a Grafana panel over the same series would.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q {q} is not in (0, 1)")
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][0] != math.inf:
        raise ValueError("the buckets lack +Inf")
    rank = q * ordered[-1][1]
    if rank <= 0:
        return math.nan
    lower, below = 0.0, 0.0
    for upper, cumulative in ordered:
        if cumulative >= rank:
            if upper == math.inf:
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    raise AssertionError("unreachable: the +Inf bucket holds every observation")


def latency_buckets(samples: Samples) -> Buckets:
    return {
        float(dict(labels)["le"]): value
        for (name, labels), value in samples.items()
        if name == "dfl_gossip_latency_seconds_bucket"
    }


def pooled(windows: list[tuple[Samples, Samples]]) -> Buckets:
    """One distribution of every window's observations: the sum of the bucket differences."""
    result: Buckets = {}
    for begin, end in windows:
        before, after = latency_buckets(begin), latency_buckets(end)
        for le, count in after.items():
            result[le] = result.get(le, 0.0) + count - before.get(le, 0.0)
    return result


def difference(begin: Samples, end: Samples, name: str, **labels: str) -> float:
    return total(end, name, **labels) - total(begin, name, **labels)


def fault_setting(samples: Samples, kind: str) -> float:
    return total(samples, "dfl_network_fault", kind=kind)


def scrape_at(network: LiveNetwork, moments: list[float]) -> dict[float, dict[str, Samples]]:
    """Every node's /metrics at each moment (seconds after the run's start), in order."""
    wait_for(lambda: network.run.started_at, 60, "the run to start", network)
    began = network.run.started_at
    scrapes: dict[float, dict[str, Samples]] = {}
    for moment in sorted(set(moments)):
        pause = began + moment - time.time()
        if pause > 0:
            time.sleep(pause)
        network.check()
        scrapes[moment] = {node.name: scrape(node) for node in network.nodes}
    return scrapes


def test_the_quantile_estimate_interpolates_within_a_bucket_as_prometheus_does() -> None:
    buckets = {0.1: 10.0, 0.2: 30.0, 0.5: 36.0, math.inf: 40.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20 of 10..30
    assert histogram_quantile(0.125, buckets) == pytest.approx(0.05)  # first bucket from 0
    assert histogram_quantile(0.95, buckets) == 0.5  # in +Inf: the highest finite bound
    assert math.isnan(histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}))
    with pytest.raises(ValueError):
        histogram_quantile(0.5, {0.1: 1.0})


def test_latency_moves_only_the_delayed_nodes_median_and_loss_is_retried(
    tmp_path: Path,
) -> None:
    spec = with_overrides(load_spec(REPO_ROOT / "experiments" / "smoke-dfl.yaml"), OVERRIDES)
    windows = {
        "healthy": [(at + SETTLE, at + STRETCH - EARLY) for at in HEALTHY_AT],
        "delayed": [(at + SETTLE, at + STRETCH - EARLY) for at in DELAYED_AT],
    }
    loss_window = (LOSS_AT - EARLY, LOSS_AT + LOSS_FOR + SETTLE)
    loss_inside = LOSS_AT + LOSS_FOR - EARLY
    end = DURATION - 1.0
    moments = [t for spans in windows.values() for span in spans for t in span]
    moments += [*loss_window, loss_inside, end]

    with running(spec, tmp_path / "run") as network:
        scrapes = scrape_at(network, moments)
        wait_for(lambda: not network.driving, 90, "the run to end", network)
        network.check()
        assert all(alive(node) for node in network.nodes), "a node died"
        heights = {node.name: status(node).chain_height for node in network.nodes}
        names = [node.name for node in network.nodes]
    assert_audit_passes(tmp_path / "run")
    slow, lossy = names[SLOW], names[LOSSY]

    # --- latency -------------------------------------------------------------------------------
    for kind, spans in windows.items():  # each window lay wholly in its state
        for span in spans:
            for moment in span:
                for name in names:
                    want = DELAY if kind == "delayed" and name == slow else 0.0
                    have = fault_setting(scrapes[moment][name], "delay")
                    assert have == pytest.approx(want), f"{name} at {moment} s: delay {have}"
    delayed_count = {
        kind: sum(
            difference(scrapes[a][slow], scrapes[b][slow], "dfl_network_fault_messages_total",
                       fate="delayed")
            for a, b in spans
        )
        for kind, spans in windows.items()
    }  # fmt: skip
    assert delayed_count["delayed"] > 0, "the latency fault delayed nothing"
    assert delayed_count["healthy"] == 0, "messages were delayed with the fault off"

    medians: dict[str, dict[str, float]] = {}
    print(f"\ngossip latency p50 (ms), healthy vs {DELAY * 1000:.0f} ms on {slow}:")
    for name in names:
        distributions = {
            kind: pooled([(scrapes[a][name], scrapes[b][name]) for a, b in spans])
            for kind, spans in windows.items()
        }
        counts = {kind: buckets[math.inf] for kind, buckets in distributions.items()}
        medians[name] = {kind: histogram_quantile(0.5, b) for kind, b in distributions.items()}
        change = medians[name]["delayed"] - medians[name]["healthy"]
        print(
            f"  {name}: {medians[name]['healthy'] * 1000:6.1f} -> "
            f"{medians[name]['delayed'] * 1000:6.1f}  ({change * 1000:+6.1f})  "
            f"n={counts['healthy']:.0f}/{counts['delayed']:.0f}"
        )
        enough = ENOUGH["slow" if name == slow else "other"]
        assert min(counts.values()) >= enough, f"{name}: too few observations {counts}"
    for name in names:
        change = medians[name]["delayed"] - medians[name]["healthy"]
        if name == slow:
            assert change >= RISE_AT_LEAST, f"{name}'s p50 rose only {change * 1000:.0f} ms"
        else:
            assert abs(change) < OTHERS_WITHIN, f"{name}'s p50 moved {change * 1000:+.0f} ms"

    # --- loss ----------------------------------------------------------------------------------
    begin, finish = (scrapes[t] for t in loss_window)
    assert fault_setting(begin[lossy], "loss") == 0.0
    assert fault_setting(scrapes[loss_inside][lossy], "loss") == pytest.approx(LOSS)
    assert fault_setting(finish[lossy], "loss") == 0.0

    def delta(
        name: str, metric: str, at: tuple[float, float] = loss_window, **labels: str
    ) -> float:
        return difference(scrapes[at[0]][name], scrapes[at[1]][name], metric, **labels)

    dropped = delta(lossy, "dfl_network_fault_messages_total", fate="dropped")
    sent = delta(lossy, "dfl_transactions_sent_total")
    received = delta(lossy, "dfl_transactions_received_total")
    generated = delta(lossy, "dfl_transactions_generated_total")
    collected = delta(lossy, "dfl_receipts_total", direction="collected")
    given_up = sum(delta(name, "dfl_send_failures_total", code="UNAVAILABLE") for name in names)
    print(
        f"{LOSS:.0%} loss on {lossy} for {LOSS_FOR:.0f} s: {dropped:.0f} messages dropped, "
        f"{given_up:.0f} sends given up on (all nodes), {lossy} generated {generated:.0f}, "
        f"sent {sent:.0f}, received {received:.0f} transactions, collected {collected:.0f} "
        f"receipts; chain heights {heights}"
    )
    assert total(begin[lossy], "dfl_network_fault_messages_total", fate="dropped") == 0
    # Every transaction it sent or took in passed its fault at least once (receipts pass too),
    # and each pass is lost with probability LOSS: half that rate on a part of the traffic is
    # many standard deviations below what the draws give.
    assert dropped >= LOSS / 2 * (sent + received) > 0, "fewer messages lost than the loss says"
    # A sender retries what was lost; without retries, every drop would be a send given up on.
    assert given_up < dropped / 2, "the lost messages were not retried"
    assert generated > 0 and sent > 0 and collected > 0, f"{lossy} stopped learning in the loss"
    after = (loss_window[1], end)
    assert delta(lossy, "dfl_network_fault_messages_total", after, fate="dropped") == 0
    for name in names:
        assert delta(name, "dfl_transactions_generated_total", after) > 0, (
            f"{name} generated nothing after the loss"
        )
