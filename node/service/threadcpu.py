"""CPU time of the threads Python does not know: gRPC's C-core pollers and executors.

A node's process CPU is its Python threads (the event loop, the ML worker, the metrics server),
which the profiler's scopes measure, plus threads that gRPC's C core starts for itself
("event_engine", "grpc_global_tim", ...), which no scope can reach. Linux lists every thread
of a process under /proc/self/task; `schedstat`'s first field is the thread's time on a CPU in
nanoseconds (`stat`'s utime and stime, in clock ticks, are the fallback where the kernel keeps
no schedstat). Threads that Python started are recognised by their native id and left out.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

TASK_DIR = Path("/proc/self/task")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def native_thread_seconds(task_dir: Path = TASK_DIR) -> dict[int, float]:
    """CPU seconds per thread id of every living thread that gRPC started; empty where /proc is
    not there (not Linux).

    Python's own threads are left out by their native id. Of the rest, only threads with a
    name of their own count: gRPC names its threads, while torch's and OpenBLAS's worker pools
    keep the name they inherit from the interpreter, and their work (ML) must not pass for
    network. It stays in the remainder.
    """
    python_threads = {t.native_id for t in threading.enumerate()}
    out: dict[int, float] = {}
    try:
        entries = list(task_dir.iterdir())
        inherited = (task_dir.parent / "comm").read_text().strip()
    except OSError:
        return out
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) in python_threads:
            continue
        try:
            if (entry / "comm").read_text().strip() == inherited:
                continue
        except OSError:
            continue  # it ended
        seconds = thread_seconds(entry)
        if seconds is not None:
            out[int(entry.name)] = seconds
    return out


def thread_seconds(thread_dir: Path) -> float | None:
    """One thread's CPU seconds, or None if it ended while being read."""
    try:
        return int((thread_dir / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        stat = (thread_dir / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start at its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
