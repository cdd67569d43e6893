"""How the docker runtime reads its containers' health, and the check that Docker runs.

No engine in the first tests (their names say so): a container is a stub holding a `State`
document in Docker's layout, so that a check log can be replayed exactly; a real engine's
health states are read in tests/docker/test_docker_runtime.py. The check itself is run against
plain sockets that accept and then stay silent or hang up.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node import healthcheck
from orchestrator.runtimes.docker import ContainerNode, DockerRun


class StubContainer:
    """What failure_of reads: reload() and attrs["State"]."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"Status": "running"}

    def reload(self) -> None:
        pass

    @property
    def attrs(self) -> dict[str, Any]:
        return {"State": self.state}


def check(start: str, code: int, output: str = "") -> dict[str, Any]:
    return {"Start": start, "End": start, "ExitCode": code, "Output": output}


@pytest.fixture
def run_and_node(tmp_path: Path) -> tuple[DockerRun, ContainerNode, StubContainer]:
    run = DockerRun(spec=None, out=tmp_path, image="dfl-testbed:latest", client=None)  # type: ignore[arg-type]
    container = StubContainer()
    node = ContainerNode(index=0, name="node0", host="10.0.0.2", data_dir=tmp_path / "node0")
    node.container = container
    return run, node, container


def test_stub_container_each_failed_check_is_counted_once_by_what_it_said(run_and_node) -> None:
    run, node, container = run_and_node
    timeout = "Health check exceeded timeout (30s)"
    container.state["Health"] = {
        "Status": "healthy",
        "Log": [check("t1", 0), check("t2", -1, timeout)],
    }
    assert run.failure_of(node) is None
    container.state["Health"] = {  # Docker's log moved on by one check; t2 is seen again
        "Status": "healthy",
        "Log": [check("t2", -1, timeout), check("t3", 1, "unhealthy: cannot reach x\nmore")],
    }
    assert run.failure_of(node) is None
    assert run.health["node0"] == {"healthy": 2}
    assert run.health_failures["node0"] == {timeout: 1, "unhealthy: cannot reach x": 1}


def test_stub_container_without_a_health_check_is_tallied_as_none(run_and_node) -> None:
    run, node, _ = run_and_node
    assert run.failure_of(node) is None
    assert run.health["node0"] == {"none": 1}
    assert not run.health_failures.get("node0")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung node)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_node_that_never_answers_fails_the_check_after_its_timeout(
    silent_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert healthcheck.main(["--port", str(silent_server), "--timeout", "0.3"]) == 1
    assert capsys.readouterr().out.startswith("unhealthy: Health/Check did not answer within 0.3 s")


def test_the_default_timeout_fits_a_starved_container_and_docker_s_limit() -> None:
    """Checks that waited 11 s on a crowded host must pass; the Dockerfile allows 30 s, and the
    check must give up first so that its own message says why."""
    assert 10 <= healthcheck.DEFAULT_TIMEOUT < 30
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    assert "--timeout=30s" in dockerfile
