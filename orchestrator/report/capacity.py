"""The step mode's capacity figures: the stages, the knee, and the bound the CPU figures set.

`dfl load --step` writes one line per stage (DIR/load_steps.jsonl, orchestrator/load/steps.py);
the knee is the stage of highest power. Beside it, what the node's own CPU figures say it could
take at most, from the load's two scrapes (load.json):

- per transaction: the CPU the nodes' profilers put on the receive_transaction task (checks,
  evaluation, receipt: ml, blockchain and network), over the models they received;
- one core: 1 / that, the transactions per second a node could take if it had a core to
  itself and did nothing else (its ML runs on one thread, so one core is its ceiling);
- this machine: what is left of its cores once the nodes' other work (training, blocks,
  gossip), the orchestrator's (injection, test-set evaluation) and the load generator's own
  CPU are paid for, spread over the nodes: (cores - other work - orchestrator's cores -
  Locust's cores) / (per transaction + Locust's CPU per request) / nodes. On docker the nodes'
  CPU is their containers', on one machine with the orchestrator's.

A knee well below the machine's bound means the node stops scaling before the CPU runs out
(a lock, a queue, a thread); near it means the CPU is the limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.load.scrape import difference, receive_cpu
from orchestrator.load.steps import StageFigures, knee


@dataclass(frozen=True)
class CapacityFigures:
    """The capacity curve's figures; None where the run did not record what they need."""

    judged: str
    nodes: int
    stages: tuple[StageFigures, ...]
    knee: StageFigures | None
    receive_ms_by_category: dict[str, float]  # CPU ms per received transaction
    receive_ms: float | None
    locust_ms_per_request: float | None
    other_cores: float | None  # the nodes' CPU on everything but receiving transactions
    orchestrator_cores: float | None  # injection, test-set evaluation, scrapes
    machine_cores: int | None
    bound_one_core: float | None  # transactions/s per node
    bound_machine: float | None  # transactions/s per node

    @property
    def knee_per_node(self) -> float | None:
        return self.knee.served / self.nodes if self.knee is not None and self.nodes else None


def capacity_figures(
    settings: Mapping[str, Any], stages: Sequence[StageFigures], requests: int | None
) -> CapacityFigures | None:
    """From load.json's settings and scrapes, the stages and Locust's total request count."""
    step = settings.get("step")
    if not step:
        return None
    nodes = dict(settings.get("nodes") or {})
    cpu: dict[str, float] = {}
    received = other = 0.0
    for entry in nodes.values():
        before, after = entry.get("before") or {}, entry.get("after") or {}
        if not before or not after:
            continue
        gained = difference(after, before)
        receiving = receive_cpu(gained)
        for category, seconds in receiving.items():
            cpu[category] = cpu.get(category, 0.0) + seconds
        received += gained.get("transactions_received", 0.0)
        other += gained.get("process_cpu_seconds", 0.0) - sum(receiving.values())
    span = load_span(settings)
    per_category = {c: 1000 * s / received for c, s in sorted(cpu.items())} if received else {}
    receive_ms = sum(per_category.values()) if per_category else None
    locust_cpu = settings.get("locust_cpu_seconds")
    locust_ms = 1000 * locust_cpu / requests if locust_cpu is not None and requests else None
    other_cores = other / span if span else None
    machine = settings.get("machine_cores")
    bound_machine = None
    orchestrator_cpu = settings.get("orchestrator_cpu_seconds")
    orchestrator_cores = orchestrator_cpu / span if orchestrator_cpu is not None and span else None
    if receive_ms and machine and other_cores is not None and span and nodes:
        locust_cores = (locust_cpu or 0.0) / span
        free = max(machine - other_cores - (orchestrator_cores or 0.0) - locust_cores, 0.0)
        bound_machine = free / ((receive_ms + (locust_ms or 0.0)) / 1000) / len(nodes)
    return CapacityFigures(
        judged=str(step.get("judged", "")),
        nodes=len(nodes),
        stages=tuple(stages),
        knee=knee(stages),
        receive_ms_by_category=per_category,
        receive_ms=receive_ms,
        locust_ms_per_request=locust_ms,
        other_cores=other_cores,
        orchestrator_cores=orchestrator_cores,
        machine_cores=int(machine) if machine else None,
        bound_one_core=1000 / receive_ms if receive_ms else None,
        bound_machine=bound_machine,
    )


def load_span(settings: Mapping[str, Any]) -> float | None:
    """Seconds the load ran (load.json's started_s to ended_s); None if not recorded."""
    started, ended = settings.get("started_s"), settings.get("ended_s")
    if started is None or ended is None or float(ended) <= float(started):
        return None
    return float(ended) - float(started)
