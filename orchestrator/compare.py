"""`dfl compare`: finished runs side by side, e.g. a DFL and a BLADE-FL run of one experiment.

A comparison answers "which run learns faster, and at what cost": test-set accuracy against
wall-clock time, CPU seconds by category, the blockchain's (and network's) share of the protocol
tasks' CPU and the bytes each node sent. Every per-run figure comes from the run report's
`load_run` and `summarize`, so a comparison cannot disagree with the runs' own reports, and every
figure is printed as the report prints it (orchestrator/report/cells.py); this module only lines
the runs up. The output goes to a directory of its own (compare.md, compare.json, accuracy.png,
cpu.png), never into a run directory, because a comparison belongs to none of its runs; paths in
it are relative to that directory so that it can be moved along with the runs.

Runs are compared as they were recorded: a run from before the bytes_sent metric existed says
"not recorded" instead of failing, and figures a protocol adds to the run summary (BLADE-FL's)
are picked up by field name, so this module works with summaries older or newer than itself.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.report.cells import duration, num, pct, table
from orchestrator.report.cpu_table import category_columns
from orchestrator.report.readers import load_run
from orchestrator.report.render import json_ready
from orchestrator.report.schema import RunData, Series
from orchestrator.report.summary import CHANCE_ACCURACY, FINAL_WINDOW_S, RunSummary, summarize

DEFAULT_OUT = Path("runs") / "compare"
MARKDOWN_FILE = "compare.md"
JSON_FILE = "compare.json"
ACCURACY_PLOT = "accuracy.png"
CPU_PLOT = "cpu.png"
BYTES_METRIC = "bytes_sent"
NOT_RECORDED = "not recorded"
MIN_RUNS = 2

# Summary fields every run has (shown in their own tables, or of no use side by side). Any other
# field, such as one BLADE-FL adds, is listed under "Protocol-specific figures".
COMMON_RUN_FIELDS = frozenset(
    {
        "name",
        "runtime",
        "protocol",
        "started_at",
        "duration_s",
        "window_s",
        "window_start_s",
        "window_end_s",
        "chance_accuracy",
        "coverage_tolerance",
        "mean_final_test_accuracy",
        "mean_blockchain_share",
        "nodes",
        "plagiarism",  # a per-client table (empty for DFL): each run's report.md shows it
    }
)
COMMON_NODE_FIELDS = frozenset(
    {
        "final_test_accuracy",
        "test_samples_in_window",
        "max_test_accuracy",
        "final_local_accuracy",
        "blockchain_share",
        "cpu_seconds_by_category",
        "profiler_cpu_seconds",
        "process_cpu_seconds",
        "coverage",
        "coverage_flagged",
        "cpu_source",
        "cpu_seconds_by_task",
        "protocol_cpu_seconds",
        "protocol_blockchain_share",
        "protocol_network_share",
        "protocol_ml_share",
        "attributed_share",
        "startup_cpu_seconds",
        "remainder_cpu_seconds",
        "tx_per_block_mean",
        "tx_per_block_min",
        "confirmations_per_block_mean",
        "confirmations_per_block_min",
        "confirmed_fraction_mean",
        "blocks",
        "peers",
        "chain_verifies",
        "chain_problem",
        "counters",
    }
)

Scalar = str | int | float | bool


class TooFewRuns(ValueError):
    """A comparison needs at least two runs."""


@dataclass(frozen=True)
class Spread:
    """One per-node figure over a run's nodes; everything None when no node has it."""

    mean: float | None
    minimum: float | None
    maximum: float | None
    nodes: int  # how many nodes have the figure

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread:
        present = _present(values)
        if not present:
            return cls(None, None, None, 0)
        return cls(sum(present) / len(present), min(present), max(present), len(present))


def _present(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


@dataclass(frozen=True)
class AccuracyCurve:
    """Test-set accuracy over the nodes at every sample time: mean, min and max.

    A node counts from its first sample to its last, holding its latest value in between, so a
    node that died drops out instead of dragging its last accuracy to the end of the run.
    """

    times: tuple[float, ...]
    mean: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]


