"""What a `dfl load` run measured: Locust's CSV files and the nodes' own counters under load.

Read from the run directory alone (schema.py names the files), so `dfl report DIR` gives the
same figures again:

- load_stats.csv: one row per request name (`<task>:<rpc>`, orchestrator/load/tasks.py) and an
  Aggregated row: requests, failures, requests/s and response-time percentiles, in ms;
- load_failures.csv: how often each failure text occurred per request name; the text is the
  node's gRPC status and reason label (and what was expected, for a forged record or an
  unsigned call answered otherwise), so these are the failures by status;
- load.json: the load's settings and every node's /metrics before the load and once its ML
  queue was empty after it (orchestrator/load/scrape.py);
- metrics.csv: the nodes' CPU by category and their test-set accuracy while the load ran.

The node figures per node: refusals by reason (dfl_rejected_total, exact: the node counts as it
answers), new models received and receipts written for them (every model received by the end
scrape was answered when its ML queue was empty: `settled`), failed evaluations, bans, the mean
gossip latency of the models it received (virtual peers' included, which travel one hop),
samples delivered against those the driver offered (at the spec's rate, from the node's first
scrape to its last, or to the end of the run's injection if that came first), process CPU in
cores (load.json), CPU by category in cores and accuracy at the first and last sample
(metrics.csv). Beside them, the load generator's own CPU in cores (Locust's process): on a
small machine it competes with the nodes it loads. For `--step`, the capacity curve's stages
from load_steps.jsonl and the bound the CPU figures set (capacity.py).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.load.scrape import difference, rejected
from orchestrator.load.steps import STEPS_FILE, read_stages
from orchestrator.load.tasks import expected_of, split_name
from orchestrator.report.capacity import CapacityFigures, capacity_figures, load_span
from orchestrator.report.schema import (
    CPU_METRIC_PREFIX,
    LOAD_FAILURES_FILE,
    LOAD_FILE,
    LOAD_STATS_FILE,
    Metrics,
    RunData,
)

AGGREGATED = "Aggregated"
PERCENTILES = ("50%", "95%", "99%")


@dataclass(frozen=True)
class RequestFigures:
    """One row of load_stats.csv. Times in ms; None where Locust wrote N/A."""

    name: str
    task: str  # "" for the Aggregated row
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    expected: str  # the answer each request must get ("OK", "UNAUTHENTICATED bad_signature")


@dataclass(frozen=True)
class FailureFigures:
    """One row of load_failures.csv."""

    name: str
    error: str
    occurrences: int


@dataclass(frozen=True)
class NodeLoadFigures:
    """One node under load; None where the run did not record the figure."""

    node: str
    rejected: dict[str, float]  # reason label -> refusals during the load (non-zero only)
    transactions_received: float | None
    receipts_written: float | None
    evaluations_failed: float | None
    settled: bool  # the end scrape saw an empty ML queue
    restarted: bool  # its counters went back to 0 between the scrapes (a crash, a restart)
    peers_banned: float | None  # at the end
    gossip_latency_mean_s: float | None
    samples_delivered: float | None  # the driver's and the inject task's
    samples_offered: float | None  # by the driver, at the spec's rate, over the load
    process_cores: float | None
    cores_by_category: dict[str, float]  # metrics.csv, first to last sample
    accuracy_first: float | None
    accuracy_last: float | None


@dataclass(frozen=True)
class LoadSummary:
    """The Load section's figures, and summary.json's `load`."""

    users: int | None
    spawn_rate: float | None
    weights: dict[str, int]
    wait_seconds: float | None
    user_rate: float | None  # tasks per second per user (0: as fast as the pause lets them)
    batch_size: int | None  # samples per inject:InjectSamples call
    started_s: float | None  # seconds after the run started
    ended_s: float | None
    locust_cores: float | None  # the load generator's own CPU seconds per second
    requests: tuple[RequestFigures, ...]
    total: RequestFigures | None
    failures: tuple[FailureFigures, ...]
    nodes: tuple[NodeLoadFigures, ...]
    capacity: CapacityFigures | None = None  # the step mode's
    problems: tuple[str, ...] = field(default=())


def summarize_load(data: RunData) -> LoadSummary | None:
    """The load figures of a `dfl load` run; None for a run without any load file."""
    directory = data.directory
    stats_path, failures_path = directory / LOAD_STATS_FILE, directory / LOAD_FAILURES_FILE
    load_path = directory / LOAD_FILE
    if not (stats_path.is_file() or load_path.is_file()):
        return None
    problems: list[str] = []
    rows = read_stats(stats_path, problems)
    failures = read_failures(failures_path, problems)
    settings = _read_json(load_path, problems)
    if settings.get("problem"):
        problems.append(str(settings["problem"]))
    total = next((row for row in rows if row.name == AGGREGATED), None)
    return LoadSummary(
        users=_int(settings.get("users")),
        spawn_rate=_float(settings.get("spawn_rate")),
        weights={str(k): int(v) for k, v in dict(settings.get("weights") or {}).items()},
        wait_seconds=_float(settings.get("wait_seconds")),
        user_rate=_float(settings.get("user_rate")),
        batch_size=_int(settings.get("batch_size")),
        started_s=_float(settings.get("started_s")),
        ended_s=_float(settings.get("ended_s")),
        locust_cores=_per_second(settings.get("locust_cpu_seconds"), settings),
        requests=tuple(row for row in rows if row.name != AGGREGATED),
        total=total,
        failures=failures,
        nodes=tuple(
            _node_figures(name, entry, settings, data.metrics, name in _crashed(data, entry))
            for name, entry in dict(settings.get("nodes") or {}).items()
        ),
        capacity=capacity_figures(
            settings,
            read_stages(directory / STEPS_FILE),
            total.requests if total is not None else None,
        ),
        problems=tuple(problems),
    )


def read_stats(path: Path, problems: list[str]) -> tuple[RequestFigures, ...]:
    """load_stats.csv's rows; a missing file or an unreadable row is noted in `problems`."""
    if not path.is_file():
        problems.append(f"{path.name} is missing: Locust left no statistics")
        return ()
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                name = row["Name"]
                rows.append(
                    RequestFigures(
                        name=name,
                        task=split_name(name)[0],
                        requests=int(row["Request Count"]),
                        failures=int(row["Failure Count"]),
                        requests_per_s=float(row["Requests/s"]),
                        p50_ms=_float(row.get("50%")),
                        p95_ms=_float(row.get("95%")),
                        p99_ms=_float(row.get("99%")),
                        max_ms=_float(row.get("Max Response Time")),
                        expected=str(expected) if (expected := expected_of(name)) else "",
                    )
                )
            except (KeyError, TypeError, ValueError):
                problems.append(f"{path.name}: an unreadable row was skipped")
    return tuple(sorted(rows, key=lambda r: (r.name == AGGREGATED, r.name)))


