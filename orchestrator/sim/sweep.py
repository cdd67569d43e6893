"""A set of simulations (a paper figure): a base spec, rows x columns of overrides, repetitions.

A set directory holds `set.yaml` and the base spec it names:

    title: "DFL Fig. 9: non-IID data and attackers"
    base: base.yaml
    figure: grid            # grid: accuracy over ticks per cell; curve: a final figure against x
    repetitions: 1          # default; a row or a column may set its own (the larger wins)
    rows:
      - label: no attack, HalfFedAvg
        set: {dfl.aggregator: half-fedavg}
    columns:
      - label: Dirichlet 1
        set: {nodes.distribution: "dirichlet:1"}
        repetitions: 3

Each cell is the base with the row's then the column's overrides; repetition k runs with the
seed plus k (new label draws, initial model and schedules). Both are overrides validated like a
file, so a repetition whose seed cannot draw the cell's random graph is refused before anything
runs, and every run holds the graph and behaviours its own validation drew. A run lands in
OUT/<row>--<column>/rep<k>/. A run is done when its summary.json exists, its spec.yaml is the
spec planned for it and it ran with the same chain setting: done runs are not run again (an
interrupted sweep resumes where it stopped), and a run left from an edited set is run anew.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.sim import outputs
from orchestrator.sim.run import SPEC_FILE
from orchestrator.spec import ExperimentSpec, Problem, SpecError, load_spec, with_overrides

SET_FILE = "set.yaml"
SWEEP_FILE = "sweep.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Axis(_Strict):
    """A row or a column: its label, its overrides, and optionally its x value and repetitions."""

    label: str
    set: dict[str, Any] = Field(default_factory=dict)
    x: float | None = None  # for curve figures: where the column sits on the x axis
    repetitions: int | None = Field(None, ge=1)


class SetFile(_Strict):
    title: str
    base: str
    figure: Literal["grid", "curve"] = "grid"
    metric: str = "final_accuracy"  # the summary field a curve plots and the table leads with
    x_label: str = ""
    repetitions: int = Field(1, ge=1)
    rows: list[Axis] = Field(min_length=1)
    columns: list[Axis] = Field(min_length=1)


@dataclass(frozen=True, eq=False)  # hashed by identity: a case is a key of its runs' results
class Case:
    row: int
    column: int
    spec: ExperimentSpec
    repetitions: int

    @property
    def slug(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Run:
    case: Case
    repetition: int
    spec: ExperimentSpec
    out: Path

    def done(self, chain: bool) -> bool:
        """Finished, with this very spec and chain setting."""
        summary = self.out / outputs.SUMMARY_FILE
        recorded = self.out / SPEC_FILE
        if not (summary.exists() and recorded.exists()):
            return False
        same_spec = recorded.read_text(encoding="utf-8") == self.spec.to_yaml()
        return same_spec and outputs.read_summary(self.out).get("chain") == chain


@dataclass
class SweepPlan:
    directory: Path
    definition: SetFile
    cases: list[Case]
    out: Path
    runs: list[Run] = field(default_factory=list)

    def pending(self, chain: bool = True) -> list[Run]:
        return [run for run in self.runs if not run.done(chain)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def load_set(
    directory: Path, out: Path | None = None, *, repetitions: int | None = None
) -> SweepPlan:
    """The set in `directory` as a plan of runs, every spec validated before anything runs.

    `repetitions` replaces the count of every case the set repeats (more than once).
    """
    path = directory / SET_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(str(path), [Problem("<file>", f"cannot read it: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [Problem("<yaml>", f"not valid YAML: {exc}")]) from None
    try:
        definition = SetFile.model_validate(raw)
    except ValidationError as exc:
        problems = [
            Problem(".".join(str(p) for p in error["loc"]) or "<root>", error["msg"])
            for error in exc.errors()
        ]
        raise SpecError(str(path), problems) from None
    base = load_spec(directory / definition.base)
    cases = []
    for r, row in enumerate(definition.rows):
        for c, column in enumerate(definition.columns):
            name = f"{slug(row.label)}--{slug(column.label)}"
            overrides = {**row.set, **column.set, "name": name}
            where = f"{path} (row {row.label!r}, column {column.label!r})"
            spec = with_overrides(base, overrides, where)
            count = max(definition.repetitions, row.repetitions or 0, column.repetitions or 0)
            if repetitions is not None and count > 1:
                count = repetitions
            cases.append(Case(r, c, spec, count))
    target = out if out is not None else Path("runs") / directory.name
    plan = SweepPlan(directory, definition, cases, target)
    for case in cases:
        for k in range(case.repetitions):
            where = f"{path} ({case.slug}, repetition {k})"
            spec = with_overrides(case.spec, {"seed": case.spec.seed + k}, where)
            plan.runs.append(Run(case, k, spec, target / case.slug / f"rep{k}"))
    return plan


# --- running ----------------------------------------------------------------------------------


def _run_one(spec: ExperimentSpec, out: str, chain: bool, data_dir: str | None) -> dict:
    """In a worker process: one thread for torch, so that the workers share the cores fairly.

    The spec arrives validated, with what validation derived (pickled with it): a worker runs
    exactly the spec the plan holds, without parsing it again.
    """
    from node.learning.training import configure_torch
    from orchestrator.sim.run import simulate

    configure_torch(1)
    return simulate(spec, Path(out), chain=chain, progress=False, data_dir=data_dir, replace=True)


def run_sweep(
    plan: SweepPlan,
    *,
    jobs: int | None = None,
    chain: bool = True,
    data_dir: str | None = None,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs the plan's pending runs on `jobs` worker processes; returns the sweep's record."""
    jobs = jobs or os.cpu_count() or 1
    pending = plan.pending(chain)
    skipped = len(plan.runs) - len(pending)
    plan.out.mkdir(parents=True, exist_ok=True)
    report(
        f"{plan.definition.title}: {len(plan.runs)} runs in {len(plan.cases)} cases, "
        f"{skipped} already done, {len(pending)} to run on {jobs} worker(s)"
    )
    started = time.time()
    failures: dict[str, str] = {}
    try:
        metric = plan.definition.metric
        _drain(list(pending), jobs, chain, data_dir, metric, failures, started, report)
    except BrokenProcessPool as exc:  # a worker died (killed, out of memory): stop cleanly
        report(f"a worker process died ({exc}); the runs not finished are left for a resume")
        failures["<pool>"] = f"BrokenProcessPool: {exc}"
    return _record(plan, jobs, chain, len(pending), skipped, failures, started)