@dataclass(frozen=True)
class RunComparison:
    label: str  # unique among the compared runs: the legend entry and every table's row key
    directory: str  # relative to the comparison's directory
    name: str
    protocol: str
    runtime: str
    started_at: str
    duration_s: float
    nodes: int
    final_test_accuracy: Spread
    blockchain_share: Spread  # of all profiled CPU, as earlier comparisons gave it
    blockchain_share_by_node: dict[str, float | None]
    # Of the protocol tasks' CPU only (observe and other left out: report/table6.py), the shares
    # the paper's Table 6 and the testbed's targets are about.
    protocol_blockchain_share: Spread
    protocol_blockchain_share_by_node: dict[str, float | None]
    protocol_network_share: Spread
    protocol_network_share_by_node: dict[str, float | None]
    profiled_nodes: int
    cpu_seconds_total: dict[str, float]  # by category, summed over the profiled nodes
    cpu_seconds_node_mean: dict[str, float]  # the same divided by the profiled nodes
    bytes_sent_total: float | None  # over the nodes that recorded it
    bytes_sent: Spread
    bytes_sent_by_node: dict[str, float | None]  # None: the run did not record it for the node
    accuracy: AccuracyCurve
    protocol_figures: dict[str, Scalar]
    notes: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Computing


def compare_runs(directories: Sequence[Path | str], out: Path | str = DEFAULT_OUT) -> Path:
    """Writes OUT/compare.md, compare.json, accuracy.png and cpu.png; returns compare.md's path.

    Every directory is read before anything is written, so a bad argument leaves OUT untouched.
    Raises TooFewRuns for fewer than two directories and NotARunDirectory for one without a
    readable run.json.
    """
    if len(directories) < MIN_RUNS:
        raise TooFewRuns(f"a comparison needs at least {MIN_RUNS} run directories")
    runs = [load_run(directory) for directory in directories]
    out = Path(out)
    comparisons = compare(runs, out)
    out.mkdir(parents=True, exist_ok=True)
    _draw_plots(comparisons, out)
    (out / JSON_FILE).write_text(comparison_json(comparisons))
    path = out / MARKDOWN_FILE
    path.write_text(comparison_markdown(comparisons))
    return path


def compare(runs: Sequence[RunData], out: Path) -> tuple[RunComparison, ...]:
    """The comparison's figures; `out` only anchors the relative run directories."""
    labels = _labels(runs)
    return tuple(_compare_one(run, label, out) for run, label in zip(runs, labels, strict=True))


def _labels(runs: Sequence[RunData]) -> list[str]:
    """Each run is "name (protocol)"; runs sharing that (one spec run twice) add their
    directory's name."""
    plain = [f"{run.info.name} ({run.info.protocol})" for run in runs]
    totals = Counter(plain)
    return _numbered(
        [
            f"{run.info.name} ({run.info.protocol}, {run.directory.resolve().name})"
            if totals[label] > 1
            else label
            for run, label in zip(runs, plain, strict=True)
        ]
    )


def _numbered(labels: Sequence[str]) -> list[str]:
    """The same directory given twice still gets a line and a row of its own."""
    totals, seen = Counter(labels), Counter[str]()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(f"{label} #{seen[label]}" if totals[label] > 1 else label)
    return unique


