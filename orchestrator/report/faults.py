"""What each injected fault did: faults.jsonl's windows against metrics.csv's samples.

faults.jsonl (orchestrator/faults.py FaultRunner) says when each fault began and ended and how
high the nodes' chains were then; metrics.csv says how the nodes fared around it. Everything
here is computed from those two files, so `dfl report DIR` gives the same figures again.

metrics.csv holds one sample per node every evaluation interval, so a time "after the end" is
the time to the first sample that shows the change, and a node that is down (crashed, paused)
is not sampled at all until it is back.

The figures per fault, each per affected node and then over the nodes:

- chain height before: the begin line's; after: the end line's, or the node's last
  chain_height in metrics.csv when the end line has none (a node that was down then) or the
  fault has no end (a crash without restart, a run stopped before the fault ended);
- next transaction and next block: seconds from the end to the first sample whose
  transactions_sent (chain_height) is above the one before; a counter that fell started again
  from 0 (a restarted process), so any value above 0 then counts as a rise;
- accuracy drop: accuracy_test at the last sample at or before the begin minus its minimum over
  the samples in the window (begin < t <= end); a node without samples there (it was down) is
  taken at its first sample after the end, the state the fault left it in;
- recovery: seconds from the end to the first sample at or after it back at the level before;
- messages dropped and delayed (the affected nodes), rejections and send failures (every node):
  how much those counters rose from the last sample at or before the begin to the first at or
  after the end.

Over the nodes, the accuracy drop is the mean; the times are the slowest node's, "not within
the run" when any node never got there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.report.schema import (
    FAULT_MESSAGE_METRICS,
    SEND_FAILURES_METRIC,
    FaultMoment,
    Metrics,
    RunData,
    Series,
)

NEVER = "not within the run"
# A time after a fault's end: seconds, NEVER, or None where it does not apply (the fault has no
# end, or the node has no such samples).
Timing = float | str | None


@dataclass(frozen=True)
class FaultWindow:
    """One fault from its begin line to its end line (`end` None: to the end of the run)."""

    kind: str
    nodes: tuple[int, ...]  # in the order the report lists them (a partition: group by group)
    groups: tuple[tuple[int, ...], ...]  # a partition's groups; () for the other kinds
    fault: Mapping[str, Any]
    start: float
    end: float | None
    heights_before: Mapping[str, int]
    heights_after: Mapping[str, int] | None  # None: no end line


@dataclass(frozen=True)
class NodeFaultFigures:
    """What one fault did to one of its nodes."""

    node: str
    height_before: int | None
    height_after: int | None
    height_after_from_metrics: bool  # not in the end line: the node's last metrics.csv sample
    next_transaction_s: Timing
    next_block_s: Timing
    accuracy_before: float | None
    accuracy_min: float | None
    accuracy_drop: float | None
    recovery_s: Timing


@dataclass(frozen=True)
class FaultSummary:
    """One fault and its figures, per node and over its nodes; summary.json's `faults`."""

    number: int  # 1, 2, ... in order of the begins
    kind: str
    setting: str  # "200 ms ± 50 ms", "20 %", "restart after 30 s", ...; "" when none
    nodes: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]  # a partition's groups; () for the other kinds
    start_s: float
    end_s: float | None  # None: to the end of the run
    by_node: tuple[NodeFaultFigures, ...]
    next_transaction_s: Timing  # the slowest node's
    next_block_s: Timing
    accuracy_drop: float | None  # the mean over the nodes that have one
    recovery_s: Timing  # the slowest node's
    messages_dropped: float | None  # None: metrics.csv has no such counter
    messages_delayed: float | None
    rejections: float | None
    send_failures: float | None


