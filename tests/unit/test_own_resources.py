"""A node's own memory and CPU: smaps_rollup's USS and PSS, and cgroup figures only when the
cgroup is the node's alone.

The cgroup decision is checked on directories laid out as cgroupfs and procfs lay them out
(cgroup.procs, tasks, /proc/PID/status), then once on the real ones with a process that shares
this one's cgroup without being its child, as the other nodes of a local run do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from node.service.metrics import NodeMetrics
from node.service.resources import (
    ProcessMemory,
    cgroup_cpu_seconds,
    cgroup_is_own,
    cgroup_memory_bytes,
    parse_smaps_rollup,
    process_memory,
)

# /proc/self/smaps_rollup as Linux 6.x writes it, figures in kB.
SMAPS_ROLLUP = """\
5581e5d4b000-7ffd9d1f2000 ---p 00000000 00:00 0                          [rollup]
Rss:              412340 kB
Pss:              301220 kB
Pss_Dirty:        250112 kB
Pss_Anon:         249800 kB
Pss_File:          51108 kB
Pss_Shmem:           312 kB
Shared_Clean:     140200 kB
Shared_Dirty:        400 kB
Private_Clean:     21640 kB
Private_Dirty:    250100 kB
Referenced:       412000 kB
Anonymous:        249800 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:     61440 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:    2048 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
"""

ME = os.getpid()
PARENT = 4000  # the orchestrator that started this node
SIBLING = 4002  # another node the orchestrator started
CHILD = 5001  # a worker this node started
GRANDCHILD = 5002
INIT = 1  # the PID namespace's init (a container's tini), its parent outside the namespace
EXEC = 77  # `docker exec`'s health check, entered from outside the PID namespace
EXEC_CHILD = 78  # what the health check started (`sh -c` runs its command as a child)


def test_smaps_rollup_gives_uss_pss_and_rss_in_bytes() -> None:
    memory = parse_smaps_rollup(SMAPS_ROLLUP)
    assert memory == ProcessMemory(
        uss_bytes=(21640 + 250100 + 2048) * 1024,  # private clean + dirty + hugetlb
        pss_bytes=301220 * 1024,
        rss_bytes=412340 * 1024,
    )


def test_smaps_rollup_without_private_lines_gives_none() -> None:
    truncated = "\n".join(line for line in SMAPS_ROLLUP.splitlines() if "Private" not in line)
    assert parse_smaps_rollup(truncated) is None
    assert parse_smaps_rollup("") is None


def test_missing_smaps_rollup_gives_none_and_a_file_is_read(tmp_path: Path) -> None:
    assert process_memory(tmp_path / "nowhere") is None
    (tmp_path / "smaps_rollup").write_text(SMAPS_ROLLUP)
    figures = process_memory(tmp_path / "smaps_rollup")
    assert figures is not None and figures.pss_bytes == 301220 * 1024


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="no smaps_rollup")
def test_this_process_memory_is_its_own() -> None:
    memory = process_memory()
    assert memory is not None
    # A Python process with pytest loaded: tens of MiB of its own, and PSS adds shared pages.
    assert 5 * 2**20 < memory.uss_bytes <= memory.pss_bytes <= memory.rss_bytes < 64 * 2**30


def _proc(root: Path, pid: int, ppid: int, tgid: int | None = None) -> None:
    """/proc/PID/status with the two fields the decision reads (and a few it skips)."""
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / str(pid) / "status").write_text(
        f"Name:\tpython\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{tgid or pid}\n"
        f"Ngid:\t0\nPid:\t{pid}\nPPid:\t{ppid}\nTracerPid:\t0\n"
    )


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A procfs: this process under PARENT under INIT, a SIBLING, a CHILD and GRANDCHILD of
    this process, and an EXEC'd health check with a child of its own."""
    root = tmp_path / "proc"
    _proc(root, INIT, 0)
    _proc(root, PARENT, INIT)
    _proc(root, ME, PARENT)
    _proc(root, SIBLING, PARENT)
    _proc(root, CHILD, ME)
    _proc(root, GRANDCHILD, CHILD)
    _proc(root, EXEC, 0)
    _proc(root, EXEC_CHILD, EXEC)
    return root


def _cgroup(tmp_path: Path, *members: int, name: str = "cgroup.procs") -> Path:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir(exist_ok=True)
    (cgroup / name).write_text("".join(f"{m}\n" for m in members))
    return cgroup


def test_a_cgroup_holding_only_this_process_is_its_own(tmp_path: Path, proc: Path) -> None:
    assert cgroup_is_own(_cgroup(tmp_path, ME), proc=proc)


def test_a_cgroup_shared_with_a_sibling_or_the_parent_is_not(tmp_path: Path, proc: Path) -> None:
    assert not cgroup_is_own(_cgroup(tmp_path, ME, SIBLING), proc=proc)
    assert not cgroup_is_own(_cgroup(tmp_path, PARENT, ME), proc=proc)
    # The machine's init holds its root cgroup, and with it everything else.
    assert not cgroup_is_own(_cgroup(tmp_path, INIT, PARENT, ME, SIBLING), proc=proc)


def test_own_workers_a_containers_init_and_a_health_check_do_not_count(
    tmp_path: Path, proc: Path
) -> None:
    members = (INIT, ME, CHILD, GRANDCHILD, EXEC, EXEC_CHILD)
    assert cgroup_is_own(_cgroup(tmp_path, *members), proc=proc)


