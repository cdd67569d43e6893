"""The figures' common style, drawn with matplotlib's object API and the Agg canvas.

No pyplot: pyplot keeps global figure state and picks a GUI backend, and figures are drawn from
the CLI, from tests and (later) from inside a running orchestrator, none of which has a display.
The run report's figures (orchestrator/report/plots.py), `dfl compare`'s (compare_plots.py) and the
simulator's (sim/figures.py) all go through here, so they look alike: every figure is written
even without data (it then says so), so a report never links a missing image; each node or run
keeps one colour across all figures; CPU bars are stacked by category in the same colours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

CATEGORY_COLOURS = {"ml": "#4878d0", "blockchain": "#ee854a", "network": "#6acc64"}
DPI = 110


def node_colours(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per name, the same in every figure drawn with the same names."""
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def mark_no_data(ax: Axes, what: str) -> None:
    """Says so on empty axes, so that a figure is written whatever the run recorded and a report
    (or a comparison) never links a missing image."""
    ax.text(0.5, 0.5, f"no {what} in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(figure: Figure, path: Path) -> Path:
    """Every figure's one way to disk (layout, DPI, margins), so that the report's, the
    comparison's and the simulator's figures look alike."""
    figure.tight_layout()
    # bbox "tight" also takes in legends placed outside the axes, which tight_layout ignores.
    figure.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return path


def finish_cpu_figure(figure: Figure, axes: Sequence[Axes], title: str, path: Path) -> Path:
    """The CPU figures' common y axis, grid and title, then saved: the run report's and the
    comparison's CPU figures share it so that they read the same."""
    for ax in axes:
        ax.set_ylabel("CPU time (s)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    figure.suptitle(title)
    return save_figure(figure, path)


def stacked_bars(
    ax: Axes, bars: list[str], categories: Sequence[str], seconds: Callable[[str, str], float]
) -> None:
    """Bars stacked by category, with headroom above the tallest for its label; per node here,
    per run in the comparison."""
    bottoms = [0.0] * len(bars)
    for category in categories:
        heights = [seconds(bar, category) for bar in bars]
        ax.bar(
            range(len(bars)),
            heights,
            bottom=bottoms,
            label=category,
            width=0.6,
            color=CATEGORY_COLOURS.get(category),
        )
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    # An explicit limit: empty segments stacked on a bar's top pin autoscaling (sticky edges).
    ax.set_ylim(0.0, 1.12 * max(bottoms, default=0.0) or 1.0)
