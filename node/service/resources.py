"""The node's own memory, and its container's memory and CPU, as the kernel counts them.

The node reports what is its own and nothing else. Its process's memory comes from
/proc/self/smaps_rollup (USS and PSS; `process_memory`). Its cgroup's figures (memory less
inactive page cache, CPU) are its own only when the cgroup holds nothing but the node, as a
container's does; a node run as a local process shares its cgroup with the orchestrator, the
other nodes and whatever else the machine runs, and that cgroup's figures are the machine's.
So `cgroup_cpu_seconds` and `cgroup_memory_bytes` return None unless `cgroup_is_own` vouches
for the cgroup, and every caller (the metrics, the profile snapshot) gets that for free.

Linux only; elsewhere (no /proc, no cgroup filesystem) every figure is None.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Ancestors walked up from a process sharing the cgroup to see whether it descends from this one;
# a node's own children are one or two levels down, a real process tree is rarely deeper.
MAX_ANCESTRY = 64


@dataclass(frozen=True)
class ProcessMemory:
    """This process's own memory, from the kernel's page accounting (bytes).

    USS (unique set size: pages no other process maps) is what stopping the node would give
    back; PSS (proportional set size: each shared page divided among the processes mapping it)
    adds a fair share of what the nodes of one machine share, torch's libraries mostly, so the
    PSS of all nodes sums to the memory they take together. RSS counts every shared page in full
    for each process, which is why it is not the figure a local run reports.
    """

    uss_bytes: int
    pss_bytes: int
    rss_bytes: int


def process_memory(path: Path | str = "/proc/self/smaps_rollup") -> ProcessMemory | None:
    """This process's USS, PSS and RSS, or None where the kernel has no smaps_rollup (not
    Linux, or older than 4.14): a missing figure rather than a wrong one."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return parse_smaps_rollup(text)


def parse_smaps_rollup(text: str) -> ProcessMemory | None:
    """The figures of a smaps_rollup text ("Pss:  1234 kB" lines, kibibytes), or None when it
    lacks one of the lines they are made of.

    USS is Private_Clean + Private_Dirty (+ Private_Hugetlb where the kernel has it), as
    psutil and smem count it.
    """
    kib: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) == 2 and fields[1] == "kB" and fields[0].isdigit():
            kib[name.strip()] = int(fields[0])
    try:
        uss = kib["Private_Clean"] + kib["Private_Dirty"] + kib.get("Private_Hugetlb", 0)
        return ProcessMemory(uss * 1024, kib["Pss"] * 1024, kib["Rss"] * 1024)
    except KeyError:
        return None


def cgroup_cpu_seconds(
    root: Path | str = "/sys/fs/cgroup", proc: Path | str = "/proc"
) -> float | None:
    """CPU seconds used by this process's cgroup (the whole container, in Docker), or None.

    cgroup v2 keeps `usage_usec` in cpu.stat; v1 keeps nanoseconds in cpuacct.usage under the
    cpuacct hierarchy. The path in /proc/self/cgroup is tried below the mount first; inside a
    container the mount is already the container's cgroup, so the mount root is the fallback.

    None as well when the cgroup is not this process's alone (`cgroup_is_own`): a node run as a
    local process shares its cgroup with its siblings, the orchestrator and whatever else the
    machine runs, and that cgroup's figure is the machine's, not the node's.
    """
    root = Path(root)
    v2_paths, v1_paths = _own_cgroup_paths()
    for base in _candidates(root, v2_paths.get("", "/")):
        value = _read_v2(base / "cpu.stat")
        if value is not None:
            return value if cgroup_is_own(base, proc=proc) else None
    for mount in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
        for base in _candidates(root / mount, v1_paths.get("cpuacct", "/")):
            usage = _read_int(base / "cpuacct.usage")
            if usage is not None:
                return usage / 1e9 if cgroup_is_own(base, proc=proc) else None
    return None


def cgroup_memory_bytes(
    root: Path | str = "/sys/fs/cgroup", proc: Path | str = "/proc"
) -> float | None:
    """Memory charged to this process's cgroup less its inactive page cache, or None (also when
    the cgroup is not this process's alone, as in `cgroup_cpu_seconds`).

    That is the figure `docker stats` shows: the page cache a container's reads leave behind can
    be reclaimed at any time, so counting it would blame the node for the kernel's caching.
    """
    root = Path(root)
    v2_paths, v1_paths = _own_cgroup_paths()
    for base in _candidates(root, v2_paths.get("", "/")):
        usage = _read_int(base / "memory.current")
        if usage is not None:
            if not cgroup_is_own(base, proc=proc):
                return None
            return float(usage - _stat_value(base / "memory.stat", "inactive_file"))
    for base in _candidates(root / "memory", v1_paths.get("memory", "/")):
        usage = _read_int(base / "memory.usage_in_bytes")
        if usage is not None:
            if not cgroup_is_own(base, proc=proc):
                return None
            return float(usage - _stat_value(base / "memory.stat", "total_inactive_file"))
    return None


