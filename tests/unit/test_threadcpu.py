"""gRPC's own threads' CPU, read from a /proc-shaped directory (node/service/threadcpu.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from node.service.threadcpu import native_thread_seconds


def thread(task_dir: Path, tid: int, comm: str, schedstat: str | None, stat: str = "") -> None:
    entry = task_dir / str(tid)
    entry.mkdir(parents=True)
    (entry / "comm").write_text(comm + "\n")
    if schedstat is not None:
        (entry / "schedstat").write_text(schedstat)
    if stat:
        (entry / "stat").write_text(stat)


def test_named_native_threads_count_and_python_and_inherited_ones_do_not(tmp_path: Path) -> None:
    process = tmp_path / "self"
    task_dir = process / "task"
    task_dir.mkdir(parents=True)
    (process / "comm").write_text("python\n")
    thread(task_dir, 101, "event_engine", "2500000000 10 5\n")
    thread(task_dir, 102, "python", "9000000000 10 5\n")  # torch or OpenBLAS: ML, not network
    own = threading.current_thread().native_id
    thread(task_dir, own, "grpc_named_too", "7000000000 1 1\n")  # a Python thread: its scopes
    # No schedstat: utime + stime in clock ticks from stat, after a name holding spaces.
    fields = " ".join(["S"] + ["0"] * 10 + ["150", "50"] + ["0"] * 5)
    thread(task_dir, 103, "grpc_global_tim", None, f"103 (grpc global tim) {fields}\n")
    seconds = native_thread_seconds(task_dir)
    assert set(seconds) == {101, 103}
    assert seconds[101] == 2.5
    assert seconds[103] == 200 / os.sysconf("SC_CLK_TCK")


def test_without_proc_there_is_nothing_to_count(tmp_path: Path) -> None:
    assert native_thread_seconds(tmp_path / "missing" / "task") == {}
