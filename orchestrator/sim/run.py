"""One simulation, whichever protocol: the entry point `dfl simulate` and `dfl sweep` share."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from orchestrator.datasets import load_dataset
from orchestrator.sim import outputs
from orchestrator.sim.faults import FAULT_RUN_FILES
from orchestrator.spec import ExperimentSpec, Problem, SpecError

SPEC_FILE = "spec.yaml"
# Everything a run writes; an unfinished run's leftovers are removed before it starts again.
RUN_FILES = (
    SPEC_FILE,
    outputs.ACCURACY_FILE,
    outputs.WEIGHT_DIFF_FILE,
    outputs.REPUTATION_FILE,
    outputs.CHAIN_FILE,
    outputs.ROUNDS_FILE,
    outputs.SUMMARY_FILE,
    "run.png",
    *FAULT_RUN_FILES,
)


class RunExists(FileExistsError):
    """The directory holds a finished run, which is never overwritten unless asked to."""


def prepare_run_directory(out: Path, *, replace: bool = False) -> None:
    """An empty run directory: a finished run there is refused (or, with `replace`, removed);
    an unfinished one (no summary.json: interrupted, or failed) is cleared, so it can resume.
    Only the files a run writes are touched, whatever else the directory holds."""
    if (out / outputs.SUMMARY_FILE).exists() and not replace:
        raise RunExists(
            f"{out} holds a finished run; choose another --out, or --force to replace it"
        )
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "nodes", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def simulate(
    spec: ExperimentSpec,
    out: Path,
    *,
    chain: bool = True,
    progress: bool = True,
    data_dir: str | Path | None = None,
    figures: bool = True,
    replace: bool = False,
) -> dict[str, Any]:
    """Runs `spec` in the simulator into `out` and returns its summary (also summary.json)."""
    if not chain and spec.protocol == "dfl" and spec.dfl.ttl > 1:
        raise SpecError(
            "--no-chain",
            [
                Problem(
                    "dfl.ttl",
                    f"the chainless simulator hands a model to the neighbours only, not "
                    f"{spec.dfl.ttl} hops on: set dfl.ttl=1, or run with the chain",
                )
            ],
        )
    if spec.faults and spec.protocol != "dfl":
        raise SpecError(
            "dfl simulate",
            [
                Problem(
                    "faults",
                    f"the {spec.protocol} simulator runs in virtual time units, not seconds, "
                    "and does not carry out faults; run this spec with --runtime local or "
                    "docker, or remove `faults:`",
                )
            ],
        )
    dataset = load_dataset(spec.dataset, data_dir)
    prepare_run_directory(out, replace=replace)
    (out / SPEC_FILE).write_text(spec.to_yaml(), encoding="utf-8")
    if spec.protocol == "dfl":
        from orchestrator.sim.dfl import DflSimulation

        summary = DflSimulation(spec, dataset, out, chain=chain, progress=progress).run()
    elif spec.protocol == "fedavg":  # no chain to leave out: `chain` does not apply
        from orchestrator.sim.fedavg import FedAvgSimulation

        summary = FedAvgSimulation(spec, dataset, out, progress=progress).run()
    else:
        from orchestrator.sim.blade import BladeSimulation

        summary = BladeSimulation(spec, dataset, out, chain=chain, progress=progress).run()
    if figures:
        from orchestrator.sim.figures import plot_run

        plot_run(out)
    return summary
