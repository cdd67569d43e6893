"""The event loop's CPU, charged to the task whose coroutine or callback spent it.

A profiler scope cannot stay open across an `await` (node/service/profiler.py), so the loop
thread's CPU outside engine calls used to land in one lump, "network" of no task: sending a
model to three peers, answering the orchestrator's model fetch and the idle loop all looked
alike. The paper's Table 6 charges network work to the task it serves (broadcasting a
transaction under generate transaction, gathering confirmations under generate block), and the
testbed's own traffic is not the protocol's at all.

asyncio runs every callback and every step of every coroutine through one method,
`asyncio.events.Handle._run`, in the context the callback was scheduled with. So each node
binds a (profiler, task) pair in a context variable, coroutines are started in a context that
names their task (`spawn`), an RPC handler names its own (`charge_to`), and the patched `_run`
wraps each callback in a profiler scope of the task found in its context. The scope's category
is "network": a scope opened inside (an engine call, "blockchain") is taken out of it as usual.
The task is read again when the callback returns, so the step in which an RPC handler names its
task is already charged to it.

What no callback claims (the loop's own polling between callbacks) stays for the node's loop
residual, charged to "observe": the idle loop is the testbed's cost, not the protocol's.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextvars
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from node.service.profiler import Profiler


@dataclass(frozen=True)
class LoopTask:
    """Where the current context's loop CPU goes (a handler renames it by setting a new one)."""

    profiler: Profiler
    task: str


_CURRENT: contextvars.ContextVar[LoopTask | None] = contextvars.ContextVar(
    "dfl_loop_task", default=None
)
_original_run = asyncio.events.Handle._run


def _measured_run(self: asyncio.events.Handle) -> None:
    charge = self._context.get(_CURRENT)
    if charge is None:
        _original_run(self)
        return
    charge.profiler.open_scope(charge.task, "network")
    try:
        _original_run(self)
    finally:
        # The callback may have named its task (charge_to); it replaces the context's LoopTask.
        after = self._context.get(_CURRENT)
        charge.profiler.close_scope(after.task if after is not None else None)


def install() -> None:
    """Patches asyncio once per process; a context without a bound profiler costs one lookup."""
    asyncio.events.Handle._run = _measured_run  # type: ignore[method-assign]


def bind(profiler: Profiler, task: str) -> None:
    """The current context's (and every coroutine started from it from now on) loop CPU goes to
    `task` of `profiler`."""
    install()
    _CURRENT.set(LoopTask(profiler, task))


def charge_to(task: str) -> None:
    """The running coroutine's loop CPU goes to `task` from now on (an RPC handler naming the
    task its request serves). Outside a bound context this does nothing."""
    charge = _CURRENT.get()
    if charge is not None and charge.task != task:
        charge.profiler.retask_outermost(task)  # first: it refuses an unknown task name
        _CURRENT.set(LoopTask(charge.profiler, task))


def moved(count: int) -> None:
    """The running coroutine's task moved `count` bytes over gRPC (node/service/profiler.py's
    `apportioned` splits gRPC's own threads' CPU by these)."""
    charge = _CURRENT.get()
    if charge is not None:
        charge.profiler.add_bytes(charge.task, count)


def context_for(task: str) -> contextvars.Context:
    """A copy of the current context whose loop CPU goes to `task` (unchanged if unbound)."""
    context = contextvars.copy_context()
    charge = context.get(_CURRENT)
    if charge is not None:
        context.run(_CURRENT.set, LoopTask(charge.profiler, task))
    return context


def spawn(coroutine: Coroutine[Any, Any, Any], task: str) -> asyncio.Task[Any]:
    """Starts `coroutine` with its loop CPU charged to `task`."""
    return asyncio.get_running_loop().create_task(coroutine, context=context_for(task))


class LoopResidual:
    """The loop thread's CPU outside every callback (asyncio's own polling and bookkeeping):
    the idle loop, charged to `observe`. Created and claimed on the loop thread."""

    def __init__(self, profiler: Profiler) -> None:
        self._profiler = profiler
        self._thread = threading.get_ident()
        self._cpu_mark = time.thread_time()
        self._claimed_mark = profiler.thread_seconds(self._thread)

    def claim(self) -> None:
        cpu = time.thread_time()
        claimed = self._profiler.thread_seconds(self._thread)
        residual = (cpu - self._cpu_mark) - (claimed - self._claimed_mark)
        if residual > 0:
            self._profiler.add("observe", "network", residual)
        self._cpu_mark, self._claimed_mark = cpu, claimed
