"""`dfl compare SPEC --protocols dfl,blade-fl,fedavg --runtime R`: one spec under each protocol.

Each protocol's spec is `under_protocol(spec, protocol, runtime)` (orchestrator/spec/
equal_terms.py: everything but the protocol's own parts equal), run the way its runtime's own
command runs it, so a comparison is never a second code path: the simulator's entry
(orchestrator/sim/run.py, as `dfl simulate`) or the local and docker runtimes with the run
report rendered after (as `dfl run`). Runs go to OUT/<protocol>/, and every spec is derived and
validated before the first run starts, so a spec that cannot run under one of the protocols
fails at once, not after the others have spent their minutes.

Then the runs are read into one shape, `ProtocolResult`, whatever wrote them: a real run's
metrics.csv and profiles (through orchestrator/compare.py's readers), or a simulation's
accuracy.csv / rounds.csv, chain.csv and summary.json. CPU is always the protocol tasks' CPU
(every task but observe and other: the testbed's own measuring), summed over the nodes, so a
simulation and a real run count the same whole. orchestrator/compare_report.py writes the table
and the figures.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.report.schema import CPU_METRIC_PREFIX, RunData, Series
from orchestrator.spec import ExperimentSpec
from orchestrator.spec.equal_terms import Terms, canonical_protocol, terms, under_protocol

TESTBED_TASKS = frozenset({"observe", "other"})  # left out of every CPU figure here
COMPARE_RUNTIMES = ("sim", "local", "docker")


class CompareError(ValueError):
    """A comparison that cannot be made as asked; the message names the fix."""


@dataclass(frozen=True)
class Planned:
    """One protocol's run before it starts: its spec and what the derivation did."""

    protocol: str
    spec: ExperimentSpec
    terms: Terms
    directory: Path


@dataclass(frozen=True)
class ProtocolResult:
    """One protocol's run, as the comparison reads it whatever runtime wrote it."""

    protocol: str
    runtime: str
    directory: Path
    nodes: int
    accuracy_of: str  # "mean over nodes" or "the global model"
    times: tuple[float, ...]  # seconds since start: wall clock, or virtual time in the sim
    mean: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    cpu_at: tuple[float, ...]  # cumulative protocol CPU seconds over all nodes at each time
    cpu_estimated: bool  # True: cpu_at spread over the run in proportion to time (the sim)
    final_accuracy: float | None
    cpu_seconds: dict[str, float]  # protocol tasks' CPU by category, summed over nodes
    bytes_sent_total: float | None
    bytes_sent_by_node: dict[str, float]
    steps: int  # local SGD steps per node, from the derivation
    wall_seconds: float  # how long the run took on this machine
    figures: dict[str, Any] = field(default_factory=dict)  # protocol-specific, as recorded
    notes: tuple[str, ...] = ()

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu_seconds.values())

    @property
    def blockchain_share(self) -> float | None:
        """Blockchain CPU / protocol CPU, pooled over the nodes (the simulator profiles all
        nodes in one profiler, so a per-node mean is not to be had there)."""
        total = self.cpu_total
        return self.cpu_seconds.get("blockchain", 0.0) / total if total > 0 else None


def parse_protocols(text: str) -> list[str]:
    """`dfl,blade-fl,fedavg` as canonical names, each once; UnknownProtocol lists the known."""
    names = [part for part in (p.strip() for p in text.split(",")) if part]
    if len(names) < 2:
        raise CompareError(
            f"--protocols needs at least two protocols separated by commas, got {text!r}"
        )
    protocols = []
    for name in names:
        protocol = canonical_protocol(name)
        if protocol in protocols:
            raise CompareError(f"--protocols names {protocol} twice; give each protocol once")
        protocols.append(protocol)
    return protocols


def plan(spec: ExperimentSpec, protocols: Sequence[str], runtime: str, out: Path) -> list[Planned]:
    """Every protocol's spec, derived and validated before anything runs (SpecError, naming
    the field, for one that cannot run)."""
    if runtime not in COMPARE_RUNTIMES:
        raise CompareError(f"unknown runtime {runtime!r}; known: {', '.join(COMPARE_RUNTIMES)}")
    planned = []
    for protocol in protocols:
        derived = under_protocol(spec, protocol, runtime)
        if runtime == "sim":
            _check_simulable(derived)
        planned.append(Planned(protocol, derived, terms(spec, protocol, runtime), out / protocol))
    return planned


def _check_simulable(spec: ExperimentSpec) -> None:
    """What the simulator refuses, said before the first run instead of after it."""
    if spec.faults and spec.protocol != "dfl":
        from orchestrator.spec import Problem, SpecError

        raise SpecError(
            f"{spec.name} under {spec.protocol}",
            [
                Problem(
                    "faults",
                    f"the {spec.protocol} simulator does not carry out faults; compare with "
                    "--runtime local, or drop them: --set faults=[]",
                )
            ],
        )


