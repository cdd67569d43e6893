"""The figures of a protocol comparison: time and CPU to a target accuracy, and the plots.

Time to target is the first evaluation at which the accuracy (mean over the nodes, or the global
model's for a protocol that has one) reaches the target; CPU to target is the protocol CPU summed
over the nodes by then. "Not reached" is a result, not a failure: a protocol that never gets
there within the run says so in the table.

The plots follow orchestrator/compare_plots.py (matplotlib's object API on Agg, legends outside
the axes, one colour per protocol in every figure, orchestrator/plots.py's helpers): accuracy
against time (with the target and the clock named), accuracy against CPU seconds, and the bars
of CPU by category, blockchain share and bytes sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.compare_protocols import ProtocolResult
from orchestrator.report.summary import CHANCE_ACCURACY

if TYPE_CHECKING:  # matplotlib is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DEFAULT_TARGET = 0.9
ACCURACY_TIME_PLOT = "accuracy_time.png"
ACCURACY_CPU_PLOT = "accuracy_cpu.png"
COSTS_PLOT = "costs.png"


@dataclass(frozen=True)
class Reached:
    """When a run first reached the target: seconds since start and protocol CPU seconds."""

    seconds: float | None  # None: not reached
    cpu_seconds: float | None

    @property
    def reached(self) -> bool:
        return self.seconds is not None


def time_to_target(result: ProtocolResult, target: float) -> Reached:
    for when, accuracy, cpu in zip(result.times, result.mean, result.cpu_at, strict=True):
        if accuracy >= target:
            return Reached(when, cpu)
    return Reached(None, None)


def time_axis(results: Sequence[ProtocolResult]) -> str:
    """The x axis of accuracy against time, in words that say which clock it is."""
    if all(r.runtime == "sim" for r in results):
        return (
            "virtual time (s): sim ticks for DFL; for a round-based protocol its time model, "
            "alpha per local epoch and beta per block"
        )
    return "wall-clock time since the run started (s)"


def draw(results: Sequence[ProtocolResult], out: Path, target: float) -> dict[str, str]:
    """Writes the three figures into `out`; returns {figure: file name}."""
    _accuracy_time(results, out / ACCURACY_TIME_PLOT, target)
    _accuracy_cpu(results, out / ACCURACY_CPU_PLOT, target)
    _costs(results, out / COSTS_PLOT)
    return {
        "accuracy_time": ACCURACY_TIME_PLOT,
        "accuracy_cpu": ACCURACY_CPU_PLOT,
        "costs": COSTS_PLOT,
    }


def _accuracy_time(results: Sequence[ProtocolResult], path: Path, target: float) -> None:
    """compare_plots' accuracy figure, with the target drawn and the x axis saying which clock
    (virtual time in the simulator), and a global model's curve without a band."""
    from matplotlib.lines import Line2D

    from orchestrator.plots import save_figure

    figure, ax, colours = _accuracy_figure(results)
    handles = []
    for r in _sampled(results):
        ax.fill_between(r.times, r.minimum, r.maximum, color=colours[r.protocol], alpha=0.15, lw=0)
        ax.plot(r.times, r.mean, color=colours[r.protocol], lw=1.8, marker=_marker(r))
        handles.append(
            Line2D(
                [], [], color=colours[r.protocol], lw=1.8, label=f"{r.protocol}: {r.accuracy_of}"
            )
        )
    ax.axhline(target, color="darkred", ls="--", lw=1.0)
    ax.axhline(CHANCE_ACCURACY, color="dimgrey", ls=":", lw=1.4)
    handles.append(Line2D([], [], color="darkred", ls="--", lw=1.0, label=f"target ({target:g})"))
    handles.append(Line2D([], [], color="dimgrey", ls=":", lw=1.4, label="chance"))
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_xlabel(time_axis(results))
    ax.set_ylabel("test-set accuracy (fraction correct)")
    ax.set_title("test-set accuracy against time, one spec under each protocol")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(figure, path)


