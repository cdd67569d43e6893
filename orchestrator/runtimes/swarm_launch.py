"""`dfl run SPEC --runtime swarm`, the host's side: a swarm manager, the run's network, and the
orchestrator container that does the rest (orchestrator/runtimes/swarm.py).

The nodes' names resolve only on the run's overlay network, and the host is not on it. So the
orchestrator runs in a container of the same image, attached to that network (which is why it
is created attachable), with this engine's socket to create the services and the run
directory mounted to write into; this side only starts it, relays what it prints, forwards
Ctrl-C as SIGTERM (the orchestrator then ends the run cleanly, as `dfl run` does anywhere) and
removes the container and the network. If the orchestrator died without cleaning up, what it
left (labelled with the run) is removed here too.

A machine that is not a swarm manager gets told how to make it one; `--swarm-init` does it
(`docker swarm init`), and leaves the swarm in place afterwards: a swarm is the user's, not a
run's.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from orchestrator.driver import RunFailed
from orchestrator.runtimes.docker import (
    DEFAULT_IMAGE,
    IMAGE_ENV,
    RUN_LABEL,
    DockerUnavailable,
    _quietly,
    connect,
)
from orchestrator.runtimes.swarm import remove_services
from orchestrator.spec import ExperimentSpec

RUN_DIR = "/run-out"  # the run directory, inside the orchestrator container
SOCKET = "/var/run/docker.sock"
STOP_TIMEOUT = 120  # seconds for the orchestrator to collect and clean up after SIGTERM


class NotAManager(DockerUnavailable):
    """This engine cannot create services; the message says how to make it able to."""


def ensure_manager(client: Any, *, init: bool) -> None:
    """Returns once this engine is a swarm manager; NotAManager (saying what to run) if not."""
    swarm = client.info().get("Swarm") or {}
    state = swarm.get("LocalNodeState")
    if state == "active" and swarm.get("ControlAvailable"):
        return
    if state == "active":
        raise NotAManager(
            "this engine is a swarm worker: run dfl from a manager (docker node ls there), or "
            "promote this node: docker node promote HOSTNAME (on a manager)"
        )
    if not init:
        raise NotAManager(
            "this engine is not in a swarm: make it a manager with docker swarm init "
            "(--advertise-addr ADDRESS on a host with several), or pass --swarm-init to have "
            "dfl do it; README, 'Swarm: more than one machine', tells how hosts join"
        )
    import docker.errors

    try:
        client.swarm.init()
    except docker.errors.APIError as error:
        raise NotAManager(
            f"docker swarm init failed ({error.explanation or error}); run it by hand with "
            "--advertise-addr ADDRESS"
        ) from None
    print("this engine is now a swarm manager (docker swarm leave --force undoes it)")


def socket_path() -> str:
    """The engine socket to hand to the orchestrator container."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        raise DockerUnavailable(
            f"DOCKER_HOST={host}: the swarm runtime hands the engine's unix socket to its "
            "orchestrator container; run dfl on a manager with a local socket"
        )
    return host.removeprefix("unix://") or SOCKET


def run_swarm(
    spec: ExperimentSpec,
    out: Path,
    *,
    progress: bool = True,
    keep: bool = False,
    image: str | None = None,
    swarm_init: bool = False,
    control_file: Path | None = None,
) -> int:
    """Runs the experiment on the swarm; the orchestrator container's exit code."""
    image = image or os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
    client = connect(image)
    ensure_manager(client, init=swarm_init)
    socket = socket_path()
    run_id = secrets.token_hex(3)
    prefix = f"dfl-{spec.name}-{run_id}"
    labels = {RUN_LABEL: run_id, "dfl-testbed.experiment": spec.name}
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(spec.to_yaml())
    network = client.networks.create(prefix, driver="overlay", attachable=True, labels=labels)
    container = None
    try:
        command = [
            "dfl", "run", f"{RUN_DIR}/spec.yaml", "--runtime", "swarm", "--out", RUN_DIR,
            "--inside", f"{network.name}:{run_id}:{prefix}-orchestrator", "--image", image,
        ]  # fmt: skip
        volumes = {
            socket: {"bind": SOCKET, "mode": "rw"},
            str(out): {"bind": RUN_DIR, "mode": "rw"},
        }
        if control_file is not None:
            volumes[str(control_file.resolve())] = {"bind": "/run/control-key.pem", "mode": "ro"}
            command += ["--control-key", "/run/control-key.pem"]
        if keep:
            command.append("--keep")
        if not progress:
            command.append("--quiet")
        container = client.containers.run(
            image,
            command,
            name=f"{prefix}-orchestrator",
            labels=labels,
            network=network.name,
            volumes=volumes,
            user=f"{os.getuid()}:{os.getgid()}",
            group_add=[str(os.stat(socket).st_gid)],
            environment={"HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib"},
            working_dir="/tmp",
            healthcheck={"test": ["NONE"]},
            detach=True,
        )
        return _relay(container)
    finally:
        if container is not None:
            _quietly(container.remove, force=True)
        if not keep:
            remove_services(client, run_id)  # what a dead orchestrator left
        _quietly(network.remove)


def _relay(container: Any) -> int:
    """Prints the orchestrator's output until it exits; Ctrl-C becomes its SIGTERM."""
    interrupted = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            print("stopping: the orchestrator collects the chains and removes the services")
            _quietly(container.kill, signal="SIGTERM")

    previous = signal.signal(signal.SIGINT, stop)
    try:
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        result = container.wait(timeout=STOP_TIMEOUT)
    finally:
        signal.signal(signal.SIGINT, previous)
    code = int(result.get("StatusCode", 1))
    if code not in (0, 1, 2):
        raise RunFailed(f"the orchestrator container ended with exit code {code}")
    return code
