"""CPU profiler: thread CPU time attributed to (task, category), as in the paper's Tables 4 and 6.

The original profiler (lib/performance_profiler.hpp) measured wall time, added nested scopes to
their parents as well (so totals double-counted) and wrote into a map without a lock. This one:

- reads `time.thread_time_ns()`, the calling thread's own CPU time, so a scope that sleeps, waits
  on a lock or blocks on a socket costs nothing, and threads running in parallel each count what
  they really used (the paper's tables are CPU seconds too);
- charges every nanosecond to exactly one (task, category): an inner scope's time is taken out of
  the enclosing one, so the sum of all totals is the CPU the measured code used, no more;
- keeps a per-thread stack of open scopes (threading.local) and adds to the shared totals under
  a lock.

Tasks and categories are closed sets (typos raise, and the metric's label set stays bounded).
An inner scope may name only a category and inherit the task of the enclosing scope:

    with profiler.measure("receive_transaction", "ml"):
        accuracy = evaluate(model)
        with profiler.measure(category="blockchain"):   # still receive_transaction
            receipt = sign(...)

CPU spent outside any scope (gRPC's C-core threads, torch's worker threads if a node runs more
than one, the interpreter itself) is not attributed; `coverage()` compares the profiled total
with the process's own CPU counter so that such gaps show. A scope must open and close on the
same thread and must not stay open across an `await` (coroutines sharing a thread would charge
each other's CPU to it).

Overhead: one scope costs two `thread_time_ns()` calls plus a lock round, about 3-4 µs of CPU
here (printed by `tests/unit/test_profiler.py::test_overhead_per_scope_is_reported`), a small
fraction of the cheapest measured operation (an ECDSA P-256 sign, 30 µs).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from node.datadir import CATEGORIES, TASKS
from node.service.resources import cgroup_cpu_seconds
from node.service.threadcpu import native_thread_seconds

DEFAULT_TASK = "other"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class _Frame:
    """One open scope on a thread's stack: where its CPU goes and how much its children took."""

    key: tuple[str, str]
    start_ns: int
    children_ns: int = 0


class Scope:
    """What `Profiler.measure` returns: a context manager, and a decorator.

    It holds no per-use state (that lives on the thread's stack), so one Scope may decorate a
    function that runs on several threads at once or calls itself.
    """

    __slots__ = ("_category", "_profiler", "_task")

    def __init__(self, profiler: Profiler, task: str | None, category: str | None) -> None:
        self._profiler = profiler
        self._task = task
        self._category = category

    def __enter__(self) -> None:
        self._profiler._enter(self._task, self._category)

    def __exit__(self, *exc_info: object) -> None:
        self._profiler._exit()

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return function(*args, **kwargs)

        return wrapper


