"""The run report: what a finished run directory shows, as Markdown, plots and summary.json.

A run (local processes now, Docker later) leaves this layout, and nothing else is read:

    DIR/run.json                    name, runtime, protocol, started_at, duration_s, nodes
    DIR/spec.yaml                   the experiment spec as run (copied into the appendix)
    DIR/metrics.csv                 long format: time_s,node,metric,value
    DIR/nodes/<name>/chain.sqlite   the node's chain store
    DIR/nodes/<name>/profile.json   CPU seconds by (task, category), process CPU, profiled seconds

A node that died may leave no chain store or profile; the report says so rather than failing,
because a run with a crashed node is exactly the kind of run someone wants to look at. The views
follow the paper (section 5.1): accuracy per node over time (Figure 8), CPU seconds by task and
category (Table 6) and blockchain statistics (Table 7). summary.json holds the key figures per
node for the integration tests and `dfl compare`.

Matplotlib is imported only when plots are drawn (orchestrator/plots.py), so importing this
module stays cheap for the CLI.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
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

FINAL_WINDOW_S = 30.0  # "final" accuracy: the mean over the run's last 30 s, not one noisy sample
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
COUNTER_METRICS = ("transactions_sent", "transactions_received", "rejected", "samples_injected")
KNOWN_METRICS = {"accuracy_test", "accuracy_local", "chain_height", *COUNTER_METRICS}
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
    return RunData(directory, info, spec_text, metrics, nodes, tuple(warnings))


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
    """Table 7's figures from one chain store, or None and why there are none."""
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
        try:
            for _, _, data in store.blocks():
                try:
                    block = decode(pb.Block, data)
                except RecordRejected:
                    continue  # verify() below names the first bad block
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
    tx_per_block_mean: float | None
    tx_per_block_min: int | None
    confirmations_per_block_mean: float | None
    confirmations_per_block_min: int | None
    confirmed_fraction_mean: float | None
    blocks: int | None
    peers: int
    chain_verifies: bool | None  # None: no readable chain store
    chain_problem: str | None
    counters: dict[str, float | None]


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


def summarize(data: RunData) -> RunSummary:
    """The report's numbers, computed once so that report.md and summary.json cannot disagree."""
    end = max(data.info.duration_s, data.metrics.end_time)
    window_start = end - FINAL_WINDOW_S
    nodes = {
        name: _summarize_node(node, data.metrics, window_start) for name, node in data.nodes.items()
    }
    return RunSummary(
        name=data.info.name,
        runtime=data.info.runtime,
        protocol=data.info.protocol,
        started_at=data.info.started_at,
        duration_s=data.info.duration_s,
        window_s=FINAL_WINDOW_S,
        window_start_s=window_start,
        window_end_s=end,
        chance_accuracy=CHANCE_ACCURACY,
        coverage_tolerance=COVERAGE_TOLERANCE,
        mean_final_test_accuracy=_mean(n.final_test_accuracy for n in nodes.values()),
        mean_blockchain_share=_mean(n.blockchain_share for n in nodes.values()),
        nodes=nodes,
    )


def _summarize_node(node: NodeData, metrics: Metrics, window_start: float) -> NodeSummary:
    name = node.spec.name
    test = metrics.series(name, "accuracy_test")
    in_window = test.since(window_start)
    profile, chain = node.profile, node.chain
    coverage = profile.coverage if profile else None
    categories = _categories(profile.seconds) if profile else []
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
    )


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
        _chain_section(summary),
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
            notes.append(f"{name}: no accuracy_test samples in the last {FINAL_WINDOW_S:.0f} s")
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
    return (
        "## Accuracy\n\n"
        f"Final = mean over the last {summary.window_s:.0f} s of the run "
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


def _chain_section(summary: RunSummary) -> str:
    rows = []
    for name, n in summary.nodes.items():
        if n.chain_verifies is None:
            verifies = f"no store ({n.chain_problem})"
        else:
            verifies = "yes" if n.chain_verifies else f"no ({n.chain_problem})"
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


def _counters_section(data: RunData, summary: RunSummary) -> str:
    rows = [
        (name, *(_num(n.counters[m], 0) for m in COUNTER_METRICS))
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
