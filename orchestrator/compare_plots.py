"""The figures of `dfl compare`: one line or bar per run, in orchestrator/plots.py's style.

Like the run report's figures this uses matplotlib's object API on the Agg canvas (no pyplot, no
display), always writes the file, saying so when there is nothing to draw, and keeps legends
outside the axes. Each run keeps one colour in every figure. The functions take plain mappings
keyed by run label, so they stay independent of how orchestrator/compare.py computes the figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from orchestrator.plots import (
    finish_cpu_figure,
    mark_no_data,
    node_colours,
    save_figure,
    stacked_bars,
)

# (times in seconds, mean, min, max over the nodes)
Band = tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]


def plot_accuracy_comparison(
    path: Path, curves: Mapping[str, Band], *, chance: float, title: str
) -> Path:
    """One solid line per run (mean over its nodes) over a light min..max band; chance dotted."""
    figure = Figure(figsize=(10, 5))
    ax = figure.add_subplot()
    colours = node_colours(list(curves))
    drawn = [label for label, (times, *_) in curves.items() if len(times)]
    for label in drawn:
        times, mean, low, high = curves[label]
        ax.fill_between(times, low, high, color=colours[label], alpha=0.15, lw=0)
        ax.plot(times, mean, color=colours[label], lw=1.8)
    ax.axhline(chance, color="dimgrey", ls=":", lw=1.4)
    if not drawn:
        mark_no_data(ax, "accuracy_test samples")
    last = max((max(curves[label][0]) for label in drawn), default=0.0)
    ax.set_xlim(0.0, last or 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("test-set accuracy (fraction correct)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[label], lw=1.8, label=label) for label in drawn]
    handles.append(Line2D([], [], color="dimgrey", ls=":", lw=1.4, label=f"chance ({chance:g})"))
    ax.legend(
        handles=handles, title="run", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    return save_figure(figure, path)


def plot_cpu_comparison(
    path: Path,
    total: Mapping[str, Mapping[str, float]],
    per_node: Mapping[str, Mapping[str, float]],
    *,
    shares: Mapping[str, float | None],
    category_order: Sequence[str],
    title: str,
) -> Path:
    """Left: CPU seconds summed over each run's nodes; right: per node, labelled with the mean
    blockchain share. Both stacked by category, one bar per run."""
    figure = Figure(figsize=(12, 5))
    summed, mean = figure.subplots(1, 2)
    runs = list(total)
    if not any(total.values()):
        mark_no_data(summed, "CPU profiles")
        mark_no_data(mean, "CPU profiles")
    else:
        _run_bars(summed, runs, category_order, total)
        _run_bars(mean, runs, category_order, per_node)
        _label_shares(mean, runs, per_node, shares)
        mean.legend(
            title="category", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0)
        )
    summed.set_title("summed over the run's nodes")
    mean.set_title("per node (label: mean blockchain share)")
    return finish_cpu_figure(figure, (summed, mean), title, path)


def _run_bars(
    ax: Axes,
    runs: list[str],
    category_order: Sequence[str],
    seconds: Mapping[str, Mapping[str, float]],
) -> None:
    stacked_bars(ax, runs, category_order, lambda run, c: seconds[run].get(c, 0.0))
    ax.set_xticks(range(len(runs)), [run.replace(" (", "\n(", 1) for run in runs])


def _label_shares(
    ax: Axes,
    runs: list[str],
    seconds: Mapping[str, Mapping[str, float]],
    shares: Mapping[str, float | None],
) -> None:
    for index, run in enumerate(runs):
        share = shares.get(run)
        if share is not None:
            ax.annotate(
                f"{100 * share:.1f} %",
                (index, sum(seconds[run].values())),
                ha="center",
                va="bottom",
                fontsize="small",
                xytext=(0, 2),
                textcoords="offset points",
            )
