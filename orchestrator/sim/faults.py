"""A spec's fault schedule in the DFL simulator, in virtual time, and what it did.

The moments are the spec's `fault_timeline()` and their bookkeeping is the `FaultSchedule` a
process or container run uses (orchestrator/faults.py): the same active set, the same network
state per node (`network_state`), the same faults.jsonl lines. Only the effects are the
simulator's: a network fault is set on the in-memory transport, where each node's own seeded
`NetworkFaults` (node/service/netfault.py) decides each message's fate; a crash stops a node
and its restart rebuilds its engine from its chain store, which is re-verified on opening, and
its model from its checkpoint (saved at every aggregation, as a node process saves it); a pause
holds the node's events until it resumes.

What it did is written in the layout a run directory has (orchestrator/report/schema.py):
run.json, metrics.csv (one sample per node and accuracy interval; a node that is down is not
sampled) and faults.jsonl. The report's own code then gives the Faults section (faults.md) and
its plot (plots/faults.png), and summary.json's `faults` holds the same rows, so a simulated and
a real run of one spec are read the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.service.netfault import NetworkFault
from orchestrator.faults import FaultSchedule
from orchestrator.report.schema import (
    FAULT_MESSAGE_METRICS,
    FAULTS_FILE,
    FAULTS_PLOT,
    METRICS_FILE,
    PLOTS_DIR,
    RUN_FILE,
    SEND_FAILURES_METRIC,
    NodeSpec,
    run_record,
)
from orchestrator.spec import FaultStep

if TYPE_CHECKING:
    from orchestrator.sim.dfl import DflSimulation

FAULTS_REPORT = "faults.md"  # the Faults section of report.md, for a simulated run
# What a simulation with faults writes besides its own files (plots/ is removed with them).
FAULT_RUN_FILES = (RUN_FILE, METRICS_FILE, FAULTS_FILE, FAULTS_REPORT, f"{PLOTS_DIR}/{FAULTS_PLOT}")


class SimulatedProcesses:
    """What a crash, restart, pause and resume are to a simulated node (ProcessFaults)."""

    def __init__(self, simulation: DflSimulation) -> None:
        self.simulation = simulation

    def peer_address(self, index: int) -> str:
        return self.simulation.names[index]  # how the in-memory transport names a peer

    def crash(self, index: int) -> None:
        self.simulation.network.crash(self.simulation.names[index])

    def restart(self, index: int) -> None:
        self.simulation.restart(index)

    def pause(self, index: int) -> None:
        self.simulation.network.pause(self.simulation.names[index])

    def resume(self, index: int) -> None:
        self.simulation.network.resume(self.simulation.names[index])


class SimulatedFaults:
    """Applies the timeline as virtual time passes and records the run-directory files."""

    def __init__(self, simulation: DflSimulation, out: Path) -> None:
        from orchestrator.driver import MetricsCsv  # the writer every runtime's metrics.csv uses

        self.simulation = simulation
        self.out = out
        self.schedule = FaultSchedule(
            SimulatedProcesses(simulation),
            SimulatedProcesses(simulation).peer_address,
            out / FAULTS_FILE,
        )
        self._steps: Iterator[FaultStep] = iter(simulation.spec.fault_timeline())
        self._next: FaultStep | None = next(self._steps, None)
        self._started = time.time()
        self.metrics = MetricsCsv(out / METRICS_FILE)

    def run_until(self, until: float) -> None:
        """Runs the network to each moment due by `until` and carries it out there."""
        network = self.simulation.network
        while self._next is not None and self._next.time <= until:
            step = self._next
            network.run(step.time)
            updates = self.schedule.apply(
                step.phase, step.fault, step.time, self._heights(), unix=self._started + step.time
            )
            for index, state in updates:
                network.set_network_fault(
                    self.simulation.names[index], NetworkFault.from_message(state)
                )
            self._next = next(self._steps, None)

    def _heights(self) -> dict[str, int]:
        """What GetStatus would answer: the chain heights of the nodes that are up."""
        return {
            name: node.store.height
            for name, node in self.simulation.network.nodes.items()
            if node.status == "up" and node.store is not None
        }

    def sample(self, tick: float, accuracies: Sequence[float]) -> None:
        """One metrics.csv sample per node that is up, with the columns the Faults section
        reads."""
        for accuracy, node in zip(accuracies, self.simulation.network.nodes.values(), strict=True):
            if node.status != "up":
                continue
            counters = node.engine.state.counters
            values = {
                "accuracy_test": float(accuracy),
                "transactions_sent": counters.get("transactions_generated", 0),
                "transactions_received": counters.get("transactions_received", 0),
                "bytes_sent": node.bytes_sent,
                "rejected": sum(node.rejections.values()),
                FAULT_MESSAGE_METRICS["dropped"]: node.fault_messages["dropped"],
                FAULT_MESSAGE_METRICS["delayed"]: node.fault_messages["delayed"],
                SEND_FAILURES_METRIC: node.send_failures,
            }
            if node.store is not None:
                values["chain_height"] = node.store.height
            self.metrics.write(tick, node.name, values)

    def finish(self, ticks: int) -> list[dict[str, Any]]:
        """Resumes what a pause still holds, writes run.json, faults.md and plots/faults.png;
        returns the Faults rows for summary.json."""
        for index in self.schedule.paused():
            self.schedule.processes.resume(index)
        self.metrics.close()
        simulation = self.simulation
        nodes = [
            NodeSpec(
                name=name,
                address=key.address.hex(),
                peers=simulation.network.nodes[name].peers,
                behaviour=host.behaviour.name,
            )
            for name, key, host in zip(
                simulation.names, simulation.keys, simulation.hosts, strict=True
            )
        ]
        record = run_record(
            simulation.spec, "sim", started_at=self._started, duration_s=float(ticks), nodes=nodes
        )
        (self.out / RUN_FILE).write_text(record)
        return write_faults_report(self.out)


def write_faults_report(directory: Path) -> list[dict[str, Any]]:
    """faults.md and plots/faults.png from a run directory's files, by the report's own code;
    returns the rows as summary.json holds them."""
    from orchestrator.report import load_run, summarize
    from orchestrator.report.markdown_faults import faults_section
    from orchestrator.report.plots import draw_fault_plot
    from orchestrator.report.render import json_ready

    data = load_run(directory)
    summary = summarize(data)
    (directory / FAULTS_REPORT).write_text(faults_section(data, summary.faults))
    plots = directory / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    draw_fault_plot(data, summary, plots / FAULTS_PLOT)
    return [json_ready(asdict(fault)) for fault in summary.faults]