def _compare_one(data: RunData, label: str, out: Path) -> RunComparison:
    summary = summarize(data)
    shares = {name: node.blockchain_share for name, node in summary.nodes.items()}
    chain = {name: node.protocol_blockchain_share for name, node in summary.nodes.items()}
    network = {name: node.protocol_network_share for name, node in summary.nodes.items()}
    total, node_mean, profiled = _cpu(summary)
    sent = {name: data.metrics.series(name, BYTES_METRIC).last for name in data.nodes}
    recorded = _present(sent.values())
    return RunComparison(
        label=label,
        directory=os.path.relpath(data.directory, out),
        name=data.info.name,
        protocol=data.info.protocol,
        runtime=data.info.runtime,
        started_at=data.info.started_at,
        duration_s=data.info.duration_s,
        nodes=len(data.nodes),
        final_test_accuracy=Spread.of(n.final_test_accuracy for n in summary.nodes.values()),
        blockchain_share=Spread.of(shares.values()),
        blockchain_share_by_node=shares,
        protocol_blockchain_share=Spread.of(chain.values()),
        protocol_blockchain_share_by_node=chain,
        protocol_network_share=Spread.of(network.values()),
        protocol_network_share_by_node=network,
        profiled_nodes=profiled,
        cpu_seconds_total=total,
        cpu_seconds_node_mean=node_mean,
        bytes_sent_total=sum(recorded) if recorded else None,
        bytes_sent=Spread.of(sent.values()),
        bytes_sent_by_node=sent,
        accuracy=accuracy_curve(data),
        protocol_figures=protocol_figures(summary),
        notes=_notes(data),
    )


def _cpu(summary: RunSummary) -> tuple[dict[str, float], dict[str, float], int]:
    """CPU seconds by category summed over the profiled nodes, their per-node mean, and how many
    nodes that is (a node without profile.json or CPU metrics would drag the mean down)."""
    profiled = [n.cpu_seconds_by_category for n in summary.nodes.values() if n.cpu_source]
    categories = category_columns(c for seconds in profiled for c in seconds)
    total = {c: sum(seconds.get(c, 0.0) for seconds in profiled) for c in categories}
    node_mean = {c: s / len(profiled) for c, s in total.items()} if profiled else {}
    return total, node_mean, len(profiled)


def accuracy_curve(data: RunData) -> AccuracyCurve:
    """accuracy_test over the run's nodes at each time any node was evaluated."""
    series = [s for name in data.nodes if (s := data.metrics.series(name, "accuracy_test")).times]
    times, means, lows, highs = [], [], [], []
    for time in sorted({t for s in series for t in s.times}):
        values = [v for s in series if (v := _held(s, time)) is not None]
        times.append(time)
        means.append(sum(values) / len(values))
        lows.append(min(values))
        highs.append(max(values))
    return AccuracyCurve(tuple(times), tuple(means), tuple(lows), tuple(highs))


def _held(series: Series, time: float) -> float | None:
    """The series' latest value at `time`, or None outside its first..last sample."""
    if time > series.times[-1]:
        return None
    index = bisect.bisect_right(series.times, time) - 1
    return series.values[index] if index >= 0 else None


def protocol_figures(summary: RunSummary) -> dict[str, Scalar]:
    """Summary fields beyond the common ones (BLADE-FL's, say): run-level ones as they are,
    numeric per-node ones as their mean over the nodes; nested mappings become dotted names."""
    raw = asdict(summary)
    figures: dict[str, Scalar] = {}
    for name, value in raw.items():
        if name not in COMMON_RUN_FIELDS:
            figures.update(_flatten(name, value))
    figures.update(_node_means((raw.get("nodes") or {}).values()))
    return figures


def _node_means(nodes: Iterable[Mapping[str, object]]) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for node in nodes:
        for name, value in node.items():
            if name in COMMON_NODE_FIELDS:
                continue
            for key, scalar in _flatten(name, value).items():
                if isinstance(scalar, int | float) and not isinstance(scalar, bool):
                    values.setdefault(f"{key} (node mean)", []).append(scalar)
    return {key: sum(v) / len(v) for key, v in values.items()}


def _flatten(name: str, value: object) -> dict[str, Scalar]:
    if isinstance(value, Mapping):
        return {
            k: v for key, sub in value.items() for k, v in _flatten(f"{name}.{key}", sub).items()
        }
    if isinstance(value, Scalar):
        return {name: value}
    return {}  # None, lists and the like: nothing that fits one table cell