class Profiler:
    """Thread-CPU totals per (task, category); one per node process (or per node in a test)."""

    def __init__(self, clock: Callable[[], int] = time.thread_time_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._totals_ns: dict[tuple[str, str], int] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._thread_ns: dict[int, int] = {}  # outermost scopes' CPU per thread (ident)
        self._bytes: dict[str, int] = {}  # bytes each task's RPCs moved, for gRPC's own threads
        self._local = threading.local()
        self._process_cpu_at_start = process_cpu_seconds()
        self._startup_cpu: float | None = None
        # gRPC's threads' CPU at mark_ready(); None: this profiler does not charge them
        self._native_at_ready: dict[int, float] | None = None
        self._native_seen: dict[int, float] = {}  # the last reading of each, ended ones kept
        self._native_charged = 0.0  # of their CPU since ready, what is in _apportioned
        self._bytes_charged: dict[str, int] = {}
        self._apportioned: dict[tuple[str, str], float] = {}

    # --- measuring ------------------------------------------------------------------------------

    def measure(self, task: str | None = None, category: str | None = None) -> Scope:
        """A scope charging the CPU it uses to (task, category).

        Either may be left out to inherit it from the enclosing scope on this thread; at the
        outermost level the task defaults to "other" and the category must be given.
        """
        _check_names(task, category)
        return Scope(self, task, category)

    def _stack(self) -> list[_Frame]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _enter(self, task: str | None, category: str | None) -> None:
        stack = self._stack()
        if stack:
            outer_task, outer_category = stack[-1].key
            task = task or outer_task
            category = category or outer_category
        if category is None:
            raise ValueError("an outermost scope must name its category")
        frame = _Frame((task or DEFAULT_TASK, category), 0)
        stack.append(frame)
        # Read the clock last, so that the bookkeeping above is charged to the enclosing scope.
        frame.start_ns = self._clock()

    def _exit(self, task: str | None = None) -> None:
        now = self._clock()
        stack = self._stack()
        if not stack:
            raise RuntimeError("profiler scope closed on a thread that did not open it")
        frame = stack.pop()
        if task is not None:
            frame.key = (task, frame.key[1])
        elapsed = now - frame.start_ns
        if stack:
            stack[-1].children_ns += elapsed
        own = elapsed - frame.children_ns
        with self._lock:
            self._totals_ns[frame.key] = self._totals_ns.get(frame.key, 0) + own
            self._counts[frame.key] = self._counts.get(frame.key, 0) + 1
            if not stack:
                ident = threading.get_ident()
                self._thread_ns[ident] = self._thread_ns.get(ident, 0) + elapsed

    def open_scope(self, task: str, category: str) -> None:
        """`measure()` for a caller that learns the task only at the end (node/service/loopcpu.py:
        an asyncio callback may name its task while it runs); close with `close_scope`."""
        _check_names(task, category)
        self._enter(task, category)

    def close_scope(self, task: str | None = None) -> None:
        """Closes the innermost scope of this thread, charged to `task` if given."""
        _check_names(task, None)
        self._exit(task)

    def retask_outermost(self, task: str) -> None:
        """The outermost open scope of this thread (an asyncio callback's) now charges `task`,
        and scopes opened inside from now on inherit it."""
        _check_names(task, None)
        stack = self._stack()
        if stack:
            stack[0].key = (task, stack[0].key[1])

    def thread_seconds(self, ident: int | None = None) -> float:
        """CPU that outermost scopes claimed on one thread (default: this one): what the event
        loop's residual is measured against."""
        key = threading.get_ident() if ident is None else ident
        with self._lock:
            return self._thread_ns.get(key, 0) / 1e9

    def add_bytes(self, task: str, count: int) -> None:
        """Bytes an RPC of `task` moved (request, response or a message sent); gRPC's own
        threads' CPU is charged to tasks in these proportions."""
        with self._lock:
            self._bytes[task] = self._bytes.get(task, 0) + count

    def mark_ready(self) -> None:
        """The node serves from now: what the process used so far is its start-up, kept apart
        (imports, model, chain verification), and the totals start from zero."""
        self.reset()
        self._startup_cpu = self._process_cpu_at_start
        self._restart_native()

    def _restart_native(self) -> None:
        readings = native_thread_seconds()
        with self._lock:  # a scrape's sample_native_threads must see all of this or none
            self._native_at_ready = readings
            self._native_seen = dict(readings)
            self._native_charged = 0.0
            self._bytes_charged = dict(self._bytes)
            self._apportioned = {}

    def add(self, task: str, category: str, seconds: float) -> None:
        """Charge CPU measured some other way, e.g. an event loop's thread CPU between two marks
        minus what its scopes claimed (a scope cannot stay open across an `await`)."""
        _check_names(task, category)
        if task is None or category is None or seconds < 0:
            raise ValueError("add() needs a task, a category and seconds >= 0")
        with self._lock:
            key = (task, category)
            self._totals_ns[key] = self._totals_ns.get(key, 0) + round(seconds * 1e9)

    # --- reading ----------------------------------------------------------------------------------

    def totals(self) -> dict[tuple[str, str], float]:
        """CPU seconds per (task, category), for scopes that have closed."""
        with self._lock:
            return {key: ns / 1e9 for key, ns in self._totals_ns.items()}

    def apportioned(self) -> dict[tuple[str, str], float]:
        """gRPC's own C threads' CPU since the node was ready, charged to (task, "network") in
        proportion to the bytes each task's RPCs moved (all to "observe" while none moved).

        Those threads poll sockets and frame HTTP/2 for every call at once, so no scope can
        open on them; bytes are what their work scales with. Python threads are left out: their
        CPU is either in scopes or shows as the remainder.
        """
        self.sample_native_threads()
        with self._lock:
            return dict(self._apportioned)

    def sample_native_threads(self) -> None:
        """Charges what gRPC's threads used since the last sample by the bytes moved since then,
        so that each task's share only grows (a Prometheus counter) and follows the traffic of
        its time. The node samples every tick: gRPC's pool ends idle threads, and an ended
        thread's CPU is gone from /proc, so the last reading of each is kept."""
        baseline = self._native_at_ready
        if baseline is None:
            return
        with self._lock:
            seen = self._native_seen | native_thread_seconds()
            self._native_seen = seen
            spent = sum(max(0.0, s - baseline.get(tid, 0.0)) for tid, s in seen.items())
            moved = {
                task: count - self._bytes_charged.get(task, 0)
                for task, count in self._bytes.items()
            }
            for key, seconds in split_by_bytes(spent - self._native_charged, moved).items():
                self._apportioned[key] = self._apportioned.get(key, 0.0) + seconds
            self._native_charged = spent
            self._bytes_charged = dict(self._bytes)

    def attributed_totals(self) -> dict[tuple[str, str], float]:
        """Scopes plus gRPC's threads: every CPU second the profiler can name a task for."""
        return _merged(self.totals(), self.apportioned())

    def counts(self) -> dict[tuple[str, str], int]:
        """How many scopes closed per (task, category)."""
        with self._lock:
            return dict(self._counts)

    def by_category(self) -> dict[str, float]:
        return _sum_by(self.totals(), 1)

    def by_task(self) -> dict[str, float]:
        return _sum_by(self.totals(), 0)

    def total(self) -> float:
        return sum(self.totals().values())

    def blockchain_share(self) -> float:
        """Blockchain CPU over all profiled CPU: the paper's "blockchain overhead" as a fraction."""
        return _blockchain_share(self.totals())

    def process_cpu_seconds(self) -> float:
        """The process's CPU since this profiler was created (or reset): what it can cover.

        A node creates its profiler once its imports are done, so that the one-off cost of
        importing torch (seconds of CPU, no task's) does not count as a gap in coverage.
        """
        return process_cpu_seconds() - self._process_cpu_at_start

    def coverage(self) -> float:
        """Profiled CPU over the process's CPU in the same span; the issue asks for 0.85-1.15."""
        process = self.process_cpu_seconds()
        return self.total() / process if process > 0 else 0.0

    def reset(self) -> None:
        """Forget the totals (scopes open right now still add to them when they close)."""
        with self._lock:
            self._totals_ns.clear()
            self._counts.clear()
            self._thread_ns.clear()
            self._bytes.clear()
            self._process_cpu_at_start = process_cpu_seconds()
        if self._native_at_ready is not None:
            self._restart_native()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready totals and the process counters beside them, for `profile.json`."""
        apportioned = self.apportioned()  # read once, so that every figure below agrees
        totals = _merged(self.totals(), apportioned)
        counts = self.counts()
        profiled = sum(totals.values())
        process = self.process_cpu_seconds()
        return {
            "unit": "cpu_seconds",
            "entries": [
                {
                    "task": task,
                    "category": category,
                    "seconds": seconds,
                    "scopes": counts.get((task, category), 0),
                }
                for (task, category), seconds in sorted(totals.items())
            ],
            "by_task": _sum_by(totals, 0),
            "by_category": _sum_by(totals, 1),
            "profiled_seconds": profiled,
            # Since the profiler started: the figure `profiled_seconds` is checked against.
            "process_cpu_seconds": process,
            "process_cpu_seconds_at_start": self._process_cpu_at_start,
            "coverage": profiled / process if process > 0 else 0.0,
            # Before the node served: imports, building the model, verifying the chain.
            "startup_cpu_seconds": self._startup_cpu,
            "apportioned": [
                {"task": task, "category": category, "seconds": seconds}
                for (task, category), seconds in sorted(apportioned.items())
            ],
            "bytes_by_task": dict(sorted(self._bytes.items())),
            "remainder_seconds": process - profiled,
            "attributed_share": profiled / process if process > 0 else 0.0,
            # The whole cgroup since it was created (the container's life, in Docker); or null.
            "cgroup_cpu_seconds": cgroup_cpu_seconds(),
            "blockchain_share": _blockchain_share(totals),
        }


def _merged(
    totals: dict[tuple[str, str], float], more: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    for key, seconds in more.items():
        totals[key] = totals.get(key, 0.0) + seconds
    return totals


def split_by_bytes(spent: float, moved: dict[str, int]) -> dict[tuple[str, str], float]:
    """`spent` seconds of network CPU shared among tasks by the bytes they moved; all of it
    `observe`'s while nothing moved (the threads then only polled for the testbed)."""
    total = sum(moved.values())
    if spent <= 0:
        return {}
    if not total:
        return {("observe", "network"): spent}
    return {(task, "network"): spent * count / total for task, count in moved.items() if count}


def _check_names(task: str | None, category: str | None) -> None:
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")


def _blockchain_share(totals: dict[tuple[str, str], float]) -> float:
    total = sum(totals.values())
    return _sum_by(totals, 1).get("blockchain", 0.0) / total if total else 0.0


def _sum_by(totals: dict[tuple[str, str], float], index: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, seconds in totals.items():
        out[key[index]] = out.get(key[index], 0.0) + seconds
    return out


# --- the process's own CPU (its memory and its cgroup's figures: node/service/resources.py) ---


def process_cpu_seconds() -> float:
    """User plus system CPU of this process, all threads (C-core and torch pools included)."""
    return time.process_time()
