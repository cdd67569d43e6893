"""The `local` runtime: one OS process per node on 127.0.0.1, driven by this process.

It starts the nodes (each with its own data directory, config file and log), wires the topology
through their configs, injects samples at the spec's rate, samples every node's state and test-set
accuracy into metrics.csv, and tears everything down at the end or on Ctrl-C. Children get
SIGTERM (they close their chain cleanly) then SIGKILL, and on Linux they die with this process
even if it is killed itself, so no run leaves orphans behind.

With `transport: {tls: true}` the run makes its own CA (orchestrator/certificates.py) and every
node gets a certificate for its name and 127.0.0.1 in DATA_DIR/tls, the orchestrator one of its
own in the run directory's orchestrator/tls; the CA's key stays in this process's memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from node.service.config import TlsFiles
from node.service.control import ControlSigner
from node.service.main import MALLOC_SETTING
from orchestrator.certificates import RunAuthority, write_tls_files
from orchestrator.driver import run_experiment, write_run_info
from orchestrator.endpoint import NodeEndpoint
from orchestrator.runtimes.settings import difficulty_for, experiment_settings
from orchestrator.spec import ExperimentSpec

log = logging.getLogger(__name__)

STOP_GRACE = 15.0


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound and released together, so all distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the orchestrator dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass(kw_only=True)
class LocalNode(NodeEndpoint):
    data_dir: Path
    peers: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    tls: TlsFiles | None = None  # its certificate, when the run uses TLS


@dataclass
class LocalRun:
    """The processes of one run and what the orchestrator measured of them."""

    spec: ExperimentSpec
    out: Path
    nodes: list[LocalNode] = field(default_factory=list)
    started_at: float = 0.0
    tolerate_exits: bool = False  # a test that kills nodes on purpose sets this
    pow_difficulty: float | None = None  # BLADE-FL: given by the spec or calibrated in prepare
    elapsed: float | None = None  # how long it ran (a BLADE-FL run may end before its duration)
    control: ControlSigner = field(default_factory=ControlSigner.generate)  # the run's own key
    down: set[str] = field(default_factory=set)  # crashed or paused by the spec's faults
    client_tls: TlsFiles | None = None  # the orchestrator's certificate, when the run uses TLS

    # --- the spec's process faults (orchestrator/faults.py ProcessFaults) ----------------------

    def peer_address(self, index: int) -> str:
        return f"127.0.0.1:{self.nodes[index].port}"

    def crash(self, index: int) -> None:
        """SIGKILL, as a power cut: nothing is flushed that was not already."""
        node = self.nodes[index]
        self.down.add(node.name)
        self.stop(node, kill=True)

    def restart(self, index: int) -> None:
        """The same command on the same data directory: key, chain and model come back."""
        node = self.nodes[index]
        self.start(node)
        self.down.discard(node.name)

    def pause(self, index: int) -> None:
        node = self.nodes[index]
        if node.process is not None and node.process.poll() is None:
            self.down.add(node.name)
            node.process.send_signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        node = self.nodes[index]
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGCONT)
        self.down.discard(node.name)

    def node_config(self, node: LocalNode) -> dict[str, Any]:
        return {
            "name": node.name,
            "data_dir": str(node.data_dir.resolve()),
            "listen": "127.0.0.1",
            "port": node.port,
            "metrics_port": node.metrics_port,
            "peers": node.peers,
            "control_key": [self.control.public_hex],
            **({"tls": node.tls.model_dump(mode="json")} if node.tls is not None else {}),
            **experiment_settings(self.spec, node.index, self.pow_difficulty),
        }

    @property
    def tls(self) -> bool:
        """Local processes talk plaintext unless the spec asks for TLS."""
        return self.spec.transport.tls_or(False)

    def prepare(self) -> None:
        count = self.spec.nodes.count
        if self.spec.blade is not None and self.pow_difficulty is None:
            self.pow_difficulty = difficulty_for(self.spec)
        ports = free_ports(2 * count)
        names = [f"node{i}" for i in range(count)]
        neighbours = self.spec.neighbours()
        authority = RunAuthority(f"{self.spec.name} {self.out.name}") if self.tls else None
        if authority is not None:
            self.client_tls = write_tls_files(self.out / "orchestrator", authority.orchestrator())
        for index, name in enumerate(names):
            node = LocalNode(
                index=index,
                name=name,
                data_dir=self.out / "nodes" / name,
                port=ports[2 * index],
                metrics_port=ports[2 * index + 1],
                peers=[f"127.0.0.1:{ports[2 * j]}" for j in sorted(neighbours[index])],
            )
            node.data_dir.mkdir(parents=True, exist_ok=True)
            if authority is not None:
                issued = authority.issue(name, ip_addresses=["127.0.0.1"])
                node.tls = write_tls_files(node.data_dir, issued)
            (node.data_dir / "node.yaml").write_text(yaml.safe_dump(self.node_config(node)))
            self.nodes.append(node)

    def start(self, node: LocalNode) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault(*MALLOC_SETTING)
        node.log_file = open(node.data_dir / "node.log", "ab")  # noqa: SIM115 (closed in stop)
        node.process = subprocess.Popen(
            [sys.executable, "-m", "node", "--config", str(node.data_dir / "node.yaml")],
            stdout=node.log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the orchestrator only; it stops the nodes
            # The death signal follows the *thread* that started the child: a node restarted by
            # a fault from a driver thread would die with that thread. Such nodes are left to
            # stop_all (which every runtime reaches, Ctrl-C included).
            preexec_fn=(
                _die_with_parent if threading.current_thread() is threading.main_thread() else None
            ),
        )

    def stop(self, node: LocalNode, *, kill: bool = False) -> None:
        process = node.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if node.log_file is not None:
            node.log_file.close()
            node.log_file = None

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self.stop(node)

    def failure_of(self, node: LocalNode) -> str | None:
        process = node.process
        if process is None or process.poll() is None or node.name in self.down:
            return None
        return f"exited with {process.returncode}; see {node.data_dir / 'node.log'}"


def run_local(
    spec: ExperimentSpec,
    out: Path,
    *,
    progress: bool = True,
    control: ControlSigner | None = None,
    **options: Any,
) -> LocalRun:
    """Runs the experiment to its end (or Ctrl-C) and leaves everything in `out`; `control`
    is the key the nodes obey (a fresh one when None); `options` go to the driver's `drive`
    (`alongside`: `dfl load`'s Locust process)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(spec.to_yaml())
    run = LocalRun(spec, out, control=control or ControlSigner.generate())
    run.prepare()

    try:
        for node in run.nodes:
            run.start(node)
        run_experiment(run, out, progress=progress, **options)
    finally:
        run.stop_all()
        write_run_json(run)
    return run


def write_run_json(run: LocalRun) -> None:
    peers = {
        node.name: [other.name for other in run.nodes if other.target in set(node.peers)]
        for node in run.nodes
    }
    extra: dict[str, Any] = {"tls": run.tls}
    if run.pow_difficulty is not None:
        extra["pow_difficulty"] = run.pow_difficulty
    write_run_info(run, run.out, "local", peers, extra)
