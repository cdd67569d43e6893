"""What a run directory holds: its file names and the records the report reads back from them.

A run (local processes, Docker containers) leaves this layout, and nothing else is read:

    DIR/run.json                    name, runtime, protocol, started_at, duration_s, nodes
    DIR/spec.yaml                   the experiment spec as run (copied into the appendix)
    DIR/metrics.csv                 long format: time_s,node,metric,value
    DIR/nodes/<name>/               the node's data directory (node/datadir.py): chain.sqlite,
                                    profile.json and, for BLADE-FL, rounds.jsonl
    DIR/faults.jsonl                a run with `faults:` only: one line per fault begin or end
                                    (orchestrator/faults.py FaultRunner)
    DIR/load_stats.csv, load_stats_history.csv, load_failures.csv
                                    a `dfl load` run only: Locust's CSV files
    DIR/load.json                   a `dfl load` run only: its settings, and every node's
                                    counters before and after the load (orchestrator/load/)

The report adds DIR/report.md, DIR/summary.json and DIR/plots/*.png. The names are declared here
once so that the runtimes writing a run directory and the readers cannot drift apart; the names
inside a node's data directory belong to the node and come from node/datadir.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.host.resemblance import Resemblance

RUN_FILE = "run.json"
SPEC_FILE = "spec.yaml"
METRICS_FILE = "metrics.csv"
NODES_DIR = "nodes"
REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
PLOTS_DIR = "plots"
ACCURACY_PLOT = "accuracy.png"
CPU_PLOT = "cpu.png"
CHAIN_PLOT = "chain.png"
PLAGIARISM_PLOT = "plagiarism.png"  # BLADE-FL runs with a rounds.jsonl only
FAULTS_FILE = "faults.jsonl"
FAULTS_PLOT = "faults.png"  # runs with a faults.jsonl only
LOAD_CAPACITY_PLOT = "load_capacity.png"  # `dfl load --step` runs only
# `dfl load` runs only (orchestrator/load/): Locust's CSV files (`--csv load`), the nodes' own
# counters before and after the load with its settings, and the plan, key and log in load/.
LOAD_CSV_PREFIX = "load"
LOAD_STATS_FILE = "load_stats.csv"
LOAD_HISTORY_FILE = "load_stats_history.csv"
LOAD_FAILURES_FILE = "load_failures.csv"
LOAD_FILE = "load.json"
LOAD_DIR = "load"
BLADE_PROTOCOL = "blade-fl"  # run.json's protocol, and the genesis's, for BLADE-FL
FEDAVG_PROTOCOL = "fedavg"  # run.json's protocol for FedAvg, whose nodes keep no chain store
LOCAL_RUNTIME = "local"  # run.json's runtime for nodes run as the orchestrator's child processes

METRICS_HEADER = ("time_s", "node", "metric", "value")
CPU_METRIC_PREFIX = "cpu_seconds:"  # cpu_seconds:<task>:<category>, cumulative
COUNTER_METRICS = (
    "transactions_sent",
    "transactions_received",
    "bytes_sent",
    "rejected",
    "samples_injected",
)
# BLADE-FL's mining counters (cumulative), shown in its blockchain section.
POW_METRICS = ("pow_hashes", "mining_seconds", "mining_searches", "forks")
# What a container's cgroup says (only where the cgroup is the node's alone: a container):
# memory now, CPU since it started.
CONTAINER_METRICS = ("memory_bytes", "cgroup_cpu_seconds")
# What the node's own process says, wherever it runs: USS and PSS now (bytes), CPU since the
# process started (imports included, unlike the profile's process_cpu_seconds).
PROCESS_METRICS = ("uss_bytes", "pss_bytes", "process_cpu_seconds")
# What injected network faults did (dfl_network_fault_messages_total by fate, both directions
# summed) and sends given up on (dfl_send_failures_total), cumulative: the Faults section's.
FAULT_MESSAGE_METRICS = {"dropped": "fault_messages_dropped", "delayed": "fault_messages_delayed"}
SEND_FAILURES_METRIC = "send_failures"
ROUNDS_METRIC = "rounds"  # dfl_rounds_total: BLADE-FL's and FedAvg's rounds completed
KNOWN_METRICS = {
    ROUNDS_METRIC,
    "accuracy_test",
    "accuracy_local",
    "chain_height",
    *COUNTER_METRICS,
    *POW_METRICS,
    *CONTAINER_METRICS,
    *PROCESS_METRICS,
    *FAULT_MESSAGE_METRICS.values(),
    SEND_FAILURES_METRIC,
}


@dataclass(frozen=True)
class NodeSpec:
    """One node as run.json lists it; its name keys every other file of the run."""

    name: str
    address: str
    peers: tuple[str, ...]
    behaviour: str


@dataclass(frozen=True)
class RunInfo:
    """run.json: the only file a run directory must have."""

    name: str
    runtime: str
    protocol: str
    started_at: str
    duration_s: float
    nodes: tuple[NodeSpec, ...]
    pow_difficulty: float | None = None  # BLADE-FL: expected hashes per block
    # docker runtime: each container's health states, counted at every sample
    health: dict[str, dict[str, int]] = field(default_factory=dict)
    # swarm runtime: the Swarm node (hostname) each testbed node's task ran on, and what
    # Prometheus found through DNS (each node's scrape health at the end)
    hosts: dict[str, str] = field(default_factory=dict)
    prometheus_targets: dict[str, str] = field(default_factory=dict)

    def node_names(self) -> dict[str, str]:
        """Hex address -> node name, for the nodes whose address run.json gives."""
        return {n.address: n.name for n in self.nodes if n.address}


def run_record(
    spec: Any,
    runtime: str,
    *,
    started_at: float,
    duration_s: float,
    nodes: Sequence[NodeSpec],
    **extra: Any,
) -> str:
    """run.json's text, written by every runtime (the simulator's fault runs included) and read
    by `RunInfo`."""
    info = {
        "name": spec.name,
        "runtime": runtime,
        "protocol": spec.protocol,
        "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(),
        "duration_s": duration_s,
        **extra,
        "edges": [list(edge) for edge in spec.edges()],
        "nodes": [{**asdict(node), "peers": list(node.peers)} for node in nodes],
    }
    return json.dumps(info, indent=2)


@dataclass(frozen=True)
class Series:
    """One metric of one node, sorted by time (seconds since the run started)."""

    times: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def since(self, start: float) -> tuple[float, ...]:
        return tuple(v for t, v in zip(self.times, self.values, strict=True) if t >= start)

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None


@dataclass(frozen=True)
class Metrics:
    """metrics.csv by node and metric name; unknown metric names are kept, never refused."""

    by_node: Mapping[str, Mapping[str, Series]] = field(default_factory=dict)
    skipped_rows: int = 0

    def series(self, node: str, metric: str) -> Series:
        return self.by_node.get(node, {}).get(metric, Series())

    @property
    def end_time(self) -> float:
        return max(
            (s.times[-1] for metrics in self.by_node.values() for s in metrics.values() if s.times),
            default=0.0,
        )

    def names(self) -> set[str]:
        return {name for metrics in self.by_node.values() for name in metrics}


@dataclass(frozen=True)
class CpuProfile:
    """CPU seconds by (task, category); duplicates in the source are summed."""

    seconds: Mapping[tuple[str, str], float]
    process_cpu_seconds: float | None
    profiled_seconds: float | None
    source: str  # "profile.json", or "metrics.csv" when the node left no profile

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def category(self, name: str) -> float:
        return sum(s for (_, category), s in self.seconds.items() if category == name)

    @property
    def blockchain_share(self) -> float | None:
        return self.category("blockchain") / self.total if self.total > 0 else None

    @property
    def coverage(self) -> float | None:
        """Profiler total / the process's own CPU seconds: how much CPU the tables explain."""
        if not self.process_cpu_seconds or self.process_cpu_seconds <= 0:
            return None
        return self.total / self.process_cpu_seconds


