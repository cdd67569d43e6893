"""Carrying out a spec's fault schedule against running nodes, whichever runtime runs them.

The schedule (the spec's `faults:`) is a timeline of begin and end moments. Process faults
(crash, restart, pause, resume) are the runtime's: it knows how to kill, restart, stop and
continue its own nodes. Network faults (latency, jitter, loss, partitions) are the nodes' own
(node/service/netfault.py): at each moment the orchestrator works out every affected node's
whole network state from the faults active then and sends it with the authenticated control call
SetNetworkFault, so overlapping faults of different kinds on one node compose, and an end heals
exactly what it began.

What happened goes to faults.jsonl in the run directory (one line per moment, with the nodes'
chain heights when they answer), which the report's Faults section reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import grpc

from proto.dfl.v1 import node_pb2

log = logging.getLogger(__name__)

PROCESS_KINDS = ("crash", "pause")
NETWORK_KINDS = ("latency", "loss", "partition")


NO_FAULTS_HINT = (
    "faults run on --runtime local and docker, and in `dfl simulate` for DFL; remove `faults:` "
    "for this runtime"
)


@runtime_checkable
class ProcessFaults(Protocol):
    """What a runtime does to one of its nodes (by index) for a process fault, and the address
    its peers know a node by (what a partition cuts)."""

    def peer_address(self, index: int) -> str: ...
    def crash(self, index: int) -> None: ...
    def restart(self, index: int) -> None: ...
    def pause(self, index: int) -> None: ...
    def resume(self, index: int) -> None: ...


def network_state(
    active: Sequence[Any], index: int, address_of: Callable[[int], str]
) -> node_pb2.NetworkFault:
    """Node `index`'s network fault given every active fault: the latency and loss on it, and
    the peers a partition cuts it from (by the address the node's peer list names them with)."""
    fault = node_pb2.NetworkFault()
    cut: set[str] = set()
    for event in active:
        if event.kind == "latency" and index in event.nodes:
            fault.delay_ms = round(event.delay * 1000)
            fault.jitter_ms = round(event.jitter * 1000)
        elif event.kind == "loss" and index in event.nodes:
            fault.loss = event.probability
        elif event.kind == "partition":
            cut |= {address_of(j) for j in event.nodes if event.cut(index, j)}
    fault.cut.extend(sorted(cut))
    return fault


class FaultLog:
    """faults.jsonl: what each moment did, as it happened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def write(self, **record: Any) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps(record) + "\n")


class FaultSchedule:
    """The bookkeeping every runtime shares, simulator included: which faults are active, what
    a moment does to the processes (through the runtime), whose network state it changes, and
    its faults.jsonl line. Time and the network calls are the caller's: real seconds and
    SetNetworkFault for processes and containers, virtual time and the in-memory transport for
    the simulator."""

    def __init__(
        self,
        processes: ProcessFaults,
        address_of: Callable[[int], str],
        log_path: Path,
        on_change: Callable[[str, Sequence[int], bool], None] = lambda kind, nodes, on: None,
    ) -> None:
        self.processes = processes
        self.address_of = address_of
        self.log = FaultLog(log_path)
        self.active: list[Any] = []
        self.on_change = on_change  # (kind, node indices, active): dfl_fault_active

    def apply(
        self, phase: str, fault: Any, at: float, heights: Mapping[str, int], *, unix: float
    ) -> list[tuple[int, node_pb2.NetworkFault]]:
        """Carries out a process fault's moment; returns, for a network fault, each affected
        node's whole network state now, for the caller to set."""
        kind = fault.kind
        if phase == "begin":
            self.active.append(fault)
        else:
            self.active.remove(fault)
        updates = []
        if kind == "crash":
            for index in fault.nodes:
                (self.processes.crash if phase == "begin" else self.processes.restart)(index)
        elif kind == "pause":
            for index in fault.nodes:
                (self.processes.pause if phase == "begin" else self.processes.resume)(index)
        else:
            updates = [
                (index, network_state(self.active, index, self.address_of)) for index in fault.nodes
            ]
        self.on_change(kind, fault.nodes, phase == "begin")
        log.info("fault %s %s on nodes %s at %.1f s", kind, phase, list(fault.nodes), at)
        self.log.write(
            time_s=round(at, 2),
            unix=unix,
            phase=phase,
            kind=kind,
            nodes=list(fault.nodes),
            fault=fault.model_dump(mode="json"),
            chain_heights=dict(heights),
        )
        return updates

    def paused(self) -> list[int]:
        """The nodes an active pause holds stopped."""
        return [index for f in self.active if f.kind == "pause" for index in f.nodes]


class FaultRunner:
    """Walks the spec's timeline in real time from the run's start: process faults through the
    runtime, network faults through each node's SetNetworkFault."""

    def __init__(
        self,
        spec: Any,
        processes: ProcessFaults,
        set_network: Callable[[int, node_pb2.NetworkFault], Any],
        address_of: Callable[[int], str],
        log_path: Path,
        heights: Callable[[], Any] | None = None,
        on_change: Callable[[str, Sequence[int], bool], None] = lambda kind, nodes, on: None,
    ) -> None:
        self.spec = spec
        self.schedule = FaultSchedule(processes, address_of, log_path, on_change)
        self.set_network = set_network  # async (index, fault) -> None
        self.heights = heights  # async () -> {node name: chain height}, for the log

    async def run(self, started: float, stop: asyncio.Event) -> None:
        """Until the timeline is done or `stop` is set; what is active at a stop is undone."""
        loop = asyncio.get_running_loop()
        try:
            for step in self.spec.fault_timeline():
                wait = started + step.time - loop.time()
                if wait > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=wait)
                        break  # stopped before this step
                    except TimeoutError:
                        pass
                await self.apply(step.phase, step.fault, loop.time() - started)
        finally:
            for index in self.schedule.paused():  # a stopped process could not stop cleanly
                self.schedule.processes.resume(index)

    async def apply(self, phase: str, fault: Any, at: float) -> None:
        heights = await self.heights() if self.heights is not None else {}
        updates = self.schedule.apply(phase, fault, at, heights, unix=time.time())
        for index, state in updates:
            try:
                await self.set_network(index, state)
            except grpc.aio.AioRpcError as error:  # a node down by another fault
                log.warning("node %d: network fault not set: %s", index, error.code().name)