def fault_windows(moments: Iterable[FaultMoment]) -> tuple[list[FaultWindow], int]:
    """The faults as windows, in order of their begins, and how many end lines had no begin.

    An end line closes the earliest open begin of the same fault (the same JSON form).
    """
    windows: list[FaultWindow] = []
    open_begins: dict[str, list[int]] = {}
    strays = 0
    for moment in moments:
        key = json.dumps([moment.kind, moment.fault], sort_keys=True, default=str)
        if moment.phase == "begin":
            groups = _groups(moment)
            nodes = tuple(n for group in groups for n in group) if groups else moment.nodes
            open_begins.setdefault(key, []).append(len(windows))
            windows.append(
                FaultWindow(
                    moment.kind,
                    nodes,
                    groups,
                    moment.fault,
                    moment.time_s,
                    None,
                    moment.chain_heights,
                    None,
                )
            )
        elif open_begins.get(key):
            index = open_begins[key].pop(0)
            begin = windows[index]
            windows[index] = FaultWindow(
                begin.kind,
                begin.nodes,
                begin.groups,
                begin.fault,
                begin.start,
                moment.time_s,
                begin.heights_before,
                moment.chain_heights,
            )
        else:
            strays += 1
    return windows, strays


def _groups(moment: FaultMoment) -> tuple[tuple[int, ...], ...]:
    if moment.kind != "partition":
        return ()
    try:
        return tuple(tuple(int(n) for n in group) for group in moment.fault.get("groups", ()))
    except (TypeError, ValueError):
        return ()


def summarize_faults(data: RunData) -> tuple[FaultSummary, ...]:
    """Every fault of faults.jsonl with its figures; () for a run without the file."""
    if not data.faults:
        return ()
    windows, _ = fault_windows(data.faults)
    names = [n.name for n in data.info.nodes]
    return tuple(
        _summarize(number, window, data, names) for number, window in enumerate(windows, start=1)
    )


def _summarize(
    number: int, window: FaultWindow, data: RunData, names: Sequence[str]
) -> FaultSummary:
    def name(index: int) -> str:
        return names[index] if 0 <= index < len(names) else f"node {index}"

    nodes = [name(i) for i in window.nodes]
    metrics = data.metrics
    by_node = tuple(_node_figures(node, window, data) for node in nodes)
    dropped, delayed = (
        _increase_over(nodes, metrics, metric, window)
        for metric in (FAULT_MESSAGE_METRICS["dropped"], FAULT_MESSAGE_METRICS["delayed"])
    )
    return FaultSummary(
        number=number,
        kind=window.kind,
        setting=fault_setting(window.kind, window.fault),
        nodes=tuple(nodes),
        groups=tuple(tuple(name(i) for i in group) for group in window.groups),
        start_s=window.start,
        end_s=window.end,
        by_node=by_node,
        next_transaction_s=slowest(f.next_transaction_s for f in by_node),
        next_block_s=slowest(f.next_block_s for f in by_node),
        accuracy_drop=_mean(f.accuracy_drop for f in by_node),
        recovery_s=slowest(f.recovery_s for f in by_node),
        messages_dropped=dropped,
        messages_delayed=delayed,
        rejections=_increase_over(names, metrics, "rejected", window),
        send_failures=_increase_over(names, metrics, SEND_FAILURES_METRIC, window),
    )


def _node_figures(node: str, window: FaultWindow, data: RunData) -> NodeFaultFigures:
    metrics = data.metrics
    heights = metrics.series(node, "chain_height")
    after = (window.heights_after or {}).get(node)
    from_metrics = after is None and heights.last is not None
    if from_metrics:
        after = round(heights.last)  # type: ignore[arg-type]
    accuracy = metrics.series(node, "accuracy_test")
    before, lowest = _accuracy_around(accuracy, window.start, window.end)
    return NodeFaultFigures(
        node=node,
        height_before=window.heights_before.get(node),
        height_after=after,
        height_after_from_metrics=from_metrics,
        next_transaction_s=first_rise_after(
            metrics.series(node, "transactions_sent"), window.end, counter=True
        ),
        next_block_s=first_rise_after(heights, window.end, counter=False),
        accuracy_before=before,
        accuracy_min=lowest,
        accuracy_drop=before - lowest if before is not None and lowest is not None else None,
        recovery_s=recovery_after(accuracy, window.end, before),
    )


