"""report.md's Faults section: one row per fault of faults.jsonl, and per node where a fault
had several.

The figures are the summary's (faults.py computes them and says how); this module only lays
them out.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.report.cells import big, num, table
from orchestrator.report.faults import NEVER, FaultSummary, Timing, fault_windows
from orchestrator.report.schema import (
    FAULT_MESSAGE_METRICS,
    FAULTS_FILE,
    FAULTS_PLOT,
    METRICS_FILE,
    PLOTS_DIR,
    RunData,
)

ABSENT = "—"  # a counter metrics.csv does not carry
FROM_METRICS = "*"  # a height after the fault taken from metrics.csv, not from the end line


def faults_section(data: RunData, faults: Sequence[FaultSummary]) -> str:
    """The section, or "" for a run without faults.jsonl; `faults` is the summary's."""
    if data.faults is None:
        return ""
    parts = ["## Faults\n"]
    strays = fault_windows(data.faults)[1]
    if not faults:
        parts.append(f"{FAULTS_FILE} lists no fault that began.\n")
        return "\n".join(parts)
    parts.append(
        f"From {FAULTS_FILE} (when each fault began and ended, and the chain heights then) and "
        f"{METRICS_FILE} (one sample per node and evaluation interval; a node that is down is "
        "not sampled). Times are seconds since the run started; a time after the end is to the "
        "first sample that shows the change.\n"
    )
    parts.append(
        table(
            (
                "#",
                "kind",
                "nodes",
                "window",
                "chain height before",
                "chain height after",
                "next transaction",
                "next block",
                "accuracy drop",
                "recovery",
                "messages dropped",
                "messages delayed",
                "rejections seen",
            ),
            [_fault_row(fault) for fault in faults],
            numeric="n---nnnnnnnnn",
        )
    )
    parts.append("\n".join(_legend(data, faults)) + "\n")
    if strays:
        parts.append(f"{FAULTS_FILE}: {strays} end lines without a begin were left out.\n")
    parts.append(f"![accuracy with the fault windows]({PLOTS_DIR}/{FAULTS_PLOT})\n")
    if any(len(fault.by_node) > 1 for fault in faults):
        parts.append(_by_node(faults))
    return "\n".join(parts)


def _fault_row(fault: FaultSummary) -> tuple[str, ...]:
    return (
        str(fault.number),
        f"{fault.kind} ({fault.setting})" if fault.setting else fault.kind,
        fault_nodes(fault),
        window(fault.start_s, fault.end_s),
        ", ".join(_height(f.height_before) for f in fault.by_node),
        ", ".join(_height(f.height_after, f.height_after_from_metrics) for f in fault.by_node),
        timing(fault.next_transaction_s),
        timing(fault.next_block_s),
        num(fault.accuracy_drop, 3),
        timing(fault.recovery_s),
        _count(fault.messages_dropped),
        _count(fault.messages_delayed),
        _count(fault.rejections),
    )


def _legend(data: RunData, faults: Sequence[FaultSummary]) -> list[str]:
    lines = [
        "- chain heights: per node, in the order of the nodes column; before is the begin "
        f"line's, after the end line's ({FROM_METRICS}: the node's last chain_height in "
        f"{METRICS_FILE}, as it did not answer at the end or the fault lasted to the end)",
        "- next transaction, next block: from the fault's end to the first sample whose "
        "transactions_sent (chain_height) rose; the slowest node's",
        "- accuracy drop: accuracy_test at the last sample before the begin minus its minimum "
        "in the window (a node not sampled there: its first sample after the end); the mean "
        "over the nodes",
        "- recovery: from the end to the first sample back at the level before the begin; the "
        "slowest node's",
        "- messages dropped and delayed: what the network fault did to the affected nodes' "
        "messages; rejections seen: records refused by any node; both from the last sample "
        "before the begin to the first after the end",
    ]
    names = data.metrics.names()
    missing = [m for m in FAULT_MESSAGE_METRICS.values() if m not in names]
    if missing:
        lines.append(
            f"- {ABSENT}: {METRICS_FILE} has no {' or '.join(missing)} counter (the nodes' "
            "dfl_network_fault_messages_total by fate)"
        )
    failures = [(f.number, f.send_failures) for f in faults if f.send_failures is not None]
    if failures:
        lines.append(
            "- send failures (dfl_send_failures_total, every node) in the same span: "
            + ", ".join(f"#{number} {big(value)}" for number, value in failures)
        )
    return lines


def _by_node(faults: Sequence[FaultSummary]) -> str:
    rows = [
        (
            str(fault.number),
            fault.kind,
            f.node,
            _height(f.height_before),
            _height(f.height_after, f.height_after_from_metrics),
            timing(f.next_transaction_s),
            timing(f.next_block_s),
            num(f.accuracy_before, 3),
            num(f.accuracy_min, 3),
            num(f.accuracy_drop, 3),
            timing(f.recovery_s),
        )
        for fault in faults
        if len(fault.by_node) > 1
        for f in fault.by_node
    ]
    return "### Faults by node\n\n" + table(
        (
            "#",
            "kind",
            "node",
            "chain height before",
            "chain height after",
            "next transaction",
            "next block",
            "accuracy before",
            "accuracy min",
            "accuracy drop",
            "recovery",
        ),
        rows,
        numeric="n--nnnnnnnn",
    )


def fault_nodes(fault: FaultSummary) -> str:
    """ "node2", or a partition's groups: "node0, node1 / node2, node3"."""
    if fault.groups:
        return " / ".join(", ".join(group) for group in fault.groups)
    return ", ".join(fault.nodes)


def window(start: float, end: float | None) -> str:
    """ "60.0–90.0 s", or "60.0 s to the end" for a fault never lifted."""
    return f"{start:.1f} s to the end" if end is None else f"{start:.1f}–{end:.1f} s"


def timing(value: Timing) -> str:
    if value is None:
        return "n/a"
    if value == NEVER:
        return NEVER
    return f"{float(value):.1f} s"


def _height(value: int | None, from_metrics: bool = False) -> str:
    return "n/a" if value is None else f"{value}{FROM_METRICS if from_metrics else ''}"


def _count(value: float | None) -> str:
    return ABSENT if value is None else big(value)