@dataclass(frozen=True)
class ChainStats:
    """Table 7's figures for one chain store, plus whether it re-verifies."""

    blocks: int
    transactions_per_block: tuple[int, ...]
    confirmations_per_block: tuple[int, ...]
    confirmed_fractions: tuple[float, ...]
    verifies: bool
    verify_problem: str | None = None  # "height H: reason: detail" when it does not verify
    protocol: str = "dfl"  # the genesis's: "dfl" (Block) or "blade-fl" (PowBlock)
    miners: tuple[str, ...] = ()  # BLADE-FL: each block's miner, hex address, in height order
    block_hashes: tuple[str, ...] = ()  # each block's digest (hex), in height order


@dataclass(frozen=True)
class RoundRecord:
    """One line of rounds.jsonl: a BLADE-FL block and how much its models resemble each other."""

    round: int
    miner: str
    models: tuple[str, ...]
    resemblance: tuple[Resemblance, ...]


@dataclass(frozen=True)
class RoundLog:
    """rounds.jsonl of the first node (in run.json's order) that left one."""

    source: str  # the node whose file this is
    rounds: tuple[RoundRecord, ...]


@dataclass(frozen=True)
class FaultMoment:
    """One line of faults.jsonl: a fault began or ended `time_s` seconds after the run started."""

    time_s: float
    phase: str  # "begin" or "end"
    kind: str  # crash, pause, latency, loss, partition
    nodes: tuple[int, ...]  # node indices, run.json's order
    fault: Mapping[str, Any]  # the fault as the spec holds it (its JSON form)
    chain_heights: Mapping[str, int]  # node name -> height, for the nodes that answered then


@dataclass(frozen=True)
class NodeData:
    """A node's files, each None with the reason when the node did not leave it readable."""

    spec: NodeSpec
    chain: ChainStats | None
    chain_problem: str | None  # why `chain` is None
    profile: CpuProfile | None
    profile_problem: str | None  # why `profile` is None, or a note about where it came from


@dataclass(frozen=True)
class RunData:
    """Everything a run directory holds, read once; the summary and the report start here."""

    directory: Path
    info: RunInfo
    spec_text: str | None
    metrics: Metrics
    nodes: Mapping[str, NodeData]
    warnings: tuple[str, ...] = ()
    rounds: RoundLog | None = None  # BLADE-FL's per-block resemblance tables
    faults: tuple[FaultMoment, ...] | None = None  # faults.jsonl in time order; None: no file
