"""The simulator's figures, in the papers' layouts.

- One DFL run: accuracy of every node over ticks above, eq. 5's weight difference per layer below
  (the two parts of each subplot of the DFL paper's Fig. 9). One BLADE-FL run: the global model's
  loss and accuracy after each block.
- A grid set (DFL Fig. 9-11): one cell per case in the set's rows and columns, each cell the mean
  accuracy over its repetitions (one line per node) with the weight difference underneath.
- A curve set (BLADE-FL Fig. 3-4): the final figure (loss) against the column's x, one line per
  row, each point the mean over repetitions with the spread as error bars, the minimum marked.

Drawn with matplotlib's object API on the Agg canvas, in the figures' common style
(orchestrator/plots.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from orchestrator.plots import node_colours, save_figure
from orchestrator.sim import outputs

RUN_FIGURE = "run.png"
SET_FIGURE = "figure.png"


def _accuracy_axes(ax: Axes, ticks: np.ndarray, values: np.ndarray, names: Sequence[str]) -> None:
    colours = node_colours(list(names))
    for column, name in enumerate(names):
        ax.plot(ticks, values[:, column], color=colours[name], lw=0.9, label=name)
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)


def _difference_axes(
    ax: Axes, ticks: np.ndarray, values: np.ndarray, layers: Sequence[str]
) -> None:
    for column, layer in enumerate(layers):
        ax.plot(ticks, values[:, column], lw=0.9, label=layer)
    ax.grid(alpha=0.3)


def plot_run(directory: Path) -> Path:
    """The run's own figure (run.png), from the CSVs it wrote."""
    if (directory / outputs.ROUNDS_FILE).exists():
        return _plot_rounds(directory)
    header, series = outputs.read_series(directory / outputs.ACCURACY_FILE)
    layers, differences = outputs.read_series(directory / outputs.WEIGHT_DIFF_FILE)
    figure = Figure(figsize=(10, 7))
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    _accuracy_axes(top, series[:, 0], series[:, 1:], header[1:])
    top.set_ylabel("accuracy (100 test samples)")
    top.set_title(f"{directory.parent.name}/{directory.name}: (a) accuracy")
    top.legend(title="node", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _difference_axes(bottom, differences[:, 0], differences[:, 1:], layers[1:])
    bottom.set_ylabel("weight difference (eq. 5)")
    bottom.set_xlabel("tick")
    bottom.set_title("(b) model weight difference per layer")
    bottom.legend(title="layer", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(figure, directory / RUN_FIGURE)


def _plot_rounds(directory: Path) -> Path:
    header, series = outputs.read_series(directory / outputs.ROUNDS_FILE)
    column = {name: i for i, name in enumerate(header)}
    figure = Figure(figsize=(8, 4))
    ax = figure.add_subplot()
    rounds = series[:, column["round"]]
    ax.plot(rounds, series[:, column["loss"]], marker="o", color="#4878d0", label="loss")
    ax.set_xlabel("block (round)")
    ax.set_ylabel("test loss of the global model", color="#4878d0")
    twin = ax.twinx()
    twin.plot(rounds, series[:, column["accuracy"]], marker="s", color="#ee854a")
    twin.set_ylabel("test accuracy", color="#ee854a")
    twin.set_ylim(0.0, 1.0)
    ax.set_title(f"{directory.parent.name}/{directory.name}")
    ax.grid(alpha=0.3)
    return save_figure(figure, directory / RUN_FIGURE)


def mean_series(directories: Sequence[Path], file: str) -> tuple[list[str], np.ndarray] | None:
    """The element-wise mean of a CSV over repetitions (cut to the shortest)."""
    tables = [outputs.read_series(d / file) for d in directories if (d / file).exists()]
    if not tables:
        return None
    length = min(len(rows) for _, rows in tables)
    return tables[0][0], np.mean([rows[:length] for _, rows in tables], axis=0)


def plot_grid(
    path: Path,
    title: str,
    rows: Sequence[str],
    columns: Sequence[str],
    cells: dict[tuple[int, int], Sequence[Path]],
) -> Path:
    """The set's grid: accuracy (and weight difference) per case, averaged over repetitions."""
    height = 3.6 * len(rows)
    figure = Figure(figsize=(4.2 * len(columns), height))
    # leave the title a fixed 0.7 inch whatever the number of rows
    grid = figure.add_gridspec(
        len(rows), len(columns), hspace=0.45, wspace=0.25, top=1 - 0.7 / height
    )
    for (r, c), directories in cells.items():
        inner = grid[r, c].subgridspec(2, 1, height_ratios=[3, 1.3], hspace=0.08)
        top = figure.add_subplot(inner[0])
        bottom = figure.add_subplot(inner[1], sharex=top)
        accuracy = mean_series(directories, outputs.ACCURACY_FILE)
        difference = mean_series(directories, outputs.WEIGHT_DIFF_FILE)
        number = r * len(columns) + c
        reps = f" ({len(directories)} runs)" if len(directories) > 1 else ""
        top.set_title(f"{number}: {rows[r]} / {columns[c]}{reps}", fontsize="small")
        if accuracy is None or difference is None:
            top.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=top.transAxes)
            top.set_axis_off()
            bottom.set_axis_off()
            continue
        _accuracy_axes(top, accuracy[1][:, 0], accuracy[1][:, 1:], accuracy[0][1:])
        _difference_axes(bottom, difference[1][:, 0], difference[1][:, 1:], difference[0][1:])
        top.tick_params(labelbottom=False, labelsize="x-small")
        bottom.tick_params(labelsize="x-small")
        if c == 0:
            top.set_ylabel("accuracy", fontsize="small")
            bottom.set_ylabel("w. diff", fontsize="small")
        if r == len(rows) - 1:
            bottom.set_xlabel("tick", fontsize="small")
    figure.suptitle(title, y=1 - 0.2 / height)
    figure.savefig(path, dpi=90, bbox_inches="tight", pad_inches=0.15)
    return path


def plot_curves(
    path: Path,
    title: str,
    x_label: str,
    metric: str,
    lines: dict[str, list[tuple[float, list[float]]]],
) -> Path:
    """`metric` against x, one line per row: mean over repetitions, min-max as error bars."""
    lowest_is_best = "loss" in metric
    figure = Figure(figsize=(8, 5))
    ax = figure.add_subplot()
    for label, points in lines.items():
        points = sorted((x, values) for x, values in points if values)
        if not points:
            continue
        xs = np.array([x for x, _ in points])
        means = np.array([np.mean(v) for _, v in points])
        low = means - np.array([np.min(v) for _, v in points])
        high = np.array([np.max(v) for _, v in points]) - means
        line = ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, label=label)
        best = int(np.argmin(means) if lowest_is_best else np.argmax(means))
        ax.plot(xs[best], means[best], marker="*", ms=16, color=line[0].get_color(), mec="black")
    ax.set_xlabel(x_label)
    ax.set_ylabel(metric.replace("_", " "))
    extreme = "minimum" if lowest_is_best else "maximum"
    ax.set_title(f"{title}\n(star: the {extreme} of each line)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(figure, path)
