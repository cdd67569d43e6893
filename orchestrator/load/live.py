"""The load while it runs, for Prometheus: Locust's requests counted in one process, exported by
the orchestrator in another.

Locust runs in a gevent process of its own (orchestrator/load/runner.py), and the orchestrator's
/metrics is what the run's Prometheus already scrapes. So the locustfile counts every request
here (`LiveCounts.record`, by task, RPC and outcome, with a latency histogram) and writes the
totals to a small JSON file once a second (`LiveCounts.write`, atomically); the orchestrator
registers a `LoadCollector` on its registry, which reads that file at each scrape and yields

- `dfl_load_requests_total{task,rpc,outcome}`: requests Locust made, `outcome` "ok" when the
  node answered as it must (orchestrator/load/tasks.py's verdict), else the node's status;
- `dfl_load_request_duration_seconds{task,rpc}`: their latency, as a histogram;
- `dfl_load_users`: Locust's users now (the step mode raises them stage by stage).

A counter only ever rises within one Locust process, and the file is replaced whole, so a
scrape sees either the last totals or the ones before. No file (no load yet): the families
without samples, so that the names are known before any load runs.
Pure Python, no gevent and no grpc: both processes import it.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from orchestrator.load.tasks import split_name

LIVE_FILE = "live.json"  # in DIR/load/, beside the plan
OK_OUTCOME = "ok"
# Seconds. A valid transaction takes 10-30 ms on an idle node and seconds on a flooded one; a
# GetModel answer is 1.7 MB.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LiveCounts:
    """Request totals by (task, rpc, outcome) and latency bucket counts by (task, rpc)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.buckets: dict[tuple[str, str], list[int]] = {}  # one more than LATENCY_BUCKETS: +Inf
        self.seconds: dict[tuple[str, str], float] = {}
        self.users = 0

    def record(self, name: str, outcome: str, seconds: float) -> None:
        task, rpc = split_name(name)
        key = (task, rpc, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.buckets.setdefault((task, rpc), [0] * (len(LATENCY_BUCKETS) + 1))
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds[(task, rpc)] = self.seconds.get((task, rpc), 0.0) + seconds

    def snapshot(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "requests": [[*key, count] for key, count in sorted(self.requests.items())],
            "latency": [
                [task, rpc, counts, self.seconds[(task, rpc)]]
                for (task, rpc), counts in sorted(self.buckets.items())
            ],
        }

    def write(self, path: Path) -> None:
        part = path.with_name(path.name + ".part")
        part.write_text(json.dumps(self.snapshot()))
        os.replace(part, path)


class LoadCollector(Collector):
    """Yields the metrics above from the file a Locust process keeps writing (`path`, set
    when a load test starts)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    def collect(self) -> Iterator[Any]:
        data = None
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = None
        if not isinstance(data, dict):
            yield from _families({}, with_users=False)
            return
        yield from _families(data, with_users=True)


def _families(data: dict[str, Any], *, with_users: bool) -> Iterator[Any]:
    requests = CounterMetricFamily(
        "dfl_load_requests",
        "Requests the load test (Locust) made to the nodes, by task, RPC and outcome: ok when "
        "the node answered as it must (a forged record or unsigned call refused with its "
        "reason), else the node's status.",
        labels=("task", "rpc", "outcome"),
    )
    for task, rpc, outcome, count in data.get("requests", []):
        requests.add_metric((task, rpc, outcome), count)
    yield requests
    latency = HistogramMetricFamily(
        "dfl_load_request_duration_seconds",
        "Latency of the load test's requests, as Locust measured them (call to answer).",
        labels=("task", "rpc"),
    )
    for task, rpc, counts, total in data.get("latency", []):
        cumulative, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        latency.add_metric((task, rpc), cumulative, total)
    yield latency
    users = GaugeMetricFamily("dfl_load_users", "Locust users running now (the load test's).")
    if with_users:
        users.add_metric((), data.get("users", 0))
    yield users
