"""The run report: what a finished run directory shows, as Markdown, plots and summary.json.

A run (local processes now, Docker later) leaves this layout, and nothing else is read:

    DIR/run.json                    name, runtime, protocol, started_at, duration_s, nodes
    DIR/spec.yaml                   the experiment spec as run (copied into the appendix)
    DIR/metrics.csv                 long format: time_s,node,metric,value
    DIR/nodes/<name>/chain.sqlite   the node's chain store
    DIR/nodes/<name>/profile.json   CPU seconds by (task, category), process CPU, profiled seconds
    DIR/nodes/<name>/rounds.jsonl   BLADE-FL only: one line per appended block, with the block's
                                    resemblance table (how much each model looks like a peer's)

A node that died may leave no chain store or profile; the report says so rather than failing,
because a run with a crashed node is exactly the kind of run someone wants to look at. The views
follow the paper (section 5.1): accuracy per node over time (Figure 8), CPU seconds by task and
category (Table 6) and blockchain statistics (Table 7). summary.json holds the key figures per
node for the integration tests and `dfl compare`.

BLADE-FL runs (run.json's protocol "blade-fl") hold proof-of-work blocks mined by any client, so
their blockchain section shows models per block, blocks mined, forks, mining time and hash rate
instead of DFL's receipts and confirmations, and a section on lazy clients reads the resemblance
tables of rounds.jsonl. Such a run may last only half a minute, so its final-accuracy window is
20 % of the run when that is shorter than 30 s.

Matplotlib is imported only when plots are drawn (orchestrator/plots.py), so importing this
module stays cheap for the CLI.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from node.ledger.errors import RecordRejected
from node.ledger.records import confirmed_fraction
from node.ledger.store import STORE_FILE, ChainCorrupted, ChainStore
from node.ledger.validation import decode
from proto.dfl.v1 import records_pb2 as pb

RUN_FILE = "run.json"
SPEC_FILE = "spec.yaml"
METRICS_FILE = "metrics.csv"
PROFILE_FILE = "profile.json"
REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
PLOTS_DIR = "plots"
PLAGIARISM_PLOT = "plagiarism.png"  # BLADE-FL runs with a rounds.jsonl only
ROUNDS_FILE = "rounds.jsonl"
BLADE_PROTOCOL = "blade-fl"

FINAL_WINDOW_S = 30.0  # "final" accuracy: the mean over the run's last 30 s, not one noisy sample
# BLADE-FL runs a fixed number of rounds and may be over in 30 s: there the window is at most
# this share of the run, so that "final" still means the end of training.
FINAL_WINDOW_FRACTION = 0.2
LAZY_FACTOR = 10.0  # suspected lazy: mean difference_std >= 10 x the clients' median
CHANCE_ACCURACY = 0.1  # ten classes (MNIST, Fashion-MNIST)
COVERAGE_TOLERANCE = 0.15  # flag a profiler total more than 15 % away from the process's CPU
METRICS_HEADER = ("time_s", "node", "metric", "value")

# The paper's task order (Table 6), then BLADE-FL's tasks; unknown tasks follow alphabetically.
TASK_ORDER = (
    "generate_block",
    "generate_transaction",
    "update_model",
    "receive_transaction",
    "train",
    "mine",
    "verify_block",
    "other",
)
TASK_LABELS = {
    "generate_block": "generate block",
    "generate_transaction": "generate transaction",
    "update_model": "update model",
    "receive_transaction": "receive transactions",
    "verify_block": "verify block",
}
CATEGORY_ORDER = ("ml", "blockchain", "network")
COUNTER_METRICS = (
    "transactions_sent",
    "transactions_received",
    "bytes_sent",
    "rejected",
    "samples_injected",
)
# BLADE-FL's mining counters (cumulative), shown in its blockchain section.
POW_METRICS = ("pow_hashes", "mining_seconds", "mining_searches", "forks")
# What a container's cgroup says (the docker runtime only): memory now, CPU since it started.
CONTAINER_METRICS = ("memory_bytes", "cgroup_cpu_seconds")
KNOWN_METRICS = {
    "accuracy_test",
    "accuracy_local",
    "chain_height",
    *COUNTER_METRICS,
    *POW_METRICS,
    *CONTAINER_METRICS,
}
CPU_METRIC_PREFIX = "cpu_seconds:"


class NotARunDirectory(ValueError):
    """DIR has no readable run.json: there is nothing to report on."""


# ---------------------------------------------------------------------------------------------
# What a run directory holds


@dataclass(frozen=True)
class NodeSpec:
    name: str
    address: str
    peers: tuple[str, ...]
    behaviour: str


@dataclass(frozen=True)
class RunInfo:
    name: str
    runtime: str
    protocol: str
    started_at: str
    duration_s: float
    nodes: tuple[NodeSpec, ...]
    pow_difficulty: float | None = None  # BLADE-FL: expected hashes per block
    # docker runtime: each container's health states, counted at every sample
    health: dict[str, dict[str, int]] = field(default_factory=dict)

    def node_names(self) -> dict[str, str]:
        """Hex address -> node name, for the nodes whose address run.json gives."""
        return {n.address: n.name for n in self.nodes if n.address}


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
class Resemblance:
    """One model of a BLADE-FL block against its nearest peer's (node/service/blade_host.py)."""

    client: str  # hex address
    nearest: str  # hex address
    model_cosine: float
    update_cosine: float
    copy_coefficient: float
    difference_std: float


@dataclass(frozen=True)
class RoundRecord:
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
class NodeData:
    spec: NodeSpec
    chain: ChainStats | None
    chain_problem: str | None  # why `chain` is None
    profile: CpuProfile | None
    profile_problem: str | None  # why `profile` is None, or a note about where it came from


@dataclass(frozen=True)
class RunData:
    directory: Path
    info: RunInfo
    spec_text: str | None
    metrics: Metrics
    nodes: Mapping[str, NodeData]
    warnings: tuple[str, ...] = ()
    rounds: RoundLog | None = None  # BLADE-FL's per-block resemblance tables