def _accuracy_around(
    series: Series, start: float, end: float | None
) -> tuple[float | None, float | None]:
    """The last value at or before `start`, and the lowest in (start, end] (or, with none
    there, the first after `end`)."""
    points = list(zip(series.times, series.values, strict=True))
    before = [v for t, v in points if t <= start]
    limit = math.inf if end is None else end
    during = [v for t, v in points if start < t <= limit]
    if not during and end is not None:
        during = [v for t, v in points if t > end][:1]
    return (before[-1] if before else None), (min(during) if during else None)


def first_rise_after(series: Series, end: float | None, *, counter: bool) -> Timing:
    """Seconds from `end` to the first sample above the one before it (the last sample at or
    before `end`, or 0 without one); a `counter` that fell restarted from 0, so a value above 0
    then counts too. None without an end or without samples; NEVER when no sample rises."""
    if end is None or not series.times:
        return None
    previous = 0.0
    for t, value in zip(series.times, series.values, strict=True):
        if t > end and (value > previous or (counter and 0 < value < previous)):
            return t - end
        previous = value
    return NEVER


def recovery_after(series: Series, end: float | None, level: float | None) -> Timing:
    """Seconds from `end` to the first sample at or after it that is back at `level`."""
    if end is None or level is None:
        return None
    for t, value in zip(series.times, series.values, strict=True):
        if t >= end and value >= level:
            return t - end
    return NEVER


def increase(series: Series, start: float, end: float | None) -> float | None:
    """How much a cumulative counter rose from its last sample at or before `start` (0 without
    one) to its first sample at or after `end` (its last sample if none, or `end` None). A fall
    is a restarted process counting from 0 again. None without samples."""
    if not series.times:
        return None
    previous, total = 0.0, 0.0
    for t, value in zip(series.times, series.values, strict=True):
        if t <= start:
            previous = value
            continue
        total += value - previous if value >= previous else value
        previous = value
        if end is not None and t >= end:
            break
    return total


def _increase_over(
    nodes: Iterable[str], metrics: Metrics, metric: str, window: FaultWindow
) -> float | None:
    """The sum of `increase` over the nodes that have the counter; None if none has it."""
    rises = [increase(metrics.series(n, metric), window.start, window.end) for n in nodes]
    present = [r for r in rises if r is not None]
    return sum(present) if present else None


def slowest(timings: Iterable[Timing]) -> Timing:
    """Over nodes: NEVER if any node never got there, else the longest time (None: no node has
    one)."""
    values = list(timings)
    if NEVER in values:
        return NEVER
    times = [v for v in values if isinstance(v, float | int)]
    return max(times) if times else None


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def fault_setting(kind: str, fault: Mapping[str, Any]) -> str:
    """The fault's parameters in words: "200 ms ± 50 ms", "20 %", "restart after 30 s"."""
    try:
        if kind == "crash":
            restart = fault.get("restart_after")
            return "no restart" if restart is None else f"restart after {_span(restart)}"
        if kind == "latency":
            jitter = float(fault.get("jitter") or 0)
            delay = _span(fault["delay"])
            return f"{delay} ± {_span(jitter)}" if jitter else delay
        if kind == "loss":
            return f"{100 * float(fault['probability']):g} %"
        if kind == "partition":
            return f"{len(fault.get('groups', ()))} groups"
    except (KeyError, TypeError, ValueError):
        pass
    return ""


def _span(seconds: object) -> str:
    """0.2 -> "200 ms", 30 -> "30 s"."""
    value = float(seconds)  # type: ignore[arg-type]
    return f"{value * 1000:g} ms" if value < 1 else f"{value:g} s"
