"""The step mode's figure: the capacity curve, latency against throughput per stage, knee marked.

Left, each stage's p50 and p99 against the judged request's throughput per node, with the
bounds the CPU figures set as vertical lines: where the curve turns up is where queueing begins.
Right, throughput and failed share against users: where more users stop buying throughput.
Imported by plots.py only when a run has stages (matplotlib is slow to import).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from orchestrator.plots import save_figure
from orchestrator.report.capacity import CapacityFigures

OVER_COLOUR = "#d62728"
P50_COLOUR, P99_COLOUR = "#1f77b4", "#ff7f0e"


def plot_capacity(path: Path, capacity: CapacityFigures, *, title: str) -> Path:
    figure = Figure(figsize=(12, 6))
    curve, scaling = figure.subplots(1, 2)
    nodes = max(capacity.nodes, 1)
    stages = capacity.stages
    served = [stage.served / nodes for stage in stages]
    for label, colour, values in (
        ("p50", P50_COLOUR, [stage.p50_ms for stage in stages]),
        ("p99", P99_COLOUR, [stage.p99_ms for stage in stages]),
    ):
        points = [(x, y) for x, y in zip(served, values, strict=True) if y is not None]
        if points:
            curve.plot(*zip(*points, strict=True), "o-", color=colour, label=label, ms=4)
    for stage, x in zip(stages, served, strict=True):
        if stage.p99_ms is not None:
            curve.annotate(
                str(stage.users),
                (x, stage.p99_ms),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize="x-small",
                color=OVER_COLOUR if stage.over else "black",
            )
    if capacity.knee is not None:
        curve.axvline(
            capacity.knee.served / nodes,
            color="black",
            lw=1.2,
            label=f"knee: {capacity.knee.users} users, {capacity.knee.served / nodes:.1f}/s",
        )
    for bound, style, label in (
        (capacity.bound_machine, "--", "CPU bound, this machine"),
        (capacity.bound_one_core, ":", "CPU bound, a core per node"),
    ):
        if bound is not None:
            curve.axvline(bound, ls=style, color="grey", label=f"{label}: {bound:.1f}/s")
    curve.set_yscale("log")
    curve.set_xlabel(f"{capacity.judged} served per node (per second)")
    curve.set_ylabel("latency (ms, log scale); labels: users")
    curve.set_title("capacity curve")
    curve.grid(alpha=0.3, which="both")
    curve.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    users = [stage.users for stage in stages]
    scaling.plot(users, served, "o-", color=P50_COLOUR, label="served per node", ms=4)
    scaling.plot(
        users,
        [stage.throughput / nodes for stage in stages],
        "o--",
        color="grey",
        label="made per node (failed included)",
        ms=3,
    )
    scaling.set_xlabel("Locust users")
    scaling.set_ylabel("requests per second per node")
    scaling.grid(alpha=0.3)
    failed = scaling.twinx()
    failed.bar(users, [100 * s.failure_ratio for s in stages], width=0.6, alpha=0.3, color="red")
    failed.set_ylabel("failed (%)", color=OVER_COLOUR)
    failed.set_ylim(0, 100)
    scaling.set_title("throughput by users")
    scaling.legend(fontsize="small", loc="upper left")
    figure.suptitle(title)
    return save_figure(figure, path)
