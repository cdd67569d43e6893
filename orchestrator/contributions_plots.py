"""contributions.png: who measured whose models how well, and how each node's share formed.

DFL: left, the node x peer matrix of mean receipt accuracy (row: the generator, column: the peer
that measured its models), the figure in which a poisoner is the row its peers all score at
chance; right, each node's share of the score earned by the end of each time bin. BLADE-FL has
no receipts, so its figure is the plagiarism evidence instead: left, each client's spread
against the round's honest spread (the lazy rule's first test) per round, right, how far its
copy coefficient is from 1 in standard errors (the second). Drawn through orchestrator/plots.py
like every other figure (object API, Agg canvas, one colour per node).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.contributions import DflContributions, accuracy_matrix, score_over_time
from orchestrator.lazy_verdict import COPY_Z, SPREAD_RATIO, ClientRound
from orchestrator.plots import mark_no_data, node_colours, save_figure

PLOT_FILE = "contributions.png"


def _clip(value: float) -> float:
    """Into a log axis' range: an infinite ratio or a zero z-score still shows."""
    return min(max(value, 1e-3), 1e6)


def plot_dfl(result: DflContributions, nodes: Sequence[str], path: Path) -> Path:
    figure = Figure(figsize=(11, 4.6))
    matrix_ax, time_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    means, counts = accuracy_matrix(result, nodes)
    if counts.sum() == 0:
        mark_no_data(matrix_ax, "receipts")
    else:
        image = matrix_ax.imshow(means, cmap="viridis", vmin=0.0, vmax=1.0)
        for (row, column), value in np.ndenumerate(means):
            if counts[row, column]:
                matrix_ax.text(
                    column,
                    row,
                    f"{value:.2f}\n({counts[row, column]})",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value < 0.6 else "black",
                )
        matrix_ax.set_xticks(range(len(nodes)), nodes, rotation=45, ha="right")
        matrix_ax.set_yticks(range(len(nodes)), nodes)
        matrix_ax.set_xlabel("measured by")
        matrix_ax.set_ylabel("generator")
        figure.colorbar(image, ax=matrix_ax, label="mean receipt accuracy (receipts)")
    matrix_ax.set_title(f"accuracy peers measured (chance {result.chance:.2f})")
    shares = score_over_time(result)
    edges = result.bin_edges_s
    ends = np.array(edges[1:]) / 60.0
    colours = node_colours(list(nodes))
    if not any(any(v) for v in shares.values()):
        mark_no_data(time_ax, "model above chance")
    else:
        for name in nodes:
            if name in shares:
                time_ax.plot(ends, shares[name], marker="o", label=name, color=colours[name])
        time_ax.set_xlabel("time (min, end of bin)")
        time_ax.set_ylabel("share of the score so far")
        time_ax.set_ylim(0, 1)
        time_ax.grid(alpha=0.3)
        time_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    time_ax.set_title("contribution over time")
    return save_figure(figure, path)


def plot_blade(rounds: Sequence[ClientRound], clients: Sequence[str], path: Path) -> Path:
    figure = Figure(figsize=(11, 4.2))
    spread_ax, copy_ax = figure.subplots(1, 2)
    colours = node_colours(list(clients))
    if not rounds:
        mark_no_data(spread_ax, "resemblance figures")
        mark_no_data(copy_ax, "resemblance figures")
        return save_figure(figure, path)
    for name in clients:
        own = [r for r in rounds if r.client == name]
        if not own:
            continue
        x = [r.round for r in own]
        lazy = [r for r in own if r.lazy]
        spread = [_clip(r.spread_ratio) for r in own]
        z = [_clip(abs(r.copy_z)) for r in own]
        spread_ax.plot(x, spread, marker="o", label=name, color=colours[name])
        copy_ax.plot(x, z, marker="o", label=name, color=colours[name])
        spread_ax.scatter(
            [r.round for r in lazy], [_clip(r.spread_ratio) for r in lazy],
            s=120, facecolors="none", edgecolors="red",
        )  # fmt: skip
        copy_ax.scatter(
            [r.round for r in lazy], [_clip(abs(r.copy_z)) for r in lazy],
            s=120, facecolors="none", edgecolors="red",
        )  # fmt: skip
    spread_ax.axhline(SPREAD_RATIO, color="grey", linestyle="--", linewidth=1)
    copy_ax.axhline(COPY_Z, color="grey", linestyle="--", linewidth=1)
    for ax in (spread_ax, copy_ax):
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    spread_ax.set_ylabel("difference std / others' median")
    spread_ax.set_title(f"spread (lazy needs >= {SPREAD_RATIO:g})")
    copy_ax.set_ylabel("|copy coefficient - 1| in standard errors")
    copy_ax.set_title(f"copy test (lazy needs <= {COPY_Z:g}); red: flagged lazy")
    copy_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(figure, path)