def run_planned(
    planned: Sequence[Planned],
    runtime: str,
    *,
    progress: bool = True,
    data_dir: str | Path | None = None,
    replace: bool = False,
    say: Callable[[str], None] = print,
) -> list[ProtocolResult]:
    """Runs each planned spec into its directory, one after the other, and reads it back.

    Every directory is checked first, so that a taken one stops the comparison before the
    first run rather than after it."""
    _check_directories(planned, runtime, replace)
    results = []
    for number, item in enumerate(planned, 1):
        say(f"[{number}/{len(planned)}] {item.protocol}: {runtime} run into {item.directory}")
        started = time.perf_counter()
        if runtime == "sim":
            _simulate(item, progress=progress, data_dir=data_dir, replace=replace)
        else:
            _run_real(item, runtime, progress=progress)
        wall = time.perf_counter() - started
        result = read_result(item, runtime, wall)
        final = "n/a" if result.final_accuracy is None else f"{result.final_accuracy:.3f}"
        say(
            f"[{number}/{len(planned)}] {item.protocol}: done in {wall:.1f} s, final accuracy "
            f"{final}, protocol CPU {result.cpu_total:.1f} s"
        )
        results.append(result)
    return results


def _check_directories(planned: Sequence[Planned], runtime: str, replace: bool) -> None:
    for item in planned:
        directory = item.directory
        if runtime == "sim":
            if (directory / "summary.json").exists() and not replace:
                raise CompareError(
                    f"{directory} holds a finished run; choose another --out, or --force to "
                    "replace it"
                )
        elif directory.exists() and any(directory.iterdir()):
            raise CompareError(f"{directory} is not empty; choose a new --out")


def _simulate(item: Planned, *, progress: bool, data_dir: str | Path | None, replace: bool) -> None:
    from node.learning.training import configure_torch
    from orchestrator.sim.run import simulate

    configure_torch(1)  # as `dfl simulate` by default: every torch thread inside the profile
    simulate(item.spec, item.directory, progress=progress, data_dir=data_dir, replace=replace)


def _run_real(item: Planned, runtime: str, *, progress: bool) -> None:
    """As `dfl run` does it: the runtime's run, then the run report (also after a failure)."""
    from orchestrator.driver import RunFailed
    from orchestrator.report import render_report

    directory = item.directory
    try:
        if runtime == "docker":
            from orchestrator.runtimes.docker import run_docker

            run_docker(item.spec, directory, progress=progress)
        else:
            from orchestrator.runtimes.local import run_local

            run_local(item.spec, directory, progress=progress)
    except RunFailed:
        render_report(directory)
        raise
    render_report(directory)


# ---------------------------------------------------------------------------------------------
# Reading a run back


def read_result(item: Planned, runtime: str, wall: float) -> ProtocolResult:
    if runtime == "sim":
        return _read_sim(item, wall)
    return _read_real(item, runtime, wall)


def _read_real(item: Planned, runtime: str, wall: float) -> ProtocolResult:
    from orchestrator.compare import accuracy_curve, compare, protocol_figures
    from orchestrator.report.readers import load_run
    from orchestrator.report.summary import summarize

    data = load_run(item.directory)
    (row,) = compare([data], item.directory.parent)
    curve = accuracy_curve(data)
    cpu_series = _cpu_series(data)
    sent = {n: v for n, v in row.bytes_sent_by_node.items() if v is not None}
    return ProtocolResult(
        protocol=item.protocol,
        runtime=runtime,
        directory=item.directory,
        nodes=row.nodes,
        accuracy_of="mean over nodes",
        times=curve.times,
        mean=curve.mean,
        minimum=curve.minimum,
        maximum=curve.maximum,
        cpu_at=tuple(_summed_at(cpu_series, t) for t in curve.times),
        cpu_estimated=False,
        final_accuracy=row.final_test_accuracy.mean,
        cpu_seconds=_last_by_category(cpu_series),
        bytes_sent_total=row.bytes_sent_total,
        bytes_sent_by_node=sent,
        steps=item.terms.steps,
        wall_seconds=wall,
        figures=dict(protocol_figures(summarize(data))),
        notes=row.notes,
    )


def _cpu_series(data: RunData) -> dict[tuple[str, str, str], Series]:
    """(node, task, category) -> cumulative CPU series, protocol tasks only."""
    out = {}
    for node in data.nodes:
        for metric, series in data.metrics.by_node.get(node, {}).items():
            if not metric.startswith(CPU_METRIC_PREFIX) or not series.times:
                continue
            task, _, category = metric[len(CPU_METRIC_PREFIX) :].partition(":")
            if task not in TESTBED_TASKS:
                out[(node, task, category)] = series
    return out


