"""One simulation, whichever protocol: the entry point `dfl simulate` and `dfl sweep` share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.datasets import load_dataset
from orchestrator.spec import ExperimentSpec

SPEC_FILE = "spec.yaml"


def simulate(
    spec: ExperimentSpec,
    out: Path,
    *,
    chain: bool = True,
    progress: bool = True,
    data_dir: str | Path | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Runs `spec` in the simulator into `out` and returns its summary (also summary.json)."""
    dataset = load_dataset(spec.dataset, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_FILE).write_text(spec.to_yaml(), encoding="utf-8")
    if spec.protocol == "dfl":
        from orchestrator.sim.dfl import DflSimulation

        summary = DflSimulation(spec, dataset, out, chain=chain, progress=progress).run()
    else:
        from orchestrator.sim.blade import BladeSimulation

        summary = BladeSimulation(spec, dataset, out, chain=chain, progress=progress).run()
    if figures:
        from orchestrator.sim.figures import plot_run

        plot_run(out)
    return summary