def test_exec_d_into_a_shared_container_the_cgroup_is_not_own(tmp_path: Path) -> None:
    """A CI job's container: its init runs an agent, and the orchestrator was exec'd into it
    from outside (parent pid 0) and started this node and a sibling."""
    proc, orchestrator, agent = tmp_path / "proc", 300, 10
    _proc(proc, INIT, 0)
    _proc(proc, agent, INIT)
    _proc(proc, orchestrator, 0)
    _proc(proc, ME, orchestrator)
    _proc(proc, SIBLING, orchestrator)
    assert not cgroup_is_own(_cgroup(tmp_path, ME, SIBLING), proc=proc)
    assert not cgroup_is_own(_cgroup(tmp_path, orchestrator, ME), proc=proc)
    # A PID 1 that did not start this process is not a container's init of its own.
    assert not cgroup_is_own(_cgroup(tmp_path, INIT, ME), proc=proc)
    assert not cgroup_is_own(_cgroup(tmp_path, agent, ME), proc=proc)


def test_a_cgroup_without_this_process_is_not_its_own(tmp_path: Path, proc: Path) -> None:
    # A container's root cgroup when the processes live in a child cgroup: it may be empty.
    assert not cgroup_is_own(_cgroup(tmp_path), proc=proc)
    assert not cgroup_is_own(_cgroup(tmp_path, CHILD), proc=proc)


def test_a_member_of_another_pid_namespace_or_gone_since(tmp_path: Path, proc: Path) -> None:
    # cgroup v2 lists a process this namespace cannot see as 0: someone else's.
    assert not cgroup_is_own(_cgroup(tmp_path, 0, ME), proc=proc)
    # Listed, then exited before its status was read (a health check ending): no longer there.
    assert cgroup_is_own(_cgroup(tmp_path, ME, 9999), proc=proc)


def test_v1_tasks_list_threads_of_this_process(tmp_path: Path, proc: Path) -> None:
    thread = 6001
    _proc(proc, thread, PARENT, tgid=ME)
    assert cgroup_is_own(_cgroup(tmp_path, ME, thread, name="tasks"), proc=proc)
    _proc(proc, 4003, SIBLING, tgid=SIBLING)  # a thread of the sibling node
    assert not cgroup_is_own(_cgroup(tmp_path, ME, thread, 4003, name="tasks"), proc=proc)


def test_no_process_list_cannot_be_vouched_for(tmp_path: Path, proc: Path) -> None:
    (tmp_path / "cgroup").mkdir()
    assert not cgroup_is_own(tmp_path / "cgroup", proc=proc)


def test_cgroup_figures_are_read_only_when_the_cgroup_is_own(tmp_path: Path, proc: Path) -> None:
    # cgroup v1 hierarchies, each with its own process list.
    root = tmp_path / "sys"
    (root / "cpuacct").mkdir(parents=True)
    (root / "cpuacct" / "cpuacct.usage").write_text("2500000000\n")
    (root / "memory").mkdir()
    (root / "memory" / "memory.usage_in_bytes").write_text("360000000\n")
    (root / "memory" / "memory.stat").write_text("total_inactive_file 60000000\n")
    for hierarchy in ("cpuacct", "memory"):
        (root / hierarchy / "cgroup.procs").write_text(f"{INIT}\n{ME}\n{EXEC}\n")
    assert cgroup_cpu_seconds(root, proc) == 2.5
    assert cgroup_memory_bytes(root, proc) == 300_000_000

    # The same hierarchies with the other nodes of a local run in them: the machine's figures.
    for hierarchy in ("cpuacct", "memory"):
        (root / hierarchy / "cgroup.procs").write_text(f"{PARENT}\n{ME}\n{SIBLING}\n")
    assert cgroup_cpu_seconds(root, proc) is None
    assert cgroup_memory_bytes(root, proc) is None


def _samples(metrics: NodeMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
@pytest.mark.skipif(ME == 1, reason="as PID 1, every orphan is this process's child")
def test_sharing_the_real_cgroup_with_a_non_child_hides_the_cgroup_figures() -> None:
    """An orphan (its shell exited) stays in this process's cgroup without being its child,
    as the other nodes of a local run share a node's: the node must not export that cgroup."""
    started = subprocess.run(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(started.stdout)
    try:
        assert cgroup_cpu_seconds() is None
        assert cgroup_memory_bytes() is None
        samples = _samples(NodeMetrics())
        assert "dfl_cgroup_cpu_seconds_total" not in samples
        assert "dfl_cgroup_memory_bytes" not in samples
        # The process's own figures are there all the same.
        assert samples["dfl_process_cpu_seconds_total"] > 0
        if Path("/proc/self/smaps_rollup").is_file():
            uss = samples["dfl_process_memory_uss_bytes"]
            assert 5 * 2**20 < uss <= samples["dfl_process_memory_pss_bytes"]
    finally:
        os.kill(orphan, signal.SIGTERM)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_real_child_counts_as_this_process_own(tmp_path: Path) -> None:
    """The descendant walk on the real /proc: a worker this process started is its own."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert cgroup_is_own(_cgroup(tmp_path, ME, child.pid))
    finally:
        child.kill()
        child.wait()