# ---------------------------------------------------------------------------------------------
# Loading


def load_run(directory: Path | str) -> RunData:
    """Reads everything a run directory holds; only a missing or broken run.json is fatal."""
    directory = Path(directory)
    info = _read_run_info(directory)
    warnings: list[str] = []
    metrics = _read_metrics(directory / METRICS_FILE, warnings)
    spec_path = directory / SPEC_FILE
    spec_text = spec_path.read_text(errors="replace") if spec_path.is_file() else None
    if spec_text is None:
        warnings.append(f"{SPEC_FILE} is missing")
    strangers = sorted(set(metrics.by_node) - {n.name for n in info.nodes})
    if strangers:
        warnings.append(f"{METRICS_FILE} names nodes not in {RUN_FILE}: {', '.join(strangers)}")
    nodes = {spec.name: _read_node(directory, spec, metrics) for spec in info.nodes}
    rounds = _read_rounds(directory, info, warnings)
    return RunData(directory, info, spec_text, metrics, nodes, tuple(warnings), rounds)


def _read_run_info(directory: Path) -> RunInfo:
    path = directory / RUN_FILE
    if not path.is_file():
        raise NotARunDirectory(f"{directory} is not a run directory: it has no {RUN_FILE}")
    try:
        raw = json.loads(path.read_text())
        nodes = tuple(
            NodeSpec(
                name=str(node["name"]),
                address=str(node.get("address", "")),
                peers=tuple(str(p) for p in node.get("peers", ())),
                behaviour=str(node.get("behaviour", "normal")),
            )
            for node in raw.get("nodes", ())
        )
        return RunInfo(
            name=str(raw.get("name", directory.name)),
            runtime=str(raw.get("runtime", "unknown")),
            protocol=str(raw.get("protocol", "unknown")),
            started_at=str(raw.get("started_at", "unknown")),
            duration_s=float(raw.get("duration_s", 0.0)),
            nodes=nodes,
            pow_difficulty=_optional_float(raw.get("pow_difficulty")),
            health={
                str(name): {str(state): int(count) for state, count in states.items()}
                for name, states in raw.get("health", {}).items()
            },
        )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise NotARunDirectory(f"{path} is not a valid run description: {error!r}") from None


def _read_metrics(path: Path, warnings: list[str]) -> Metrics:
    if not path.is_file():
        warnings.append(f"{METRICS_FILE} is missing: no accuracy, height or counter figures")
        return Metrics()
    points: dict[str, dict[str, list[tuple[float, float]]]] = {}
    skipped = 0
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not set(METRICS_HEADER) <= set(reader.fieldnames):
            warnings.append(
                f"{METRICS_FILE} has header {reader.fieldnames}, "
                f"expected {','.join(METRICS_HEADER)}"
            )
            return Metrics()
        for row in reader:
            try:
                time_s, value = float(row["time_s"]), float(row["value"])
            except (TypeError, ValueError):
                skipped += 1
                continue
            if not row["node"] or not row["metric"] or math.isnan(time_s):
                skipped += 1
                continue
            points.setdefault(row["node"], {}).setdefault(row["metric"], []).append((time_s, value))
    if skipped:
        warnings.append(f"{METRICS_FILE}: {skipped} unreadable rows skipped")
    by_node = {
        node: {
            metric: Series(tuple(t for t, _ in pts), tuple(v for _, v in pts))
            for metric, pts in ((m, sorted(p)) for m, p in metrics.items())
        }
        for node, metrics in points.items()
    }
    return Metrics(by_node, skipped)


def _read_node(directory: Path, spec: NodeSpec, metrics: Metrics) -> NodeData:
    node_dir = directory / "nodes" / spec.name
    chain, chain_problem = read_chain(node_dir / STORE_FILE)
    profile, profile_problem = _read_profile(node_dir / PROFILE_FILE)
    if profile is None:
        fallback = _profile_from_metrics(metrics.by_node.get(spec.name, {}))
        if fallback is not None:
            profile_problem = f"{profile_problem}; CPU figures taken from {METRICS_FILE}"
            profile = fallback
    return NodeData(spec, chain, chain_problem, profile, profile_problem)


def read_chain(path: Path) -> tuple[ChainStats | None, str | None]:
    """Table 7's figures from one chain store, or None and why there are none.

    The genesis says which block format the store holds: DFL's `Block` (transactions, receipts,
    confirmations) or BLADE-FL's `PowBlock` (the round's models and the miner; no confirmations).
    """
    if not path.is_file():
        return None, "no chain store (the node may have died before it wrote one)"
    try:
        store = ChainStore.open(path, verify=False)
    except ChainCorrupted as error:
        return None, f"chain store unreadable: {error}"
    except sqlite3.DatabaseError as error:
        return None, f"chain store is not a readable SQLite database: {error}"
    with store:
        transactions: list[int] = []
        confirmations: list[int] = []
        fractions: list[float] = []
        miners: list[str] = []
        hashes: list[str] = []
        try:
            for _, digest, data in store.blocks():
                hashes.append(bytes(digest).hex())
                try:
                    block = decode(store.format.message, data)
                except RecordRejected:
                    continue  # verify() below names the first bad block
                if isinstance(block, pb.PowBlock):
                    transactions.append(len(block.transactions))
                    miners.append(block.header.miner.hex())
                else:
                    transactions.append(len(block.body.transactions))
                    confirmations.append(len(block.finalization.confirmations))
                    fractions.append(confirmed_fraction(block))
            store.verify()
            verifies, problem = True, None
        except ChainCorrupted as error:
            verifies, problem = False, f"height {error.height}: {error.reason}: {error.detail}"
        except sqlite3.DatabaseError as error:
            verifies, problem = False, f"database error: {error}"
        return (
            ChainStats(
                blocks=store.height,
                transactions_per_block=tuple(transactions),
                confirmations_per_block=tuple(confirmations),
                confirmed_fractions=tuple(fractions),
                verifies=verifies,
                verify_problem=problem,
                protocol=store.genesis.body.protocol,
                miners=tuple(miners),
                block_hashes=tuple(hashes),
            ),
            None,
        )


