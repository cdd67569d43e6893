"""The CPU profiler charges thread CPU, once, to the innermost scope, across threads.

Real CPU is burnt by spinning until the thread's own CPU clock has advanced, so the expected
figures do not depend on how fast this machine is; tolerances cover scheduler and clock noise.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from node.service.profiler import Profiler
from node.service.resources import cgroup_cpu_seconds, cgroup_memory_bytes

TOLERANCE = 0.02  # seconds of CPU a scope may gain from bookkeeping and clock granularity


def burn(seconds: float) -> None:
    """Spin until this thread has used `seconds` of CPU."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(200))


class FakeClock:
    """A thread clock the test advances by hand: exact arithmetic for the nesting rules."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def test_inner_scope_time_is_taken_out_of_the_outer_one_exactly() -> None:
    clock = FakeClock()
    profiler = Profiler(clock=clock)
    with profiler.measure("receive_transaction", "ml"):
        clock.ns += 100
        with profiler.measure(category="blockchain"):
            clock.ns += 30
            with profiler.measure("update_model", "network"):
                clock.ns += 7
            clock.ns += 3
        clock.ns += 50
    assert profiler.totals() == {
        ("receive_transaction", "ml"): 150e-9,
        ("receive_transaction", "blockchain"): 33e-9,
        ("update_model", "network"): 7e-9,
    }
    assert profiler.total() == pytest.approx(190e-9)


def test_nested_real_cpu_is_attributed_once() -> None:
    profiler = Profiler()
    start = time.thread_time()
    with profiler.measure("generate_transaction", "ml"):
        burn(0.05)
        with profiler.measure(category="blockchain"):
            burn(0.1)
            with profiler.measure(category="network"):
                burn(0.05)
        burn(0.05)
    spent = time.thread_time() - start

    totals = profiler.totals()
    assert set(totals) == {
        ("generate_transaction", "ml"),
        ("generate_transaction", "blockchain"),
        ("generate_transaction", "network"),
    }
    # Double counting would put 0.3 s under ml and 0.15 s under blockchain.
    assert 0.1 <= totals["generate_transaction", "ml"] < 0.1 + TOLERANCE
    assert 0.1 <= totals["generate_transaction", "blockchain"] < 0.1 + TOLERANCE
    assert 0.05 <= totals["generate_transaction", "network"] < 0.05 + TOLERANCE
    assert profiler.total() == pytest.approx(spent, abs=TOLERANCE)
    assert profiler.by_task() == {"generate_transaction": pytest.approx(profiler.total())}
    assert profiler.blockchain_share() == pytest.approx(0.4, abs=0.05)


def test_category_or_task_alone_inherits_the_other_from_the_enclosing_scope() -> None:
    clock = FakeClock()
    profiler = Profiler(clock=clock)
    with profiler.measure("update_model", "ml"):
        clock.ns += 8
        with profiler.measure(category="blockchain"):
            clock.ns += 1
        with profiler.measure("generate_block"):
            clock.ns += 2
    with profiler.measure(category="network"):  # outermost: the task defaults to "other"
        clock.ns += 4
    assert profiler.totals() == {
        ("update_model", "ml"): 8e-9,
        ("update_model", "blockchain"): 1e-9,
        ("generate_block", "ml"): 2e-9,
        ("other", "network"): 4e-9,
    }


def test_names_outside_the_closed_sets_and_a_bare_outer_scope_are_refused() -> None:
    profiler = Profiler()
    with pytest.raises(ValueError, match="unknown task"):
        profiler.measure("receive_transactions", "ml")
    with pytest.raises(ValueError, match="unknown category"):
        profiler.measure("mine", "hashing")
    with pytest.raises(ValueError, match="category"), profiler.measure("mine"):
        pass
    assert profiler.totals() == {}


def test_sleeping_in_a_scope_costs_no_cpu() -> None:
    profiler = Profiler()
    wall = time.monotonic()
    with profiler.measure("generate_block", "network"):
        time.sleep(0.3)
    assert time.monotonic() - wall >= 0.3  # the original profiler would have recorded this
    assert profiler.total() < 0.01


def test_parallel_threads_are_each_counted_in_full() -> None:
    profiler = Profiler()
    barrier = threading.Barrier(2)

    def work(task: str) -> None:
        barrier.wait()
        with profiler.measure(task, "ml"):
            burn(0.2)

    threads = [threading.Thread(target=work, args=(task,)) for task in ("train", "mine")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals = profiler.totals()
    assert 0.2 <= totals["train", "ml"] < 0.2 + TOLERANCE
    assert 0.2 <= totals["mine", "ml"] < 0.2 + TOLERANCE


def test_no_update_is_lost_when_many_threads_close_scopes_at_once() -> None:
    profiler = Profiler()
    scope = profiler.measure("other", "network")  # one Scope shared by every thread
    threads_count, per_thread = 8, 5000

    def work() -> None:
        for _ in range(per_thread):
            with scope, profiler.measure(category="blockchain"):
                pass

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert profiler.counts() == {
        ("other", "network"): threads_count * per_thread,
        ("other", "blockchain"): threads_count * per_thread,
    }


def test_a_scope_closed_on_another_thread_is_an_error() -> None:
    profiler = Profiler()
    scope = profiler.measure("other", "ml")
    scope.__enter__()
    errors: list[BaseException] = []

    def close_elsewhere() -> None:
        try:
            scope.__exit__(None, None, None)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=close_elsewhere)
    thread.start()
    thread.join()
    scope.__exit__(None, None, None)
    assert len(errors) == 1
    assert profiler.counts() == {("other", "ml"): 1}


def test_decorator_measures_each_call_including_recursion() -> None:
    clock = FakeClock()
    profiler = Profiler(clock=clock)

    @profiler.measure("verify_block", "blockchain")
    def verify(depth: int) -> int:
        clock.ns += 10
        return depth if depth == 0 else verify(depth - 1)

    assert verify(3) == 0
    assert verify.__name__ == "verify"
    assert profiler.totals() == {("verify_block", "blockchain"): 40e-9}
    assert profiler.counts() == {("verify_block", "blockchain"): 4}


def test_coverage_of_a_fully_scoped_cpu_bound_loop_is_within_15_percent() -> None:
    profiler = Profiler()
    with profiler.measure("receive_transaction", "ml"):
        burn(0.3)
        with profiler.measure(category="blockchain"):
            burn(0.1)
    process = profiler.process_cpu_seconds()
    print(f"profiled {profiler.total():.3f} s, process {process:.3f} s")
    assert 0.85 <= profiler.coverage() <= 1.15


def test_coverage_shows_cpu_spent_outside_scopes() -> None:
    profiler = Profiler()
    with profiler.measure("train", "ml"):
        burn(0.1)
    burn(0.2)  # unattributed, like a C-core thread's work
    assert profiler.coverage() < 0.5


def test_snapshot_is_json_and_agrees_with_the_totals() -> None:
    clock = FakeClock()
    profiler = Profiler(clock=clock)
    with profiler.measure("generate_block", "blockchain"):
        clock.ns += 3_000_000_000
        with profiler.measure(category="network"):
            clock.ns += 1_000_000_000
    snapshot = json.loads(json.dumps(profiler.snapshot()))
    assert snapshot["entries"] == [
        {"task": "generate_block", "category": "blockchain", "seconds": 3.0, "scopes": 1},
        {"task": "generate_block", "category": "network", "seconds": 1.0, "scopes": 1},
    ]
    assert snapshot["profiled_seconds"] == 4.0
    assert snapshot["by_category"] == {"blockchain": 3.0, "network": 1.0}
    assert snapshot["blockchain_share"] == 0.75
    assert snapshot["process_cpu_seconds"] >= 0
    assert snapshot["process_cpu_seconds_at_start"] > 0


def test_reset_forgets_totals() -> None:
    profiler = Profiler()
    with profiler.measure("other", "ml"):
        burn(0.01)
    profiler.reset()
    assert profiler.totals() == {}
    assert profiler.total() == 0


def test_cgroup_v2_usage_is_read_in_seconds(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    (tmp_path / "cgroup.procs").write_text(f"{os.getpid()}\n")  # the cgroup is this process's
    assert cgroup_cpu_seconds(tmp_path) == 1.5


def test_cgroup_v1_usage_is_read_in_seconds(tmp_path: Path) -> None:
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("2500000000\n")
    (tmp_path / "cpuacct" / "cgroup.procs").write_text(f"{os.getpid()}\n")
    assert cgroup_cpu_seconds(tmp_path) == 2.5


def test_cgroup_reader_returns_none_without_a_cgroup(tmp_path: Path) -> None:
    assert cgroup_cpu_seconds(tmp_path) is None
    assert cgroup_memory_bytes(tmp_path) is None


def test_cgroup_v2_memory_leaves_out_inactive_page_cache(tmp_path: Path) -> None:
    (tmp_path / "memory.current").write_text("500000000\n")
    (tmp_path / "memory.stat").write_text("anon 300000000\ninactive_file 100000000\n")
    (tmp_path / "cgroup.procs").write_text(f"{os.getpid()}\n")
    assert cgroup_memory_bytes(tmp_path) == 400_000_000


def test_cgroup_v1_memory_leaves_out_inactive_page_cache(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text("360000000\n")
    (tmp_path / "memory" / "memory.stat").write_text("cache 5\ntotal_inactive_file 60000000\n")
    (tmp_path / "memory" / "cgroup.procs").write_text(f"{os.getpid()}\n")
    assert cgroup_memory_bytes(tmp_path) == 300_000_000


def test_overhead_per_scope_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a speed assertion: prints the CPU one empty scope costs (3-4 µs here)."""
    profiler = Profiler()
    scope = profiler.measure("other", "network")
    rounds = 50_000
    start = time.thread_time_ns()
    for _ in range(rounds):
        with scope:
            pass
    per_scope_us = (time.thread_time_ns() - start) / rounds / 1000
    with capsys.disabled():
        print(f"\nprofiler overhead: {per_scope_us:.2f} µs CPU per scope")
    assert profiler.counts() == {("other", "network"): rounds}


def test_add_charges_cpu_measured_elsewhere_and_checks_its_names() -> None:
    profiler = Profiler(clock=FakeClock())
    profiler.add("other", "network", 0.25)
    profiler.add("other", "network", 0.5)
    assert profiler.totals() == {("other", "network"): 0.75}
    assert profiler.snapshot()["entries"][0]["scopes"] == 0
    with pytest.raises(ValueError):
        profiler.add("other", "disk", 1.0)
    with pytest.raises(ValueError):
        profiler.add("other", "ml", -1.0)