def _accuracy_figure(
    results: Sequence[ProtocolResult],
) -> tuple[Figure, Axes, dict[str, tuple[float, ...]]]:
    """The figure and axes both accuracy plots draw on, and the colour of each protocol, the
    same in every figure so that a protocol is one colour throughout the report."""
    from matplotlib.figure import Figure

    from orchestrator.plots import node_colours

    figure = Figure(figsize=(10, 5))
    return figure, figure.add_subplot(), node_colours([r.protocol for r in results])


def _sampled(results: Sequence[ProtocolResult]) -> list[ProtocolResult]:
    """The runs with accuracy samples: a run without any has no curve to draw."""
    return [r for r in results if r.times]


def _marker(result: ProtocolResult) -> str | None:
    return "o" if len(result.times) <= 40 else None  # a few rounds: show each one


def _accuracy_cpu(results: Sequence[ProtocolResult], path: Path, target: float) -> None:
    from matplotlib.lines import Line2D

    from orchestrator.plots import mark_no_data, save_figure

    figure, ax, colours = _accuracy_figure(results)
    handles = []
    for r in _sampled(results):
        ax.plot(r.cpu_at, r.mean, color=colours[r.protocol], lw=1.8, marker=_marker(r))
        label = f"{r.protocol}" + (" (CPU spread over the run by time)" if r.cpu_estimated else "")
        handles.append(Line2D([], [], color=colours[r.protocol], lw=1.8, label=label))
    if not handles:
        mark_no_data(ax, "accuracy samples")
    ax.axhline(target, color="darkred", ls="--", lw=1.0)
    ax.axhline(CHANCE_ACCURACY, color="dimgrey", ls=":", lw=1.4)
    handles.append(Line2D([], [], color="darkred", ls="--", lw=1.0, label=f"target ({target:g})"))
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("protocol CPU seconds, cumulative, summed over the nodes")
    ax.set_ylabel("test-set accuracy (mean over nodes / global model)")
    ax.set_title("test-set accuracy against the CPU spent on it")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(figure, path)


def _costs(results: Sequence[ProtocolResult], path: Path) -> None:
    """Three panels, one bar per protocol: CPU by category, blockchain share, bytes sent."""
    from matplotlib.figure import Figure

    from orchestrator.plots import node_colours, save_figure, stacked_bars

    figure = Figure(figsize=(14, 4.8))
    cpu, share, sent = figure.subplots(1, 3)
    names = [r.protocol for r in results]
    by_name: Mapping[str, ProtocolResult] = {r.protocol: r for r in results}
    categories = sorted({c for r in results for c in r.cpu_seconds})
    stacked_bars(cpu, names, categories, lambda n, c: by_name[n].cpu_seconds.get(c, 0.0))
    cpu.set_xticks(range(len(names)), names)
    cpu.set_ylabel("CPU seconds, summed over nodes")
    cpu.set_title("protocol CPU by category")
    cpu.legend(fontsize="small")
    colours = node_colours(names)
    shares = [100 * (by_name[n].blockchain_share or 0.0) for n in names]
    share.bar(range(len(names)), shares, color=[colours[n] for n in names])
    share.set_xticks(range(len(names)), names)
    share.set_ylabel("% of protocol CPU")
    share.set_title("blockchain share of CPU")
    for index, value in enumerate(shares):
        share.annotate(f"{value:.1f} %", (index, value), ha="center", va="bottom", fontsize="small")
    recorded = [by_name[n].bytes_sent_total for n in names]
    sent.bar(
        range(len(names)),
        [(b or 0.0) / 1e6 for b in recorded],
        color=[colours[n] for n in names],
    )
    sent.set_xticks(range(len(names)), names)
    sent.set_ylabel("MB, summed over nodes")
    sent.set_title("bytes sent")
    for index, value in enumerate(recorded):
        text = "not recorded" if value is None else f"{value / 1e6:.1f} MB"
        sent.annotate(
            text, (index, (value or 0.0) / 1e6), ha="center", va="bottom", fontsize="small"
        )
    for ax in (cpu, share, sent):
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle("what each protocol spent")
    figure.tight_layout()
    save_figure(figure, path)