def _read_profile(path: Path) -> tuple[CpuProfile | None, str | None]:
    if not path.is_file():
        return None, f"no {PROFILE_FILE} (the node may have died before writing it)"
    try:
        raw = json.loads(path.read_text())
        seconds: dict[tuple[str, str], float] = {}
        # "cpu" is the run layout's name; node/service/profiler.py's snapshot calls it "entries".
        entries = raw["cpu"] if "cpu" in raw else raw.get("entries", ())
        for entry in entries:
            key = (str(entry["task"]), str(entry["category"]))
            seconds[key] = seconds.get(key, 0.0) + float(entry["seconds"])
        return (
            CpuProfile(
                seconds=seconds,
                process_cpu_seconds=_optional_float(raw.get("process_cpu_seconds")),
                profiled_seconds=_optional_float(raw.get("profiled_seconds")),
                source=PROFILE_FILE,
            ),
            None,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        return None, f"{PROFILE_FILE} is malformed: {error!r}"


def _profile_from_metrics(metrics: Mapping[str, Series]) -> CpuProfile | None:
    """The last cumulative cpu_seconds:<task>:<category> samples, for a node without a profile."""
    seconds: dict[tuple[str, str], float] = {}
    for name, series in metrics.items():
        parts = name.split(":")
        if len(parts) == 3 and name.startswith(CPU_METRIC_PREFIX) and series.last is not None:
            seconds[(parts[1], parts[2])] = series.last
    if not seconds:
        return None
    return CpuProfile(seconds, None, None, source=METRICS_FILE)


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _read_rounds(directory: Path, info: RunInfo, warnings: list[str]) -> RoundLog | None:
    """The resemblance tables of the first node with a rounds.jsonl. Every client computes the
    same table for the same block, so one file suffices; the others are only checked for the
    rounds they hold (a client that fell behind or crashed holds fewer)."""
    files = [
        (n.name, path)
        for n in info.nodes
        if (path := directory / "nodes" / n.name / ROUNDS_FILE).is_file()
    ]
    if not files:
        return None
    source, path = files[0]
    records, skipped = _parse_rounds(path)
    if skipped:
        warnings.append(f"{source}: {ROUNDS_FILE}: {skipped} unreadable lines or entries skipped")
    present = {r.round for r in records}
    for name, other in files[1:]:
        theirs = {r.round for r in _parse_rounds(other)[0]}
        if theirs != present:
            warnings.append(
                f"{name}: {ROUNDS_FILE} disagrees with {source}'s on the rounds present "
                f"({name} has {_rounds_text(theirs)}, {source} has {_rounds_text(present)})"
            )
    return RoundLog(source, tuple(sorted(records, key=lambda r: r.round)))


def _parse_rounds(path: Path) -> tuple[list[RoundRecord], int]:
    """The file's records and how many lines or resemblance entries could not be read."""
    records: list[RoundRecord] = []
    skipped = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            entries = []
            for entry in raw.get("resemblance", ()):
                try:
                    entries.append(
                        Resemblance(
                            client=str(entry["client"]),
                            nearest=str(entry["nearest"]),
                            model_cosine=float(entry["model_cosine"]),
                            update_cosine=float(entry["update_cosine"]),
                            copy_coefficient=float(entry["copy_coefficient"]),
                            difference_std=float(entry["difference_std"]),
                        )
                    )
                except (ValueError, TypeError, KeyError):
                    skipped += 1
            records.append(
                RoundRecord(
                    round=int(raw["round"]),
                    miner=str(raw.get("miner", "")),
                    models=tuple(str(m) for m in raw.get("models", ())),
                    resemblance=tuple(entries),
                )
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            skipped += 1
    return records, skipped


def _rounds_text(rounds: Iterable[int]) -> str:
    """{1, 2, 3, 5} -> "rounds 1-3, 5"."""
    ordered = sorted(set(rounds))
    if not ordered:
        return "no rounds"
    spans: list[list[int]] = []
    for r in ordered:
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    return "rounds " + ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


# ---------------------------------------------------------------------------------------------
# Key figures


@dataclass(frozen=True)
class NodeSummary:
    final_test_accuracy: float | None
    test_samples_in_window: int
    max_test_accuracy: float | None
    final_local_accuracy: float | None
    blockchain_share: float | None
    cpu_seconds_by_category: dict[str, float]
    profiler_cpu_seconds: float | None
    process_cpu_seconds: float | None
    coverage: float | None
    coverage_flagged: bool
    cpu_source: str | None
    tx_per_block_mean: float | None  # BLADE-FL: models per block
    tx_per_block_min: int | None
    confirmations_per_block_mean: float | None
    confirmations_per_block_min: int | None
    confirmed_fraction_mean: float | None
    blocks: int | None
    peers: int
    chain_verifies: bool | None  # None: no readable chain store
    chain_problem: str | None
    counters: dict[str, float | None]  # COUNTER_METRICS' last values, bytes_sent included
    # The fields below are None where they do not apply (the mining ones in DFL runs) or where
    # the run did not record them.
    pow_hashes: float | None  # BLADE-FL: hashes computed
    forks: float | None  # BLADE-FL: competing valid blocks seen
    blocks_mined: int | None  # BLADE-FL: blocks of the reference chain this node mined
    hash_rate: float | None  # BLADE-FL: pow_hashes / CPU seconds of task "mine"
    mining_searches: float | None  # BLADE-FL: searches (one per round the node mined)
    mining_seconds_per_search: float | None  # BLADE-FL: mining_seconds / mining_searches
    # docker runtime: the container's cgroup, sampled with the other metrics
    memory_peak_bytes: float | None
    memory_mean_bytes: float | None
    cgroup_cpu_seconds: float | None

    @property
    def bytes_sent(self) -> float | None:
        """Payload bytes this node sent. In summary.json as counters.bytes_sent: `dfl compare`
        lists node fields it does not know as protocol-specific, and bytes_sent is common."""
        return self.counters.get("bytes_sent")


@dataclass(frozen=True)
class PlagiarismVerdict:
    """One client's resemblance to its nearest peer, averaged over the rounds of rounds.jsonl."""

    rounds: int  # blocks that held its model
    model_cosine: float | None
    update_cosine: float | None
    copy_coefficient: float | None
    difference_std: float | None
    nearest: str | None  # the peer named most often as nearest (node name, or hex address)
    nearest_rounds: int  # in how many of the rounds
    behaviour: str | None  # run.json's, None for an address run.json does not name
    suspected: bool  # difference_std >= LAZY_FACTOR x the median over clients


@dataclass(frozen=True)
class RunSummary:
    name: str
    runtime: str
    protocol: str
    started_at: str
    duration_s: float
    window_s: float
    window_start_s: float
    window_end_s: float
    chance_accuracy: float
    coverage_tolerance: float
    mean_final_test_accuracy: float | None
    mean_blockchain_share: float | None
    nodes: dict[str, NodeSummary]
    pow_difficulty: float | None  # BLADE-FL: expected hashes per block (run.json)
    network_hash_rate: float | None  # BLADE-FL: sum of pow_hashes / mean mining_seconds
    plagiarism: dict[str, PlagiarismVerdict]  # BLADE-FL: by node name; empty otherwise


def final_window(protocol: str, run_length: float) -> float:
    """The final-accuracy window's length: 30 s; for BLADE-FL at most 20 % of the run."""
    if protocol == BLADE_PROTOCOL:
        return min(FINAL_WINDOW_S, FINAL_WINDOW_FRACTION * run_length)
    return FINAL_WINDOW_S


def summarize(data: RunData) -> RunSummary:
    """The report's numbers, computed once so that report.md and summary.json cannot disagree."""
    end = max(data.info.duration_s, data.metrics.end_time)
    window = final_window(data.info.protocol, end)
    window_start = end - window
    reference_name = reference_chain(data)
    reference = data.nodes[reference_name].chain if reference_name else None
    nodes = {
        name: _summarize_node(
            node, data.metrics, window_start, reference, data.info.protocol == "blade-fl"
        )
        for name, node in data.nodes.items()
    }
    hashes = [n.pow_hashes for n in nodes.values() if n.pow_hashes is not None]
    mining = _mean(data.metrics.series(name, "mining_seconds").last for name in data.nodes)
    return RunSummary(
        name=data.info.name,
        runtime=data.info.runtime,
        protocol=data.info.protocol,
        started_at=data.info.started_at,
        duration_s=data.info.duration_s,
        window_s=window,
        window_start_s=window_start,
        window_end_s=end,
        chance_accuracy=CHANCE_ACCURACY,
        coverage_tolerance=COVERAGE_TOLERANCE,
        mean_final_test_accuracy=_mean(n.final_test_accuracy for n in nodes.values()),
        mean_blockchain_share=_mean(n.blockchain_share for n in nodes.values()),
        nodes=nodes,
        pow_difficulty=data.info.pow_difficulty,
        network_hash_rate=sum(hashes) / mining if hashes and mining else None,
        plagiarism=plagiarism(data),
    )


def reference_chain(data: RunData) -> str | None:
    """The BLADE-FL node whose chain store counts the blocks each node mined: the longest that
    verifies (else the longest readable one); the first in run.json's order on a tie."""
    chains = [
        (name, node.chain)
        for name, node in data.nodes.items()
        if node.chain is not None and node.chain.protocol == BLADE_PROTOCOL
    ]
    if not chains:
        return None
    candidates = [(n, c) for n, c in chains if c.verifies] or chains
    return max(candidates, key=lambda item: item[1].blocks)[0]


def _chain_disagreements(data: RunData, reference: str | None) -> list[str]:
    """Nodes whose blocks differ from the reference chain's at a height both hold."""
    if reference is None:
        return []
    ref = data.nodes[reference].chain
    assert ref is not None
    notes = []
    for name, node in data.nodes.items():
        chain = node.chain
        if name == reference or chain is None or chain.protocol != BLADE_PROTOCOL:
            continue
        pairs = zip(chain.block_hashes, ref.block_hashes, strict=False)  # common heights only
        for height, (a, b) in enumerate(pairs, start=1):
            if a != b:
                notes.append(
                    f"{name}: its chain differs from {reference}'s from height {height} on "
                    f"(blocks mined are counted on {reference}'s)"
                )
                break
    return notes


def _summarize_node(
    node: NodeData,
    metrics: Metrics,
    window_start: float,
    reference: ChainStats | None,
    mines: bool,
) -> NodeSummary:
    """`mines`: a BLADE-FL run; a DFL node exports the mining counters too, all zero."""
    name = node.spec.name
    test = metrics.series(name, "accuracy_test")
    in_window = test.since(window_start)
    profile, chain = node.profile, node.chain
    coverage = profile.coverage if profile else None
    categories = _categories(profile.seconds) if profile else []
    mined = (lambda metric: metrics.series(name, metric).last) if mines else (lambda _: None)
    pow_hashes = mined("pow_hashes")
    searches = mined("mining_searches")
    mining_seconds = mined("mining_seconds")
    mine_cpu = (
        sum(s for (task, _), s in profile.seconds.items() if task == "mine") if profile else None
    )
    return NodeSummary(
        final_test_accuracy=_mean(in_window),
        test_samples_in_window=len(in_window),
        max_test_accuracy=max(test.values) if test.values else None,
        final_local_accuracy=_mean(metrics.series(name, "accuracy_local").since(window_start)),
        blockchain_share=profile.blockchain_share if profile else None,
        cpu_seconds_by_category={c: profile.category(c) for c in categories} if profile else {},
        profiler_cpu_seconds=profile.total if profile else None,
        process_cpu_seconds=profile.process_cpu_seconds if profile else None,
        coverage=coverage,
        coverage_flagged=coverage is not None and abs(1 - coverage) > COVERAGE_TOLERANCE,
        cpu_source=profile.source if profile else None,
        tx_per_block_mean=_mean(chain.transactions_per_block) if chain else None,
        tx_per_block_min=min(chain.transactions_per_block, default=None) if chain else None,
        confirmations_per_block_mean=_mean(chain.confirmations_per_block) if chain else None,
        confirmations_per_block_min=min(chain.confirmations_per_block, default=None)
        if chain
        else None,
        confirmed_fraction_mean=_mean(chain.confirmed_fractions) if chain else None,
        blocks=chain.blocks if chain else None,
        peers=len(node.spec.peers),
        chain_verifies=chain.verifies if chain else None,
        chain_problem=node.chain_problem or (chain.verify_problem if chain else None),
        counters={m: metrics.series(name, m).last for m in COUNTER_METRICS},
        pow_hashes=pow_hashes,
        forks=mined("forks"),
        blocks_mined=_blocks_mined(node, reference),
        hash_rate=pow_hashes / mine_cpu if pow_hashes is not None and mine_cpu else None,
        mining_searches=searches,
        mining_seconds_per_search=mining_seconds / searches
        if mining_seconds is not None and searches
        else None,
        memory_peak_bytes=max(memory.values)
        if (memory := metrics.series(name, "memory_bytes")).values
        else None,
        memory_mean_bytes=_mean(memory.values),
        cgroup_cpu_seconds=metrics.series(name, "cgroup_cpu_seconds").last,
    )


def _blocks_mined(node: NodeData, reference: ChainStats | None) -> int | None:
    if reference is None or not node.spec.address:
        return None
    return reference.miners.count(node.spec.address)


def plagiarism(data: RunData) -> dict[str, PlagiarismVerdict]:
    """Per client of rounds.jsonl: its mean resemblance to its nearest peer and the verdict."""
    if data.rounds is None:
        return {}
    names = data.info.node_names()
    behaviours = {n.address: n.behaviour for n in data.info.nodes if n.address}
    entries: dict[str, list[Resemblance]] = {}
    for record in data.rounds.rounds:
        for entry in record.resemblance:
            entries.setdefault(entry.client, []).append(entry)
    order = [n.address for n in data.info.nodes if n.address in entries]
    order += sorted(set(entries) - set(order))
    spreads = {client: _mean(e.difference_std for e in entries[client]) for client in order}
    present = [v for v in spreads.values() if v is not None]
    median = statistics.median(present) if present else None
    verdicts = {}
    for client in order:
        rows = entries[client]
        nearest, count = Counter(e.nearest for e in rows).most_common(1)[0]
        spread = spreads[client]
        verdicts[names.get(client, client)] = PlagiarismVerdict(
            rounds=len(rows),
            model_cosine=_mean(e.model_cosine for e in rows),
            update_cosine=_mean(e.update_cosine for e in rows),
            copy_coefficient=_mean(e.copy_coefficient for e in rows),
            difference_std=spread,
            nearest=names.get(nearest, nearest),
            nearest_rounds=count,
            behaviour=behaviours.get(client),
            suspected=spread is not None
            and median is not None
            and spread > 0
            and spread >= LAZY_FACTOR * median,
        )
    return verdicts


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    present = set(names)
    return [n for n in order if n in present] + sorted(present - set(order))


def _tasks(seconds: Mapping[tuple[str, str], float]) -> list[str]:
    return _ordered((task for task, _ in seconds), TASK_ORDER)


def _categories(seconds: Mapping[tuple[str, str], float]) -> list[str]:
    """Always the paper's three columns, plus any category a profiler adds."""
    return _ordered([*CATEGORY_ORDER, *(category for _, category in seconds)], CATEGORY_ORDER)


# ---------------------------------------------------------------------------------------------
# Rendering


def render_report(directory: Path | str) -> Path:
    """Writes DIR/report.md, DIR/plots/*.png and DIR/summary.json; returns the report's path."""
    data = load_run(directory)
    summary = summarize(data)
    plot_dir = data.directory / PLOTS_DIR
    plot_dir.mkdir(exist_ok=True)
    _draw_plots(data, summary, plot_dir)
    summary_path = data.directory / SUMMARY_FILE
    summary_path.write_text(json.dumps(_json_ready(asdict(summary)), indent=2) + "\n")
    report_path = data.directory / REPORT_FILE
    report_path.write_text(report_markdown(data, summary))
    return report_path


def _draw_plots(data: RunData, summary: RunSummary, plot_dir: Path) -> None:
    from orchestrator import plots  # matplotlib is heavy: load it only when drawing

    names = list(data.nodes)
    metric = data.metrics

    def series(metric_name: str) -> dict[str, tuple[Sequence[float], Sequence[float]]]:
        return {n: (s.times, s.values) for n in names if (s := metric.series(n, metric_name)).times}

    plots.plot_accuracy(
        plot_dir / "accuracy.png",
        series("accuracy_test"),
        series("accuracy_local"),
        node_order=names,
        chance=CHANCE_ACCURACY,
        window=(summary.window_start_s, summary.window_end_s),
        title=f"{data.info.name}: accuracy per node",
    )
    profiles = {n: dict(node.profile.seconds) for n, node in data.nodes.items() if node.profile}
    all_seconds = {key: 0.0 for p in profiles.values() for key in p}
    plots.plot_cpu(
        plot_dir / "cpu.png",
        profiles,
        node_order=names,
        task_order=_tasks(all_seconds),
        category_order=_categories(all_seconds),
        task_labels=TASK_LABELS,
        title=f"{data.info.name}: CPU seconds by category and task",
    )
    plots.plot_chain(
        plot_dir / "chain.png",
        series("chain_height"),
        node_order=names,
        end=summary.window_end_s,
        title=f"{data.info.name}: chain height per node",
    )
    if data.rounds is not None and data.rounds.rounds:
        names = data.info.node_names()
        spreads: dict[str, tuple[list[float], list[float]]] = {}
        for record in data.rounds.rounds:
            for entry in record.resemblance:
                points = spreads.setdefault(names.get(entry.client, entry.client[:8]), ([], []))
                points[0].append(record.round)
                points[1].append(entry.difference_std)
        plots.plot_plagiarism(
            plot_dir / PLAGIARISM_PLOT,
            spreads,
            node_order=[*names.values(), *sorted(set(spreads) - set(names.values()))],
            suspected=[n for n, v in summary.plagiarism.items() if v.suspected],
            title=f"{data.info.name}: difference to the nearest peer's model, per round",
        )


def _json_ready(value: Any) -> Any:
    """NaN and infinities are not JSON; None is."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def report_markdown(data: RunData, summary: RunSummary) -> str:
    sections = [
        _header(data, summary),
        _notes(data, summary),
        _accuracy_section(summary),
        _cpu_section(data, summary),
        _pow_chain_section(data, summary)
        if summary.protocol == BLADE_PROTOCOL
        else _chain_section(summary),
        _plagiarism_section(data, summary),
        _containers_section(data, summary),
        _counters_section(data, summary),
        _appendix(data),
    ]
    return "\n".join(s for s in sections if s).rstrip() + "\n"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _big(value: float | None) -> str:
    """A large count with thousands separators: 24,450,400."""
    return "n/a" if value is None else f"{value:,.0f}"


def _window(seconds: float) -> str:
    """30 -> "30 s", 6.29 -> "6.3 s"."""
    return f"{seconds:.0f} s" if abs(seconds - round(seconds)) < 0.05 else f"{seconds:.1f} s"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: str = "") -> str:
    """A Markdown table; `numeric` marks right-aligned columns ("n"), by default all but the
    first."""
    numeric = numeric or "-" + "n" * (len(header) - 1)
    align = ["---:" if flag == "n" else "---" for flag in numeric]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.1f} s ({minutes} min {rest} s)" if minutes else f"{seconds:.1f} s"


def _header(data: RunData, summary: RunSummary) -> str:
    info = data.info
    lines = [
        f"# Run report: {info.name}\n",
        f"- runtime: {info.runtime}",
        f"- protocol: {info.protocol}",
        f"- started at: {info.started_at}",
        f"- duration: {_duration(info.duration_s)}",
        f"- nodes: {len(info.nodes)}",
        f"- mean final test-set accuracy over nodes: {_num(summary.mean_final_test_accuracy, 3)}",
        f"- mean blockchain share of profiled CPU: {_pct(summary.mean_blockchain_share)}",
        "- re-render: `dfl report DIR`, DIR being the directory this report is in "
        "(`dfl report .` from inside it)\n",
    ]
    rows = [
        (
            n.name,
            f"`{n.address[:16]}…`" if len(n.address) > 16 else f"`{n.address}`",
            ", ".join(n.peers) or "none",
            n.behaviour,
        )
        for n in info.nodes
    ]
    return "\n".join(lines) + "\n" + _table(("node", "address", "peers", "behaviour"), rows, "----")


def _notes(data: RunData, summary: RunSummary) -> str:
    notes = list(data.warnings)
    for name, node in data.nodes.items():
        figures = summary.nodes[name]
        if node.chain_problem:
            notes.append(f"{name}: {node.chain_problem}")
        elif figures.chain_verifies is False:
            notes.append(f"{name}: chain does NOT verify ({figures.chain_problem})")
        if node.profile_problem:
            notes.append(f"{name}: {node.profile_problem}")
        if figures.coverage_flagged:
            notes.append(
                f"{name}: profiler total is {_pct(figures.coverage)} of the process's CPU "
                f"(more than {_pct(COVERAGE_TOLERANCE, 0)} off): the CPU tables miss or "
                "double-count work"
            )
        if figures.final_test_accuracy is None:
            notes.append(
                f"{name}: no accuracy_test samples in the last {_window(summary.window_s)}"
            )
    notes += _chain_disagreements(data, reference_chain(data))
    if not notes:
        return ""
    return "## Warnings\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _accuracy_section(summary: RunSummary) -> str:
    rows = [
        (
            name,
            _num(n.final_test_accuracy, 3),
            str(n.test_samples_in_window),
            _num(n.max_test_accuracy, 3),
            _num(n.final_local_accuracy, 3),
        )
        for name, n in summary.nodes.items()
    ]
    shortened = (
        f": {_pct(FINAL_WINDOW_FRACTION, 0)} of the run's {summary.window_end_s:.1f} s, as that "
        f"is less than {FINAL_WINDOW_S:.0f} s "
        if summary.window_s < FINAL_WINDOW_S
        else " "
    )
    return (
        "## Accuracy\n\n"
        f"Final = mean over the last {_window(summary.window_s)} of the run{shortened}"
        f"(samples with time ≥ {summary.window_start_s:.1f} s). Test-set accuracy is the "
        "orchestrator's evaluation of each node's current model on the common test set; local "
        "accuracy is the node's own evaluation on its recent samples. Chance is "
        f"{summary.chance_accuracy:.2f}.\n\n"
        + _table(
            (
                "node",
                "final test-set accuracy",
                "samples in window",
                "max test-set accuracy",
                "final local accuracy",
            ),
            rows,
        )
        + "\n![accuracy over time](plots/accuracy.png)\n"
    )


def _cpu_section(data: RunData, summary: RunSummary) -> str:
    overview = [
        (
            name,
            *(_num(n.cpu_seconds_by_category.get(c)) for c in CATEGORY_ORDER),
            _num(n.profiler_cpu_seconds),
            _pct(n.blockchain_share),
            _num(n.process_cpu_seconds),
            _pct(n.coverage)
            + (f" **off by >{_pct(COVERAGE_TOLERANCE, 0)}**" if n.coverage_flagged else ""),
        )
        for name, n in summary.nodes.items()
    ]
    parts = [
        "## CPU time (paper Table 6 layout)\n",
        "CPU seconds (thread CPU time, not wall time). Blockchain share = blockchain / profiler "
        "total. Coverage = profiler total / the process's own CPU seconds; a coverage more than "
        f"{_pct(summary.coverage_tolerance, 0)} away from 100 % is flagged.\n",
        _table(
            (
                "node",
                *CATEGORY_ORDER,
                "profiler total",
                "blockchain share",
                "process CPU",
                "coverage",
            ),
            overview,
        ),
        "![CPU seconds by category](plots/cpu.png)\n",
    ]
    for name, node in data.nodes.items():
        parts.append(f"### {name}\n")
        profile = node.profile
        if profile is None:
            parts.append(f"No CPU figures: {node.profile_problem}.\n")
            continue
        categories = _categories(profile.seconds)
        rows = []
        for task in _tasks(profile.seconds):
            cells = [profile.seconds.get((task, c), 0.0) for c in categories]
            rows.append((TASK_LABELS.get(task, task), *(_num(v) for v in cells), _num(sum(cells))))
        rows.append(
            (
                "**total**",
                *(f"**{_num(profile.category(c))}**" for c in categories),
                f"**{_num(profile.total)}**",
            )
        )
        parts.append(_table(("task", *categories, "total"), rows))
        figures = summary.nodes[name]
        lines = [
            f"- blockchain share = {_num(profile.category('blockchain'))} / "
            f"{_num(profile.total)} = {_pct(figures.blockchain_share)}",
            f"- profiler total vs process CPU: {_seconds(profile.total)} vs "
            f"{_seconds(profile.process_cpu_seconds)}, coverage {_pct(figures.coverage)}"
            + (
                f" — **off by more than {_pct(COVERAGE_TOLERANCE, 0)}**"
                if figures.coverage_flagged
                else ""
            ),
        ]
        if profile.profiled_seconds is not None:
            lines.append(f"- profiled_seconds as reported: {_seconds(profile.profiled_seconds)}")
        if profile.source != PROFILE_FILE:
            lines.append(f"- source: {profile.source} (no {PROFILE_FILE})")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _verifies(node: NodeSummary) -> str:
    if node.chain_verifies is None:
        return f"no store ({node.chain_problem})"
    return "yes" if node.chain_verifies else f"no ({node.chain_problem})"


def _chain_section(summary: RunSummary) -> str:
    rows = []
    for name, n in summary.nodes.items():
        verifies = _verifies(n)
        rows.append(
            (
                name,
                _num(n.tx_per_block_mean),
                "n/a" if n.tx_per_block_min is None else str(n.tx_per_block_min),
                _num(n.confirmations_per_block_mean),
                "n/a"
                if n.confirmations_per_block_min is None
                else str(n.confirmations_per_block_min),
                _pct(n.confirmed_fraction_mean),
                str(n.peers),
                "n/a" if n.blocks is None else str(n.blocks),
                verifies,
            )
        )
    return (
        "## Blockchain (paper Table 7 layout)\n\n"
        "From each node's chain store. Confirmed = share of the confirmable receipts (those the "
        "block creator's neighbours wrote) that the block's confirmations cover.\n\n"
        + _table(
            (
                "node",
                "tx/block mean",
                "tx/block min",
                "confirmations/block mean",
                "confirmations/block min",
                "confirmed",
                "peers",
                "blocks",
                "chain verifies",
            ),
            rows,
            "-nnnnnnn-",
        )
        + "\n![chain height over time](plots/chain.png)\n"
    )


def _pow_chain_section(data: RunData, summary: RunSummary) -> str:
    """BLADE-FL's blocks: every client mines, so who mined what and at which cost."""
    rows = []
    for name, n in summary.nodes.items():
        verifies = _verifies(n)
        rows.append(
            (
                name,
                "n/a" if n.blocks is None else str(n.blocks),
                _num(n.tx_per_block_mean),
                "n/a" if n.tx_per_block_min is None else str(n.tx_per_block_min),
                "n/a" if n.blocks_mined is None else str(n.blocks_mined),
                _num(n.forks, 0),
                _num(n.mining_searches, 0),
                _seconds(n.mining_seconds_per_search),
                _big(n.pow_hashes),
                _big(n.hash_rate),
                verifies,
            )
        )
    reference = reference_chain(data)
    hashes = [n.pow_hashes for n in summary.nodes.values() if n.pow_hashes is not None]
    mining = _mean(data.metrics.series(name, "mining_seconds").last for name in data.nodes)
    lines = [
        f"- difficulty (run.json `pow_difficulty`): {_big(summary.pow_difficulty)} expected "
        "hashes per block",
        f"- network hash rate: {_big(sum(hashes) if hashes else None)} hashes (all nodes) / "
        f"{_seconds(mining)} (mean mining_seconds) = {_big(summary.network_hash_rate)} hashes "
        "per wall second",
    ]
    if summary.pow_difficulty and summary.network_hash_rate:
        lines.append(
            "- expected time to a block at that rate: difficulty / network hash rate = "
            f"{_seconds(summary.pow_difficulty / summary.network_hash_rate)}"
        )
    lines.append(
        f"- blocks mined are counted on {reference}'s chain (the longest that verifies)"
        if reference
        else "- blocks mined: no BLADE-FL chain store to count them on"
    )
    return (
        "## Blockchain (BLADE-FL)\n\n"
        "From each node's chain store and its counters in metrics.csv. Models/block = the "
        "models (transactions) a mined block holds; blocks mined = blocks whose header names "
        "the node as miner; forks = competing valid blocks the node saw. A mining search ends "
        "when the node finds a block or a peer's block wins; time/search = mining_seconds / "
        "mining_searches (wall time). Hashes/CPU s = pow_hashes / the node's CPU seconds in "
        "task `mine`.\n\n"
        + _table(
            (
                "node",
                "blocks",
                "models/block mean",
                "models/block min",
                "blocks mined",
                "forks seen",
                "mining searches",
                "mining time/search",
                "hashes",
                "hashes/CPU s",
                "chain verifies",
            ),
            rows,
            "-nnnnnnnnn-",
        )
        + "\n"
        + "\n".join(lines)
        + "\n\n![chain height over time](plots/chain.png)\n"
    )


def _plagiarism_section(data: RunData, summary: RunSummary) -> str:
    if summary.protocol != BLADE_PROTOCOL and data.rounds is None:
        return ""
    title = "## Lazy clients (plagiarism)\n\n"
    if data.rounds is None:
        return title + f"No node left a {ROUNDS_FILE}: no resemblance figures.\n"
    if not summary.plagiarism:
        return title + f"{data.rounds.source}'s {ROUNDS_FILE} holds no resemblance entries.\n"
    rows = [
        (
            name,
            v.behaviour or "unknown",
            str(v.rounds),
            _num(v.model_cosine, 4),
            _num(v.update_cosine, 3),
            _num(v.copy_coefficient, 3),
            _sci(v.difference_std),
            f"{v.nearest} ({v.nearest_rounds}/{v.rounds})",
            "**suspected**" if v.suspected else "honest-looking",
        )
        for name, v in summary.plagiarism.items()
    ]
    return (
        title
        + f"From {data.rounds.source}'s {ROUNDS_FILE} ({len(data.rounds.rounds)} blocks; every "
        "client computes the same table). For each model of a block, the nearest peer is the "
        "one whose update it holds most of; the figures are means over the blocks that held the "
        "model. How to read it: a noisy copy of a peer's model shows a difference std about the "
        "noise's sigma (0.1 for sigma² = 0.01), a copy coefficient near 1 and an update cosine "
        "near 0; honest clients differ from each other by far less (about 0.001) with a model "
        "cosine about 1. Suspected = mean difference std at least "
        f"{LAZY_FACTOR:.0f}x the median over all clients.\n\n"
        + _table(
            (
                "node",
                "behaviour (run.json)",
                "blocks",
                "model cosine",
                "update cosine",
                "copy coefficient",
                "difference std",
                "nearest (blocks)",
                "verdict",
            ),
            rows,
            "--nnnnn--",
        )
        + f"\n![difference to the nearest peer per round](plots/{PLAGIARISM_PLOT})\n"
    )


def _containers_section(data: RunData, summary: RunSummary) -> str:
    """Memory and CPU per container from its cgroup, and how its health checks went."""
    nodes = summary.nodes
    if all(n.memory_peak_bytes is None for n in nodes.values()) and not data.info.health:
        return ""
    health = data.info.health
    rows = [
        (
            name,
            _mib(n.memory_mean_bytes),
            _mib(n.memory_peak_bytes),
            _num(n.cgroup_cpu_seconds),
            _health_text(health.get(name, {})),
        )
        for name, n in nodes.items()
    ]
    peaks = [n.memory_peak_bytes for n in nodes.values() if n.memory_peak_bytes is not None]
    unhealthy = sorted(name for name, states in health.items() if states.get("unhealthy"))
    lines = []
    if peaks:
        lines.append(
            f"- memory per container: mean of peaks {_mib(_mean(peaks))}, largest "
            f"{_mib(max(peaks))}, all containers together at their peaks {_mib(sum(peaks))}"
        )
    if health:
        lines.append(
            "- health: "
            + (
                f"**unhealthy at some sample: {', '.join(unhealthy)}**"
                if unhealthy
                else "no container was seen unhealthy"
            )
        )
    return (
        "## Containers\n\n"
        "From each container's cgroup: memory less inactive page cache (what `docker stats` "
        "shows), sampled with the other metrics, and the container's CPU seconds since it "
        "started. Health: how often each Docker health state was seen when the orchestrator "
        "looked (while waiting for the nodes to answer, and twice per sample).\n\n"
        + _table(
            ("node", "memory mean", "memory peak", "cgroup CPU s", "health at samples"),
            rows,
            numeric="-nnn-",
        )
        + ("\n" + "\n".join(lines) + "\n" if lines else "")
    )


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def _health_text(states: Mapping[str, int]) -> str:
    return ", ".join(f"{state} {count}" for state, count in sorted(states.items())) or "n/a"


def _sci(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def _counters_section(data: RunData, summary: RunSummary) -> str:
    rows = [
        (
            name,
            *(
                _big(n.counters[m]) if m == "bytes_sent" else _num(n.counters[m], 0)
                for m in COUNTER_METRICS
            ),
        )
        for name, n in summary.nodes.items()
    ]
    text = f"## Counters (last value in {METRICS_FILE})\n\n" + _table(
        ("node", *(m.replace("_", " ") for m in COUNTER_METRICS)), rows
    )
    other = sorted(
        m
        for m in data.metrics.names()
        if m not in KNOWN_METRICS and not m.startswith(CPU_METRIC_PREFIX)
    )
    if other:
        text += f"\nOther metrics present (not rendered): {', '.join(f'`{m}`' for m in other)}\n"
    return text


def _appendix(data: RunData) -> str:
    if data.spec_text is None:
        return f"## Appendix: experiment spec\n\n{SPEC_FILE} was not found.\n"
    fence = "````" if "```" in data.spec_text else "```"
    return (
        f"## Appendix: experiment spec ({SPEC_FILE})\n\n"
        f"{fence}yaml\n{data.spec_text.rstrip()}\n{fence}\n"
    )