def cgroup_is_own(cgroup: Path | str, pid: int | None = None, proc: Path | str = "/proc") -> bool:
    """Whether the cgroup directory `cgroup` holds this process and nothing that is not its own,
    so that the cgroup's figures are the process's.

    Its process list (cgroup.procs; v1's `tasks`, thread ids, where that is missing) must name
    this process (or its threads), and every other member must be one of:

    - a descendant of this process (a worker it started);
    - the init of its PID namespace when that is this process's ancestor (tini, under
      `docker run --init`);
    - in a tree entered from outside the PID namespace (its root's parent pid is 0, and it is
      neither PID 1 nor an ancestor of this process): `docker exec` and Docker's health check,
      with whatever they start;
    - one that exited while the list was read.

    Anything else hangs off this process's own ancestors (the other nodes and the orchestrator
    of a local run, the machine's processes under its init) or off a PID 1 that did not start
    this process (a CI container's, when the node was exec'd into it): the cgroup is shared.
    A member listed as pid 0 lives in another PID namespace, hence is not this process's; no
    process list (not a cgroup filesystem) means the cgroup cannot be vouched for. Deciding by
    membership rather than by "am I in a container" (/.dockerenv and the like) matters: local
    nodes run inside containers too, such as a CI job's, and share its cgroup.
    """
    pid = os.getpid() if pid is None else pid
    cgroup, proc = Path(cgroup), Path(proc)
    members = _cgroup_members(cgroup)
    if members is None:
        return False
    if members == [pid]:
        return True  # the common case in a container, and no /proc read needed
    ancestors = _ancestors(proc, pid)
    seen = False
    for member in members:
        if member <= 0:
            return False
        status = _proc_status(proc, member)
        if status is None:
            continue  # gone since the list was read
        tgid, ppid = status
        if tgid == pid:
            seen = True
        elif not _member_is_own(proc, tgid, ppid, pid, ancestors):
            return False
    return seen


def _ancestors(proc: Path, pid: int) -> set[int]:
    """This process's parent, its parent's parent and so on, up to a process whose parent is 0."""
    found: set[int] = set()
    status = _proc_status(proc, pid)
    current = status[1] if status else 0
    while current > 0 and current not in found and len(found) < MAX_ANCESTRY:
        found.add(current)
        status = _proc_status(proc, current)
        current = status[1] if status else 0
    return found


def _member_is_own(proc: Path, member: int, ppid: int, pid: int, ancestors: set[int]) -> bool:
    """Whether process `member` (parent `ppid`) of this process's cgroup is one it may share the
    cgroup with (see `cgroup_is_own`), walking up its ancestry."""
    if member in ancestors:
        # The namespace's init above this process; any other ancestor (the orchestrator that
        # started it, even one exec'd from outside) has work of its own in the cgroup.
        return member == 1 and ppid == 0
    current, parent = member, ppid
    for _ in range(MAX_ANCESTRY):
        if parent == pid:
            return True
        if parent in ancestors:
            return False
        if parent == 0:
            return current != 1
        status = _proc_status(proc, parent)
        if status is None:
            return False
        current, parent = parent, status[1]
    return False


def _cgroup_members(cgroup: Path) -> list[int] | None:
    """The ids cgroup.procs (process ids) or else `tasks` (thread ids, v1) lists; None without
    either file."""
    for name in ("cgroup.procs", "tasks"):
        try:
            text = (cgroup / name).read_text()
        except OSError:
            continue
        try:
            return [int(line) for line in text.split()]
        except ValueError:
            return None
    return None


def _proc_status(proc: Path, pid: int) -> tuple[int, int] | None:
    """(Tgid, PPid) of /proc/PID/status: the process a thread id belongs to, and its parent;
    None when the process is gone (or the file unreadable)."""
    try:
        text = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("Tgid", "PPid"):
            try:
                fields[name] = int(value)
            except ValueError:
                return None
    if "Tgid" not in fields or "PPid" not in fields:
        return None
    return fields["Tgid"], fields["PPid"]


def _stat_value(path: Path, name: str) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


def _candidates(mount: Path, own: str) -> Iterator[Path]:
    relative = own.strip("/")
    if relative:
        yield mount / relative
    yield mount


def _own_cgroup_paths() -> tuple[dict[str, str], dict[str, str]]:
    """Lines of /proc/self/cgroup: v2 ("0::/path") and v1 ("4:cpu,cpuacct:/path") by controller."""
    v2: dict[str, str] = {}
    v1: dict[str, str] = {}
    try:
        text = Path(f"/proc/{os.getpid()}/cgroup").read_text()
    except OSError:
        return v2, v1
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            v2[""] = path
        for controller in controllers.split(","):
            v1[controller] = path
    return v2, v1


def _read_v2(path: Path) -> float | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "usage_usec":
            return int(value) / 1e6
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