def _notes(data: RunData) -> tuple[str, ...]:
    notes = list(data.warnings)
    notes += [
        f"{name}: {node.profile_problem}"
        for name, node in data.nodes.items()
        if node.profile is None
    ]
    return tuple(notes)


# ---------------------------------------------------------------------------------------------
# Rendering


def _draw_plots(runs: Sequence[RunComparison], out: Path) -> None:
    from orchestrator import compare_plots  # matplotlib is heavy: load it only when drawing

    compare_plots.plot_accuracy_comparison(
        out / ACCURACY_PLOT,
        {
            r.label: (r.accuracy.times, r.accuracy.mean, r.accuracy.minimum, r.accuracy.maximum)
            for r in runs
        },
        chance=CHANCE_ACCURACY,
        title="test-set accuracy: mean over nodes (band: min..max)",
    )
    compare_plots.plot_cpu_comparison(
        out / CPU_PLOT,
        {r.label: r.cpu_seconds_total for r in runs},
        {r.label: r.cpu_seconds_node_mean for r in runs},
        shares={r.label: r.protocol_blockchain_share.mean for r in runs},
        category_order=_all_categories(runs),
        title="CPU seconds by category",
    )


def _all_categories(runs: Sequence[RunComparison]) -> list[str]:
    return category_columns(c for r in runs for c in r.cpu_seconds_total)


def comparison_json(runs: Sequence[RunComparison]) -> str:
    document = {
        "plots": {"accuracy": ACCURACY_PLOT, "cpu": CPU_PLOT},
        "runs": [asdict(run) for run in runs],
    }
    return json.dumps(json_ready(document), indent=2) + "\n"


def comparison_markdown(runs: Sequence[RunComparison]) -> str:
    sections = [
        _header(runs),
        _accuracy_section(runs),
        _cpu_section(runs),
        _share_section(runs),
        _bytes_section(runs),
        _protocol_section(runs),
        _notes_section(runs),
    ]
    return "\n".join(s for s in sections if s).rstrip() + "\n"


def _bytes(value: float | None) -> str:
    if value is None:
        return NOT_RECORDED
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def _range(spread: Spread, show: Callable[[float | None], str]) -> str:
    if spread.minimum is None:
        return "n/a"
    return f"{show(spread.minimum)} .. {show(spread.maximum)}"


def _header(runs: Sequence[RunComparison]) -> str:
    rows = [
        (
            r.label,
            f"`{r.directory}`",
            r.protocol,
            r.runtime,
            r.started_at,
            str(r.nodes),
            duration(r.duration_s),
        )
        for r in runs
    ]
    return (
        "# Run comparison\n\n"
        "Run directories are relative to this file; each run's own report is its `report.md` "
        "(`dfl report DIR`).\n\n"
        + table(
            ("run", "directory", "protocol", "runtime", "started at", "nodes", "duration"),
            rows,
            "-----n-",
        )
    )


def _accuracy_section(runs: Sequence[RunComparison]) -> str:
    rows = [
        (
            r.label,
            num(r.final_test_accuracy.mean, 3),
            num(r.final_test_accuracy.minimum, 3),
            f"{r.final_test_accuracy.nodes} of {r.nodes}",
        )
        for r in runs
    ]
    return (
        "## Test-set accuracy\n\n"
        f"Final = each node's mean over its run's final window (the last {FINAL_WINDOW_S:.0f} s; "
        "for a short BLADE-FL run, its last 20 %), then the mean and the minimum over the "
        "nodes. The plot shows the mean over the nodes at each "
        "evaluation against wall-clock time since the run started, with the min..max band "
        f"across nodes; chance is {CHANCE_ACCURACY:.2f}.\n\n"
        + table(("run", "final mean", "final min", "nodes with a final figure"), rows)
        + f"\n![accuracy over time]({ACCURACY_PLOT})\n"
    )