def _drain(
    queue: list[Run],
    jobs: int,
    chain: bool,
    data_dir: str | None,
    metric: str,
    failures: dict[str, str],
    started: float,
    report: Callable[[str], None],
) -> None:
    """Runs the queue on a pool of `jobs` workers, reporting each run as it ends."""
    total = len(queue)
    done_count = 0
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures: dict[Future[dict], Run] = {}
        while queue or futures:
            while queue and len(futures) < jobs:
                run = queue.pop(0)
                future = pool.submit(_run_one, run.spec, str(run.out), chain, data_dir)
                futures[future] = run
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                run = futures.pop(future)
                done_count += 1
                elapsed = time.time() - started
                try:
                    summary = future.result()
                except BrokenProcessPool:
                    raise
                except Exception as exc:  # a run's failure is reported, the others go on
                    failures[str(run.out)] = f"{type(exc).__name__}: {exc}"
                    report(f"[{done_count}/{total}] FAILED {run.out}: {exc}")
                    continue
                left = elapsed / done_count * (total - done_count)
                report(
                    f"[{done_count}/{total}] {run.case.slug} rep{run.repetition}: "
                    f"{metric} {summary.get(metric)} "
                    f"in {summary.get('wall_seconds')} s ({elapsed / 60:.1f} min elapsed, "
                    f"about {left / 60:.0f} min left)"
                )


def _record(
    plan: SweepPlan,
    jobs: int,
    chain: bool,
    ran: int,
    skipped: int,
    failures: dict[str, str],
    started: float,
) -> dict[str, Any]:
    finished_at = time.time()
    record = {
        "set": str(plan.directory),
        "title": plan.definition.title,
        "jobs": jobs,
        "chain": chain,
        "runs": len(plan.runs),
        "ran": ran,
        "skipped": skipped,
        "failed": failures,
        "started": started,
        "elapsed_seconds": round(finished_at - started, 1),
        "run_wall_seconds_total": round(sum(_wall(run) for run in plan.runs), 1),
    }
    history = _history(plan.out)
    history.append(record)
    (plan.out / SWEEP_FILE).write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    return record


def _wall(run: Run) -> float:
    path = run.out / outputs.SUMMARY_FILE
    if not path.exists():
        return 0.0
    return float(outputs.read_summary(run.out).get("wall_seconds") or 0.0)


def _history(out: Path) -> list[dict[str, Any]]:
    path = out / SWEEP_FILE
    if not path.exists():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")))


def completed_summaries(plan: SweepPlan, chain: bool = True) -> Mapping[Case, list[dict[str, Any]]]:
    """Each case's summaries of the repetitions that are done (with this chain setting)."""
    out: dict[Case, list[dict[str, Any]]] = {case: [] for case in plan.cases}
    for run in plan.runs:
        if run.done(chain):
            out[run.case].append(outputs.read_summary(run.out))
    return out
