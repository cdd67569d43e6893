"""The run report's figures: accuracy, CPU, chain height, for BLADE-FL plagiarism, and for runs
with faults the accuracy with the fault windows shaded.

draw_plots maps a run's data onto them; each figure function takes plain mappings keyed by node
name. Legends sit outside the axes so that they never hide a curve. Only render.py imports this
module, and only when it draws, because matplotlib is slow to import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from orchestrator.plots import (
    finish_cpu_figure,
    mark_no_data,
    node_colours,
    save_figure,
    stacked_bars,
)
from orchestrator.report.cpu_table import TASK_LABELS, category_columns, task_rows
from orchestrator.report.schema import (
    ACCURACY_PLOT,
    CHAIN_PLOT,
    CPU_PLOT,
    FAULTS_PLOT,
    LOAD_CAPACITY_PLOT,
    PLAGIARISM_PLOT,
    RunData,
)
from orchestrator.report.summary import CHANCE_ACCURACY, RunSummary

Points = tuple[Sequence[float], Sequence[float]]  # (times in seconds, values)
# One colour per fault kind, in the faults figure's shading and legend.
FAULT_COLOURS = {
    "crash": "#d62728",
    "pause": "#ff7f0e",
    "latency": "#bcbd22",
    "loss": "#9467bd",
    "partition": "#17becf",
}
FaultSpan = tuple[int, str, float, float | None]  # (number, kind, start, end; None: to the end)


def draw_plots(data: RunData, summary: RunSummary, plot_dir: Path) -> None:
    """plots/*.png, the images report.md links: always all of them, the plagiarism one for a run
    with resemblance tables only, the faults one for a run with faults only, the capacity curve
    for a `dfl load --step` run only."""
    names = list(data.nodes)
    metric = data.metrics

    def series(metric_name: str) -> dict[str, Points]:
        return {n: (s.times, s.values) for n in names if (s := metric.series(n, metric_name)).times}

    plot_accuracy(
        plot_dir / ACCURACY_PLOT,
        series("accuracy_test"),
        series("accuracy_local"),
        node_order=names,
        chance=CHANCE_ACCURACY,
        window=(summary.window_start_s, summary.window_end_s),
        title=f"{data.info.name}: accuracy per node",
    )
    profiles = {n: dict(node.profile.seconds) for n, node in data.nodes.items() if node.profile}
    keys = {key for profile in profiles.values() for key in profile}
    plot_cpu(
        plot_dir / CPU_PLOT,
        profiles,
        node_order=names,
        task_order=task_rows(task for task, _ in keys),
        category_order=category_columns(category for _, category in keys),
        task_labels=TASK_LABELS,
        shares={n: summary.nodes[n].protocol_blockchain_share for n in profiles},
        title=f"{data.info.name}: CPU seconds by category and task",
    )
    plot_chain(
        plot_dir / CHAIN_PLOT,
        series("chain_height"),
        node_order=names,
        end=summary.window_end_s,
        title=f"{data.info.name}: chain height per node",
    )
    if data.rounds is not None and data.rounds.rounds:
        by_address = data.info.node_names()
        spreads: dict[str, tuple[list[float], list[float]]] = {}
        for record in data.rounds.rounds:
            for entry in record.resemblance:
                name = by_address.get(entry.client, entry.client[:8])
                points = spreads.setdefault(name, ([], []))
                points[0].append(record.round)
                points[1].append(entry.difference_std)
        plot_plagiarism(
            plot_dir / PLAGIARISM_PLOT,
            spreads,
            node_order=[*by_address.values(), *sorted(set(spreads) - set(by_address.values()))],
            suspected=[n for n, v in summary.plagiarism.items() if v.suspected],
            title=f"{data.info.name}: difference to the nearest peer's model, per round",
        )
    if summary.faults:
        draw_fault_plot(data, summary, plot_dir / FAULTS_PLOT)
    if summary.load is not None and summary.load.capacity is not None:
        from orchestrator.report.plots_load import plot_capacity

        plot_capacity(
            plot_dir / LOAD_CAPACITY_PLOT,
            summary.load.capacity,
            title=f"{data.info.name}: capacity per node, stage by stage",
        )


def draw_fault_plot(data: RunData, summary: RunSummary, path: Path) -> Path:
    """The Faults section's figure (a simulated run with faults draws it alone)."""
    names = list(data.nodes)
    series = {n: data.metrics.series(n, "accuracy_test") for n in names}
    accuracy = {n: (s.times, s.values) for n, s in series.items() if s.times}
    return plot_faults(
        path,
        accuracy,
        [(f.number, f.kind, f.start_s, f.end_s) for f in summary.faults],
        node_order=names,
        end=summary.window_end_s,
        title=f"{data.info.name}: test-set accuracy and the fault windows",
    )


def _node_legend(
    ax: Axes, names: Sequence[str], colours: Mapping[str, tuple[float, ...]]
) -> Legend | None:
    """One entry per node (its colour), outside the axes on the right."""
    if not names:
        return None
    handles = [Line2D([], [], color=colours[n], lw=2, label=n) for n in names]
    legend = ax.legend(
        handles=handles,
        title="node",
        fontsize="small",
        ncol=1 if len(names) <= 16 else 2,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    return legend


def _time_limits(ax: Axes, series: Sequence[Points], end: float | None) -> None:
    last = max((max(t) for t, _ in series if len(t)), default=0.0)
    ax.set_xlim(0.0, max(end or 0.0, last) or 1.0)


def plot_accuracy(
    path: Path,
    test: Mapping[str, Points],
    local: Mapping[str, Points],
    *,
    node_order: Sequence[str],
    chance: float,
    window: tuple[float, float] | None,
    title: str,
) -> Path:
    """Test-set accuracy solid, local accuracy dashed (same colour per node), chance dotted,
    and the window the final accuracy is averaged over shaded."""
    figure = Figure(figsize=(10, 5))
    ax = figure.add_subplot()
    colours = node_colours(node_order)
    for name in node_order:
        if name in test:
            ax.plot(*test[name], color=colours[name], lw=1.8)
        if name in local:
            ax.plot(*local[name], color=colours[name], lw=1.1, ls="--", alpha=0.85)
    ax.axhline(chance, color="dimgrey", ls=":", lw=1.4)
    if window is not None:
        ax.axvspan(max(window[0], 0.0), window[1], color="grey", alpha=0.12, lw=0)
    if not test and not local:
        mark_no_data(ax, "accuracy samples")
    _time_limits(ax, [*test.values(), *local.values()], window[1] if window else None)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    nodes_legend = _node_legend(ax, [n for n in node_order if n in test or n in local], colours)
    if nodes_legend is not None:
        ax.add_artist(nodes_legend)  # keep it: the next ax.legend() call replaces the axes' legend
    styles = [
        Line2D([], [], color="black", lw=1.8, label="test set"),
        Line2D([], [], color="black", lw=1.1, ls="--", label="local samples"),
        Line2D([], [], color="dimgrey", lw=1.4, ls=":", label=f"chance ({chance:g})"),
        Patch(color="grey", alpha=0.12, label="final-accuracy\nwindow"),
    ]
    ax.legend(
        handles=styles, title="line", fontsize="small", loc="lower left", bbox_to_anchor=(1.01, 0.0)
    )
    return save_figure(figure, path)


def plot_cpu(
    path: Path,
    profiles: Mapping[str, Mapping[tuple[str, str], float]],
    *,
    node_order: Sequence[str],
    task_order: Sequence[str],
    category_order: Sequence[str],
    task_labels: Mapping[str, str],
    shares: Mapping[str, float | None],
    title: str,
) -> Path:
    """Left: CPU seconds per node stacked by category, `shares` (the protocol blockchain share:
    of the protocol tasks' CPU, as the report's) on top of each bar. Right: CPU seconds per task
    (all nodes summed) stacked by category: Table 6 in one picture."""
    figure = Figure(figsize=(12, 5))
    by_node, by_task = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    nodes = [n for n in node_order if n in profiles]
    if not nodes:
        mark_no_data(by_node, "CPU profiles")
        mark_no_data(by_task, "CPU profiles")
    else:
        stacked_bars(
            by_node,
            nodes,
            category_order,
            lambda node, c: sum(s for (_, cat), s in profiles[node].items() if cat == c),
        )
        for index, node in enumerate(nodes):
            total = sum(profiles[node].values())
            if (share := shares.get(node)) is not None:
                by_node.annotate(
                    f"{100 * share:.1f} %",
                    (index, total),
                    ha="center",
                    va="bottom",
                    fontsize="small",
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        by_node.set_xticks(range(len(nodes)), nodes, rotation=30 if len(nodes) > 6 else 0)
        stacked_bars(
            by_task,
            list(task_order),
            category_order,
            lambda task, c: sum(p.get((task, c), 0.0) for p in profiles.values()),
        )
        by_task.set_xticks(
            range(len(task_order)),
            [task_labels.get(t, t).replace(" ", "\n", 1) for t in task_order],
            fontsize="small",
        )
        by_task.legend(
            title="category", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0)
        )
    by_node.set_title("per node (label: blockchain share of protocol tasks)")
    by_node.set_xlabel("node")
    by_task.set_title(f"per task, {len(nodes)} node(s) summed")
    by_task.set_xlabel("task")
    return finish_cpu_figure(figure, (by_node, by_task), title, path)


def plot_chain(
    path: Path,
    heights: Mapping[str, Points],
    *,
    node_order: Sequence[str],
    end: float | None,
    title: str,
) -> Path:
    """Chain height as a step function: a block is appended at an instant, not gradually."""
    figure = Figure(figsize=(10, 4.5))
    ax = figure.add_subplot()
    colours = node_colours(node_order)
    for name in node_order:
        if name in heights:
            ax.step(*heights[name], where="post", color=colours[name], lw=1.6, alpha=0.9)
    _time_limits(ax, list(heights.values()), end)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not heights:
        mark_no_data(ax, "chain_height samples")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("chain height (blocks)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _node_legend(ax, [n for n in node_order if n in heights], colours)
    return save_figure(figure, path)


def plot_plagiarism(
    path: Path,
    spreads: Mapping[str, Points],
    *,
    node_order: Sequence[str],
    suspected: Sequence[str],
    title: str,
) -> Path:
    """BLADE-FL: each client's difference std to its nearest peer per round, on a log scale, so
    that a noisy copy (about sigma) stands orders of magnitude above honest clients. Suspected
    clients are drawn thick and named so in the legend."""
    figure = Figure(figsize=(10, 4.5))
    ax = figure.add_subplot()
    colours = node_colours(node_order)
    shown = [n for n in node_order if n in spreads and len(spreads[n][0])]
    for name in shown:
        ax.plot(
            *spreads[name],
            color=colours[name],
            lw=2.6 if name in suspected else 1.4,
            marker="o",
            ms=3.5,
        )
    if shown:
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        mark_no_data(ax, "resemblance entries")
    ax.set_xlabel("round (block height)")
    ax.set_ylabel("std of (model − nearest peer's model)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if shown:
        handles = [
            Line2D(
                [],
                [],
                color=colours[n],
                lw=2.6 if n in suspected else 1.4,
                label=f"{n} (suspected)" if n in suspected else n,
            )
            for n in shown
        ]
        ax.legend(
            handles=handles,
            title="client",
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    return save_figure(figure, path)


def plot_faults(
    path: Path,
    accuracy: Mapping[str, Points],
    faults: Sequence[FaultSpan],
    *,
    node_order: Sequence[str],
    end: float,
    title: str,
) -> Path:
    """Test-set accuracy per node, each fault's window shaded in its kind's colour and numbered
    as in report.md's Faults table; a fault never lifted is shaded to the end of the run. A
    node's line breaks where it went unsampled (down), rather than bridging the gap."""
    figure = Figure(figsize=(10, 5))
    ax = figure.add_subplot()
    colours = node_colours(node_order)
    for name in node_order:
        if name in accuracy:
            ax.plot(*_broken_at_gaps(*accuracy[name]), color=colours[name], lw=1.6)
    last = max([end, *(max(t) for t, _ in accuracy.values() if len(t))])
    kinds: list[str] = []
    for number, kind, start, stop in faults:
        colour = FAULT_COLOURS.get(kind, "grey")
        finish = last if stop is None else stop
        ax.axvspan(start, finish, color=colour, alpha=0.18, lw=0)
        ax.axvline(start, color=colour, lw=0.8, alpha=0.7)
        ax.text(
            (start + finish) / 2,
            1.0,
            f"#{number}",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize="small",
            color=colour,
        )
        if kind not in kinds:
            kinds.append(kind)
    if not accuracy:
        ax.text(
            0.5,
            0.5,
            "no accuracy samples in this run",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlim(0.0, last or 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("test-set accuracy (fraction correct)")
    ax.set_title(title, pad=16)
    ax.grid(alpha=0.3)
    nodes_legend = _node_legend(ax, [n for n in node_order if n in accuracy], colours)
    if nodes_legend is not None:
        ax.add_artist(nodes_legend)
    shading = [Patch(color=FAULT_COLOURS.get(k, "grey"), alpha=0.35, label=k) for k in kinds]
    ax.legend(
        handles=shading,
        title="fault",
        fontsize="small",
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
    )
    return save_figure(figure, path)


def _broken_at_gaps(times: Sequence[float], values: Sequence[float]) -> Points:
    """The points with a NaN in every gap longer than 1.5 sampling intervals (the median one),
    so that matplotlib leaves it open."""
    if len(times) < 3:
        return times, values
    steps = sorted(b - a for a, b in pairwise(times))
    limit = 1.5 * steps[len(steps) // 2]
    out_t, out_v = [times[0]], [values[0]]
    for (a, b), value in zip(pairwise(times), values[1:], strict=True):
        if limit > 0 and b - a > limit:
            out_t.append((a + b) / 2)
            out_v.append(math.nan)
        out_t.append(b)
        out_v.append(value)
    return out_t, out_v
