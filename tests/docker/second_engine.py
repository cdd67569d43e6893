"""A second Docker engine on this machine, in a network namespace of its own: a two-host swarm.

Why: the project's multi-host claims (an overlay network spanning hosts, swarm tasks placed on
another node, ``tasks.<service>`` DNS across nodes) need two Docker hosts, and CI has one machine.
A second ``dockerd`` that owns a network namespace behaves, to the swarm, like another host: it has
its own address, its own VXLAN endpoint (udp 4789), gossip (7946) and node identity.

What this module makes (all named after ``name``, all removed on exit, also on errors):

* network namespace ``name`` (``ip netns add``) with a veth pair ``<name>-h`` (host end) /
  ``<name>-n`` (namespace end), addressed from ``addr_cidr`` (for example ``198.18.0.1/30``: the
  host end gets that address, the namespace end the other usable address of the subnet);
* ``/run/<name>/``: the engine's exec-root, pidfile and API socket ``/run/<name>/docker.sock``;
* ``/tmp/<name>-XXXXXX/``: its data-root (image store, swarm state) and ``dockerd.log``;
* cgroup parent ``<name>`` for its containers, so that leftovers can be found and killed.

How it is run, and why that way:

* ``nsenter --net=/run/netns/<name>`` and not ``ip netns exec``: the latter also unshares the mount
  namespace and remounts /sys, which drops /sys/fs/cgroup, and runc then cannot start any
  container. nsenter enters the network namespace only.
* ``unshare --uts`` plus ``hostname <hostname>``: otherwise both engines report the machine's
  hostname, both swarm nodes have the same ``node.hostname`` and a placement constraint
  ``node.hostname==...`` cannot pick the second engine.
* No default route in the namespace: nothing the second engine does is meant to leave the machine.
  With a route, swarm workers still try to pull a task's image from a registry before falling back
  to the local copy, and each try waits 10 s for a DNS timeout. Without one it fails at once
  ("network is unreachable"), and tasks start in 1-3 s.
* The engine runs its own containerd (under its exec-root). Its iptables rules live in the
  namespace's own tables, so ``--iptables`` may stay on and the host's rules are not touched.
* The default bridge of the second engine is ``--bip`` 172.31.254.1/24 (inside its namespace only,
  so this avoids no clash; it makes the two engines' logs and routes easy to tell apart).

Measured on the 2-core CI machine (Docker 20.10.24, kernel 6.18): dockerd answers in 0.3-0.7 s,
``copy_image`` of the 169 MB base image takes ~4.5 s and of the 1.3 GB testbed image ~33 s.

Limits of this kernel (not of this module): it has no IPVS, so a swarm service's virtual IP does
not answer ("No route to host"; the daemons log "Could not get ipvs family information from the
kernel"). Use ``--endpoint-mode dnsrr`` or the ``tasks.<service>`` name, which both resolve to
the task addresses across hosts. The log line "enabling default vlan on bridge br0 failed ...
permission denied" appears on the default engine too, and overlay traffic works regardless.

Only root can do any of this. The swarm helpers touch the swarm state of the manager engine: the
caller must make sure nobody else uses that engine's swarm meanwhile (take whatever lock the
machine's users agree on), and ``swarm_manager`` leaves it as it found it (inactive).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SWARM_PORT = 2377
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,12}$")  # the veth names "<name>-h" fit in 15 chars


@dataclass(frozen=True)
class SecondEngine:
    """A running second engine: where to reach it and what it is made of."""

    name: str
    base_url: str  # for docker.DockerClient(base_url=...) or docker -H ...
    host_addr: str  # the host end of the veth: the manager's advertise address
    engine_addr: str  # the namespace end: the second engine's advertise address
    prefixlen: int
    hostname: str  # what the engine reports, so node.hostname==<hostname> places tasks on it
    netns: str
    run_dir: Path
    data_root: Path
    log_path: Path
    pid: int
    started_in: float  # seconds from exec to the first answer on the socket

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


def _run(*command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _addresses(addr_cidr: str, peer_addr: str | None) -> tuple[str, str, int]:
    host = ipaddress.ip_interface(addr_cidr)
    if host.version != 4:
        raise ValueError(f"{addr_cidr}: only IPv4 is supported")
    if peer_addr is None:
        peer = next((a for a in host.network.hosts() if a != host.ip), None)
        if peer is None:
            raise ValueError(f"{addr_cidr}: the subnet has no second address for the namespace")
    else:
        peer = ipaddress.ip_address(peer_addr)
        if peer not in host.network or peer == host.ip:
            raise ValueError(f"{peer_addr} is not another address of {host.network}")
    return str(host.ip), str(peer), host.network.prefixlen


def _ping(socket_path: Path, timeout: float = 2.0) -> bool:
    """True when the engine's API answers GET /_ping: the socket file alone appears too early."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(str(socket_path))
            client.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
        status = answer.split(b"\r\n", 1)[0].split()
        return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200"
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line holds ``text``: this engine's containerd and shims carry its
    exec-root path (unique to this engine) in their arguments, and outlive a killed dockerd."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _cgroup_dirs(parent: str) -> list[Path]:
    roots = [Path("/sys/fs/cgroup") / parent]  # cgroup v2
    roots += sorted(Path("/sys/fs/cgroup").glob(f"*/{parent}"))  # cgroup v1 hierarchies
    return [root for root in roots if root.is_dir()]