def read_failures(path: Path, problems: list[str]) -> tuple[FailureFigures, ...]:
    """load_failures.csv's rows, most frequent first."""
    if not path.is_file():
        return ()
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                rows.append(
                    FailureFigures(
                        name=row["Name"], error=row["Error"], occurrences=int(row["Occurrences"])
                    )
                )
            except (KeyError, TypeError, ValueError):
                problems.append(f"{path.name}: an unreadable row was skipped")
    return tuple(sorted(rows, key=lambda r: (-r.occurrences, r.name, r.error)))


def _node_figures(
    name: str,
    entry: Mapping[str, Any],
    settings: Mapping[str, Any],
    metrics: Metrics,
    restarted: bool,
) -> NodeLoadFigures:
    before, after = entry.get("before") or {}, entry.get("after") or {}
    # A node that crashed in between (a crash fault, faults.jsonl) counts again from 0 once
    # restarted: its gains are what it counted since the restart, as Prometheus's rate() takes
    # a counter reset; what it counted between the first scrape and the crash is lost.
    gained = (dict(after) if restarted else difference(after, before)) if before and after else {}
    span = load_span(settings)
    rate = _float(entry.get("injection_rate"))
    # The driver injects until the run ends; the counters gained between the node's scrapes.
    first, last = _float(entry.get("before_s")), _float(entry.get("after_s"))
    if last is not None and (run_end := _float(entry.get("injection_ended_s"))) is not None:
        last = min(last, run_end)
    injecting = last - first if first is not None and last is not None else span
    latency_count = gained.get("gossip_latency_count")
    cpu = gained.get("process_cpu_seconds")
    return NodeLoadFigures(
        node=name,
        rejected={reason: n for reason, n in rejected(gained).items() if n},
        transactions_received=gained.get("transactions_received"),
        receipts_written=gained.get("receipts_written"),
        evaluations_failed=gained.get("evaluations_failed"),
        settled=bool(entry.get("settled")),
        restarted=restarted,
        peers_banned=after.get("peers_banned"),
        gossip_latency_mean_s=gained["gossip_latency_sum"] / latency_count
        if latency_count
        else None,
        samples_delivered=gained.get("samples_injected"),
        samples_offered=rate * injecting if rate is not None and injecting is not None else None,
        process_cores=cpu / span if cpu is not None and span else None,
        cores_by_category=_cores_by_category(metrics, name),
        accuracy_first=_first(metrics, name, "accuracy_test"),
        accuracy_last=metrics.series(name, "accuracy_test").last,
    )


def _crashed(data: RunData, entry: Mapping[str, Any]) -> set[str]:
    """The nodes a crash fault began on between this node's two scrapes."""
    first, last = _float(entry.get("before_s")), _float(entry.get("after_s"))
    if not data.faults or first is None or last is None:
        return set()
    names = list(data.nodes)
    return {
        names[index]
        for moment in data.faults
        if moment.kind == "crash" and moment.phase == "begin" and first <= moment.time_s <= last
        for index in moment.nodes
        if index < len(names)
    }


def _per_second(value: object, settings: Mapping[str, Any]) -> float | None:
    """`value` (CPU seconds) over the load's span."""
    seconds, span = _float(value), load_span(settings)
    return seconds / span if seconds is not None and span else None


def _cores_by_category(metrics: Metrics, node: str) -> dict[str, float]:
    """Mean cores per CPU category between the node's first and last sample in metrics.csv."""
    totals: dict[str, tuple[float, float]] = {}
    span = None
    for metric, series in metrics.by_node.get(node, {}).items():
        if not metric.startswith(CPU_METRIC_PREFIX) or len(series.times) < 2:
            continue
        category = metric.rsplit(":", 1)[1]
        first, last = totals.get(category, (0.0, 0.0))
        totals[category] = (first + series.values[0], last + series.values[-1])
        span = series.times[-1] - series.times[0]
    if not span:
        return {}
    return {category: (last - first) / span for category, (first, last) in sorted(totals.items())}


def _first(metrics: Metrics, node: str, metric: str) -> float | None:
    values = metrics.series(node, metric).values
    return values[0] if values else None


def _read_json(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        problems.append(f"{path.name} is missing: no node figures under load")
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        problems.append(f"{path.name} is not JSON: {error}")
        return {}
    return data if isinstance(data, dict) else {}


def _float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: object) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def by_task(requests: Sequence[RequestFigures]) -> dict[str, list[RequestFigures]]:
    """The request rows grouped by task, in task order of appearance."""
    grouped: dict[str, list[RequestFigures]] = {}
    for row in requests:
        grouped.setdefault(row.task or row.name, []).append(row)
    return grouped