def _cpu_section(runs: Sequence[RunComparison]) -> str:
    categories = _all_categories(runs)
    rows = []
    for r in runs:
        total, mean = r.cpu_seconds_total, r.cpu_seconds_node_mean
        rows.append(
            (
                r.label,
                f"{r.profiled_nodes} of {r.nodes}",
                *(num(total.get(c)) for c in categories),
                num(sum(total.values()) if total else None),
                *(num(mean.get(c)) for c in categories),
                num(sum(mean.values()) if mean else None),
            )
        )
    header = (
        "run",
        "profiled nodes",
        *(f"{c} Σ" for c in categories),
        "total Σ",
        *(f"{c} per node" for c in categories),
        "total per node",
    )
    return (
        "## CPU by category\n\n"
        "CPU seconds (thread CPU time, not wall time) from each node's profile. Σ = summed over "
        "the profiled nodes; per node = that sum divided by the profiled nodes.\n\n"
        + table(header, rows)
        + f"\n![CPU seconds by category]({CPU_PLOT})\n"
    )


def _share_section(runs: Sequence[RunComparison]) -> str:
    protocol = [
        (
            r.label,
            *_share_cells(r.protocol_blockchain_share, r.protocol_blockchain_share_by_node),
            *_share_cells(r.protocol_network_share, r.protocol_network_share_by_node),
        )
        for r in runs
    ]
    rows = [(r.label, *_share_cells(r.blockchain_share, r.blockchain_share_by_node)) for r in runs]
    return (
        "## Blockchain share of CPU\n\n"
        "Per node: blockchain (network) CPU seconds of the protocol tasks / the protocol tasks' "
        "CPU seconds, every task but observe (the node's work for the testbed) and other, as in "
        "the paper's Table 6; then the mean and the range over the nodes.\n\n"
        + table(
            (
                "run",
                "blockchain mean",
                "min .. max",
                "per node",
                "network mean",
                "min .. max",
                "per node",
            ),
            protocol,
            "-nn-nn-",
        )
        + "\nOf all profiled CPU (observe and other included), as earlier comparisons gave it: "
        "blockchain CPU seconds / all profiled CPU seconds.\n\n"
        + table(("run", "mean", "min .. max", "per node"), rows, "-nn-")
    )


def _share_cells(spread: Spread, by_node: Mapping[str, float | None]) -> tuple[str, str, str]:
    """A share's mean, min .. max and per-node figures, as table cells."""
    per_node = ", ".join(f"{n} {pct(s)}" for n, s in by_node.items()) or "n/a"
    return pct(spread.mean), _range(spread, pct), per_node


def _bytes_section(runs: Sequence[RunComparison]) -> str:
    rows = [
        (
            r.label,
            _bytes(r.bytes_sent_total),
            _bytes(r.bytes_sent.mean),
            _range(r.bytes_sent, _bytes) if r.bytes_sent.nodes else NOT_RECORDED,
            ", ".join(f"{n} {_bytes(b)}" for n, b in r.bytes_sent_by_node.items())
            if r.bytes_sent.nodes
            else NOT_RECORDED,
        )
        for r in runs
    ]
    return (
        "## Bytes sent\n\n"
        f"The last value of each node's cumulative `{BYTES_METRIC}` counter: the payload bytes "
        f"it delivered to peers. Runs recorded before the metric existed say {NOT_RECORDED}; "
        "the sum and the mean cover the nodes that recorded it.\n\n"
        + table(("run", "all nodes", "mean per node", "min .. max", "per node"), rows, "-nnn-")
    )


def _protocol_section(runs: Sequence[RunComparison]) -> str:
    rows = [
        (r.label, name, f"{value:.4g}" if isinstance(value, float) else str(value))
        for r in runs
        for name, value in r.protocol_figures.items()
    ]
    if not rows:
        return ""
    return (
        "## Protocol-specific figures\n\n"
        "Run summary fields that not every protocol has (BLADE-FL's, for instance).\n\n"
        + table(("run", "figure", "value"), rows, "--n")
    )


def _notes_section(runs: Sequence[RunComparison]) -> str:
    notes = [f"{r.label}: {note}" for r in runs for note in r.notes]
    if not notes:
        return ""
    return "## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