def _summed_at(series: Mapping[Any, Series], when: float) -> float:
    """The sum of every cumulative series' latest value at `when` (0 before its first)."""
    total = 0.0
    for s in series.values():
        latest = 0.0
        for t, v in zip(s.times, s.values, strict=True):
            if t > when:
                break
            latest = v
        total += latest
    return total


def _last_by_category(series: Mapping[tuple[str, str, str], Series]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (_, _, category), s in series.items():
        out[category] = out.get(category, 0.0) + s.values[-1]
    return dict(sorted(out.items()))


def _read_sim(item: Planned, wall: float) -> ProtocolResult:
    """A simulation's files: accuracy.csv (DFL: every node) or rounds.csv (the global model of
    a round-based protocol), chain.csv's bytes where the simulator writes them, summary.json's
    CPU by task."""
    directory = item.directory
    summary = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
    notes = []
    per_node = _csv_rows(directory / "accuracy.csv")
    if per_node is not None:
        header, rows = per_node
        columns = [i for i, name in enumerate(header) if name != "tick"]
        measured = set(summary.get("measured_nodes") or [header[i] for i in columns])
        columns = [i for i in columns if header[i] in measured]
        times = tuple(float(r[0]) for r in rows)
        values = [[float(r[i]) for i in columns] for r in rows]
        mean = tuple(sum(v) / len(v) for v in values)
        low, high = tuple(min(v) for v in values), tuple(max(v) for v in values)
        accuracy_of = "mean over nodes"
        if len(columns) < item.spec.nodes.count:
            notes.append(f"accuracy over the honest nodes only: {', '.join(sorted(measured))}")
    else:
        rounds = _csv_rows(directory / "rounds.csv")
        if rounds is None:
            raise CompareError(f"{directory} has neither accuracy.csv nor rounds.csv")
        header, rows = rounds
        t, a = header.index("time"), header.index("accuracy")
        times = tuple(float(r[t]) for r in rows)
        mean = low = high = tuple(float(r[a]) for r in rows)
        accuracy_of = "the global model"
    cpu = _sim_cpu(summary)
    total, end = sum(cpu.values()), (times[-1] if times else 0.0)
    cpu_at = tuple(total * (when / end if end > 0 else 1.0) for when in times)
    sent = _sim_bytes(directory / "chain.csv", summary)
    if not sent:
        notes.append("the simulator records no bytes sent for this protocol")
    final = summary.get("final_accuracy")
    return ProtocolResult(
        protocol=item.protocol,
        runtime="sim",
        directory=directory,
        nodes=item.spec.nodes.count,
        accuracy_of=accuracy_of,
        times=times,
        mean=mean,
        minimum=low,
        maximum=high,
        cpu_at=cpu_at,
        cpu_estimated=True,
        final_accuracy=float(final) if final is not None else (mean[-1] if mean else None),
        cpu_seconds=cpu,
        bytes_sent_total=sum(sent.values()) if sent else None,
        bytes_sent_by_node=sent,
        steps=item.terms.steps,
        wall_seconds=wall,
        figures=_sim_figures(summary),
        notes=tuple(notes),
    )


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]] | None:
    if not path.exists():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    return (rows[0], rows[1:]) if rows else None


def _sim_cpu(summary: Mapping[str, Any]) -> dict[str, float]:
    """summary.json's cpu_by_task, protocol tasks only, by category."""
    out: dict[str, float] = {}
    for entry in summary.get("cpu_by_task") or []:
        if entry["task"] not in TESTBED_TASKS:
            out[entry["category"]] = out.get(entry["category"], 0.0) + float(entry["seconds"])
    return dict(sorted(out.items()))


def _sim_bytes(path: Path, summary: Mapping[str, Any]) -> dict[str, float]:
    """Per node, bytes sent: chain.csv's column (DFL) or summary.json's mapping (FedAvg)."""
    recorded = summary.get("bytes_sent")
    if isinstance(recorded, Mapping):
        return {str(node): float(sent) for node, sent in recorded.items()}
    rows = _csv_rows(path)
    if rows is None or "bytes_sent" not in rows[0]:
        return {}
    header, body = rows
    node, sent = header.index("node"), header.index("bytes_sent")
    return {row[node]: float(row[sent]) for row in body}


SIM_FIGURES = (
    "rounds_done",
    "local_epochs",
    "virtual_time",
    "blocks_finalized",
    "heights",
    "chains_agree",
    "forks",
    "rejected",
    "lazy_clients",
    "process_cpu_seconds",
)


def _sim_figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {key: summary[key] for key in SIM_FIGURES if key in summary}


def scalar_figures(results: Iterable[ProtocolResult]) -> list[str]:
    """Protocol-specific figure names, in first-seen order."""
    names: list[str] = []
    for result in results:
        names += [n for n in result.figures if n not in names]
    return names