def _cgroup_pids(parent: str) -> set[int]:
    pids = set()
    for root in _cgroup_dirs(parent):
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def _kill_and_wait(pids: set[int] | list[int], timeout: float = 10) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _mounts_under(*roots: Path) -> list[str]:
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point == str(root) or point.startswith(f"{root}/") for root in roots):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)  # deepest first


def _exists(netns: str, host_if: str, run_dir: Path) -> list[str]:
    present = []
    if Path("/run/netns", netns).exists():
        present.append(f"network namespace {netns}")
    if Path("/sys/class/net", host_if).exists():
        present.append(f"interface {host_if}")
    if run_dir.exists():
        present.append(str(run_dir))
    return present


def _teardown(
    *,
    netns: str,
    host_if: str,
    run_dir: Path,
    data_root: Path | None,
    process: subprocess.Popen | None,
    stop_timeout: float,
) -> list[str]:
    """Removes whatever of one engine exists, each step on its own; returns what could not be.

    Order matters: the daemon first (it unmounts and deletes its containers and networks itself),
    then what a killed daemon leaves (containerd, shims, container processes, mounts, cgroups),
    then the files, then the network namespace (which also takes the veth's namespace end).
    """
    problems: list[str] = []
    exec_root = run_dir / "exec"
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
    leftovers = set(_pids_mentioning(str(exec_root))) | _cgroup_pids(netns)
    if process is not None and process.poll() is None:
        leftovers.add(process.pid)  # a dockerd that ignored SIGTERM and SIGKILL's first wait
    if leftovers:
        _kill_and_wait(leftovers)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    roots = [run_dir] + ([data_root] if data_root else [])
    for point in _mounts_under(*roots):
        result = _run("umount", "-l", point, check=False)
        if result.returncode != 0:
            problems.append(f"umount {point}: {result.stderr.strip()}")
    for cgroup in _cgroup_dirs(netns):
        for directory in sorted(
            (p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        try:
            cgroup.rmdir()
        except OSError as error:
            problems.append(f"cgroup {cgroup}: {error}")
    for directory in roots:
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            problems.append(f"could not remove {directory}")
    if Path("/sys/class/net", host_if).exists():
        _run("ip", "link", "del", host_if, check=False)
    if Path("/run/netns", netns).exists():
        result = _run("ip", "netns", "del", netns, check=False)
        if result.returncode != 0:
            problems.append(f"ip netns del {netns}: {result.stderr.strip()}")
    # the kernel frees a namespace (and so a veth whose other end is in it) asynchronously
    deadline = time.monotonic() + 10
    while Path("/sys/class/net", host_if).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path("/sys/class/net", host_if).exists():
        problems.append(f"interface {host_if} still exists")
    return problems


@contextlib.contextmanager
def second_engine(
    name: str = "dfl-engine2",
    addr_cidr: str = "198.18.0.1/30",
    *,
    peer_addr: str | None = None,
    hostname: str | None = None,
    dockerd_args: Sequence[str] = (),
    start_timeout: float = 60,
    stop_timeout: float = 20,
) -> Iterator[SecondEngine]:
    """Starts a dockerd in network namespace ``name`` behind a veth; removes everything on exit.

    ``addr_cidr`` is the host end's address with its prefix; the namespace end takes ``peer_addr``
    or the subnet's other usable address. The default subnet is in 198.18.0.0/15, the range set
    aside for benchmarking: it meets no real network, the machine's own addresses or Docker's
    default pools (172.17-31.x, 192.168.x for bridges, 10.0.x for swarm overlays).

    Refuses to start when a namespace, interface or /run directory of that name already exists,
    so that it never removes what it did not make; ``remove_leftovers(name)`` clears what a killed
    test run left. ``dockerd_args`` are added to the daemon's command line (``--iptables=false``,
    ``--debug``, ...). On any failure to start, the error carries the tail of the daemon's log.
    """
    if os.geteuid() != 0:
        raise PermissionError("a second engine needs root (network namespaces, dockerd)")
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{name!r}: use 1-13 characters a-z, 0-9 and '-', starting with a letter")
    host_addr, engine_addr, prefixlen = _addresses(addr_cidr, peer_addr)
    hostname = hostname or name
    host_if, ns_if = f"{name}-h", f"{name}-n"
    run_dir = Path("/run") / name
    present = _exists(name, host_if, run_dir)
    if present:
        raise RuntimeError(
            f"already there: {', '.join(present)} (remove_leftovers({name!r}) clears them)"
        )

    process: subprocess.Popen | None = None
    data_root: Path | None = None
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{host_addr}/{prefixlen}", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", name, "addr", "add", f"{engine_addr}/{prefixlen}", "dev", ns_if)
        _run("ip", "-n", name, "link", "set", ns_if, "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")

        run_dir.mkdir(mode=0o700)
        (run_dir / "exec").mkdir()
        data_root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
        log_path = data_root / "dockerd.log"
        socket_path = run_dir / "docker.sock"
        command = [
            "nsenter", f"--net=/run/netns/{name}", "--",
            "unshare", "--uts", "--",
            "sh", "-c", 'hostname "$0" && exec "$@"', hostname,
            "dockerd",
            "--data-root", str(data_root / "data"),
            "--exec-root", str(run_dir / "exec"),
            "--pidfile", str(run_dir / "dockerd.pid"),
            "-H", f"unix://{socket_path}",
            "--bip", "172.31.254.1/24",
            "--cgroup-parent", name,
            "--shutdown-timeout", "5",
            *dockerd_args,
        ]  # fmt: skip
        started = time.monotonic()
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + start_timeout
        while not _ping(socket_path):
            if process.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with {process.returncode}:\n{_tail(log_path, 30)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"dockerd did not answer in {start_timeout} s:\n{_tail(log_path, 30)}"
                )
            time.sleep(0.05)
        engine = SecondEngine(
            name=name,
            base_url=f"unix://{socket_path}",
            host_addr=host_addr,
            engine_addr=engine_addr,
            prefixlen=prefixlen,
            hostname=hostname,
            netns=name,
            run_dir=run_dir,
            data_root=data_root,
            log_path=log_path,
            pid=process.pid,  # nsenter, unshare and sh all exec: this is dockerd's pid
            started_in=time.monotonic() - started,
        )
        yield engine
    finally:
        problems = _teardown(
            netns=name,
            host_if=host_if,
            run_dir=run_dir,
            data_root=data_root,
            process=process,
            stop_timeout=stop_timeout,
        )
        if problems:
            message = f"second engine {name} not fully removed: {'; '.join(problems)}"
            in_flight = sys.exc_info()[1]
            if in_flight is None:
                raise RuntimeError(message)
            in_flight.add_note(message)  # do not hide the error that ended the block


def remove_leftovers(name: str = "dfl-engine2") -> list[str]:
    """Removes what a killed run of ``second_engine(name)`` left; returns what could not be removed.

    Only for a name no live test uses: it kills the processes of that engine (found by its
    exec-root path and cgroup parent) and deletes its namespace, interface and directories.
    """
    if not NAME_PATTERN.match(name):
        raise ValueError(f"{name!r} is not a second engine's name")
    pidfile = Path("/run", name, "dockerd.pid")
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if _alive(pid) and f"/run/{name}/" in cmdline:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
    problems = []
    for data_root in Path("/tmp").glob(f"{name}-*"):
        made_by_mkdtemp = re.fullmatch(rf"{re.escape(name)}-[A-Za-z0-9_]{{6,}}", data_root.name)
        if data_root.is_dir() and made_by_mkdtemp:
            problems += _teardown(
                netns=name,
                host_if=f"{name}-h",
                run_dir=Path("/run", name),
                data_root=data_root,
                process=None,
                stop_timeout=0,
            )
    problems += _teardown(
        netns=name,
        host_if=f"{name}-h",
        run_dir=Path("/run", name),
        data_root=None,
        process=None,
        stop_timeout=0,
    )
    return sorted(set(problems))


def copy_image(
    image: str, engine: SecondEngine | str, *, source_url: str | None = None, timeout: float = 600
) -> float:
    """Copies ``image`` from the default engine (or ``source_url``) into the second engine.

    There is no registry here, and a swarm worker runs a task only from an image it has locally:
    ``docker save | docker load`` is how it gets there. Returns the seconds it took.
    """
    target = engine.base_url if isinstance(engine, SecondEngine) else engine
    source = ["docker"] + (["-H", source_url] if source_url else [])
    started = time.monotonic()
    save = subprocess.Popen(
        [*source, "save", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        load = subprocess.run(
            ["docker", "-H", target, "load"],
            stdin=save.stdout,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        save.stdout.close()
        save_error = save.stderr.read().decode(errors="replace")
        save.stderr.close()
        if save.wait(timeout=timeout) != 0 and not save_error:
            save_error = f"exit {save.returncode}"
    if save.returncode != 0 or load.returncode != 0:
        raise RuntimeError(
            f"copying {image} failed: save: {save_error.strip()} load: {load.stderr.strip()}"
        )
    return time.monotonic() - started


@contextlib.contextmanager
def swarm_manager(client, advertise_addr: str) -> Iterator[str]:
    """Makes the engine of docker SDK ``client`` a one-node swarm manager; leaves the swarm on exit.

    It listens for the swarm (2377) and advertises on ``advertise_addr`` only: the host end of a
    second engine's veth, so that the swarm never binds the machine's other addresses. The engine
    must not be in a swarm (it is not taken over: that would be someone else's swarm), and it is
    left as it was found, inactive, with ``leave(force=True)``. Yields the worker join token.
    """
    state = client.info()["Swarm"]["LocalNodeState"]
    if state != "inactive":
        raise RuntimeError(
            f"the manager engine's swarm is {state!r}, not inactive: it is not ours to use"
        )
    client.swarm.init(
        advertise_addr=advertise_addr,
        listen_addr=f"{advertise_addr}:{SWARM_PORT}",
        data_path_addr=advertise_addr,
    )
    try:
        client.swarm.reload()
        yield client.swarm.attrs["JoinTokens"]["Worker"]
    finally:
        client.swarm.leave(force=True)


def join_swarm(manager_client, worker_url: str, advertise_addr: str, *, timeout: float = 60) -> str:
    """Joins the engine at ``worker_url`` to the swarm that ``manager_client`` manages, as a worker.

    ``advertise_addr`` is the worker's own address (``SecondEngine.engine_addr``): it is also its
    listen and data-path address, so VXLAN (udp 4789) between the nodes crosses the veth.
    Returns the worker's node id once the manager reports it ready.
    """
    import docker  # the project's test dependency; imported here, so the engine part needs none

    info = manager_client.info()["Swarm"]
    if not info.get("ControlAvailable"):
        raise RuntimeError("manager_client's engine is not a swarm manager")
    manager_client.swarm.reload()
    token = manager_client.swarm.attrs["JoinTokens"]["Worker"]
    remote = [manager["Addr"] for manager in info["RemoteManagers"]]
    worker = docker.DockerClient(base_url=worker_url, timeout=timeout)
    try:
        worker.swarm.join(
            remote_addrs=remote,
            join_token=token,
            listen_addr=f"{advertise_addr}:{SWARM_PORT}",
            advertise_addr=advertise_addr,
            data_path_addr=advertise_addr,
        )
        node_id = worker.info()["Swarm"]["NodeID"]
    finally:
        worker.close()
    deadline = time.monotonic() + timeout
    while True:
        node = manager_client.nodes.get(node_id)
        if node.attrs["Status"]["State"] == "ready":
            return node_id
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"node {node_id} not ready after {timeout} s: {node.attrs['Status']}"
            )
        time.sleep(0.2)


def leave_swarm(manager_client, worker_url: str | None, node_id: str | None = None) -> None:
    """Makes the worker leave and the manager forget it; tolerates either being gone already.

    A worker that just leaves stays listed on the manager as "down"; removing the node too keeps
    a manager that lives on (the default engine) free of dead nodes.
    """
    import docker

    if worker_url is not None:
        with contextlib.suppress(docker.errors.DockerException, OSError):
            worker = docker.DockerClient(base_url=worker_url, timeout=30)
            try:
                node_id = node_id or worker.info()["Swarm"]["NodeID"] or None
                worker.swarm.leave(force=True)
            finally:
                worker.close()
    if node_id:
        with contextlib.suppress(docker.errors.DockerException):
            manager_client.nodes.get(node_id).remove(force=True)
