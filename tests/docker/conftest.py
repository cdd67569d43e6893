"""Fixtures of the Docker end-to-end tests: an engine with current images, and a compose stack.

The stack is the offline variant (docker-compose.yml + docker-compose.offline.yml), which builds
everything from this checkout and the base image scripts/docker-setup bootstraps, under a project
name of its own and with Prometheus on a free port, so that it never meets another stack on the
same engine. It is always taken down with its volumes, also when the test fails; a failing test
gets the last lines of every container's log first.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.offline.yml")
BASE_IMAGE = os.environ.get("DFL_BASE_IMAGE", "dfl-base:bookworm")
SETUP_HINT = "run scripts/docker-setup first (engine, compose plugin, base image, images)"
PROJECT_LABEL = "com.docker.compose.project"
LOG_LINES = 40


def run(command: list[str], *, timeout: float, env: dict[str, str] | None = None):
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def compose_command(project: str, *arguments: str) -> list[str]:
    files = [part for name in COMPOSE_FILES for part in ("-f", name)]
    return ["docker", "compose", "-p", project, *files, *arguments]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def docker_images() -> None:
    """A Docker engine that answers, compose v2, and images built from this checkout.

    The build runs every session: the layer cache makes it seconds when nothing changed, and
    it keeps the test from passing on an image of older code.
    """
    try:
        info = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"no Docker engine ({error}); {SETUP_HINT}", pytrace=False)
    if info.returncode != 0:
        pytest.fail(f"no Docker engine: {tail(info.stderr, 3)}; {SETUP_HINT}", pytrace=False)
    if run(["docker", "compose", "version"], timeout=60).returncode != 0:
        pytest.fail(f"`docker compose` (v2) is missing; {SETUP_HINT}", pytrace=False)
    if run(["docker", "image", "inspect", BASE_IMAGE], timeout=60).returncode != 0:
        pytest.fail(f"the base image {BASE_IMAGE} is missing; {SETUP_HINT}", pytrace=False)
    build = run(compose_command("dfl-e2e-build", "build", "--quiet"), timeout=1800)
    if build.returncode != 0:
        pytest.fail(
            f"building the images failed:\n{tail(build.stdout + build.stderr)}\n{SETUP_HINT}",
            pytrace=False,
        )


@dataclass
class Stack:
    """A running compose project; `down()` removes it with its volumes (again is harmless)."""

    project: str
    prometheus_url: str
    env: dict[str, str] = field(repr=False)
    down_result: subprocess.CompletedProcess | None = field(default=None, repr=False)

    def compose(self, *arguments: str, timeout: float = 600):
        return run(compose_command(self.project, *arguments), timeout=timeout, env=self.env)

    def down(self) -> subprocess.CompletedProcess:
        if self.down_result is None or self.down_result.returncode != 0:
            self.down_result = self.compose("down", "-v", "--remove-orphans", "--timeout", "20")
        return self.down_result

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes still labelled with this project."""
        label = f"label={PROJECT_LABEL}={self.project}"
        found = {}
        for kind, listing in (
            ("containers", ["docker", "ps", "-a", "--format", "{{.Names}}"]),
            ("networks", ["docker", "network", "ls", "--format", "{{.Name}}"]),
            ("volumes", ["docker", "volume", "ls", "--format", "{{.Name}}"]),
        ):
            result = run([*listing, "--filter", label], timeout=60)
            assert result.returncode == 0, result.stderr
            found[kind] = result.stdout.split()
        return found

    def print_logs(self) -> None:
        listing = self.compose("ps", "-a", "--format", "{{.Service}} {{.Status}}", timeout=60)
        print(f"\n--- {self.project}: containers ---\n{listing.stdout.strip()}")
        services = self.compose("config", "--services", timeout=60).stdout.split()
        for service in services:
            logs = self.compose("logs", "--no-color", "--tail", str(LOG_LINES), service, timeout=60)
            print(
                f"--- {service}: last {LOG_LINES} lines ---\n{(logs.stdout + logs.stderr).strip()}"
            )


@contextlib.contextmanager
def brought_up(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """`stack` up (its images already built), and always down with its volumes afterwards; a
    failed test gets every container's last log lines first."""
    started = time.monotonic()
    try:
        up = stack.compose("up", "-d", "--no-build", timeout=600)
        if up.returncode != 0:
            stack.print_logs()
            pytest.fail(f"compose up failed:\n{tail(up.stdout + up.stderr)}", pytrace=False)
        print(
            f"\n{stack.project}: up in {time.monotonic() - started:.0f} s, "
            f"Prometheus at {stack.prometheus_url}"
        )
        yield stack
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            stack.print_logs()
        down = stack.down()
        if down.returncode != 0:
            print(f"compose down failed:\n{tail(down.stdout + down.stderr)}")


@pytest.fixture
def compose_stack(request, docker_images) -> Iterator[Stack]:
    """The offline compose stack, up and healthy; MNIST injected at DFL_E2E_INJECTION_RATE (32)."""
    project = f"dfl-e2e-{secrets.token_hex(4)}"
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_PORT": str(port),
        "DFL_INJECTION_RATE": os.environ.get("DFL_E2E_INJECTION_RATE", "32"),
    }
    with brought_up(Stack(project, f"http://127.0.0.1:{port}", env), request) as stack:
        yield stack


@pytest.fixture(scope="module")
def engine(docker_images: None):
    """A client of the engine, which has the node image (built from this checkout)."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
        client.images.get(os.environ.get("DFL_IMAGE", "dfl-testbed:latest"))
    except docker.errors.DockerException as error:
        pytest.fail(f"no Docker engine or image ({error}); run scripts/docker-setup first")
    return client


def prometheus_series(prometheus_url: str, expr: str) -> list[tuple[dict[str, str], float]]:
    """An instant query's answer as (labels, value) per series, through the HTTP API.

    Tests look at values, not only at whether a series exists: a panel that shows a flat 0 where
    the nodes should be mining is as broken as one that says "No data". A scalar answer is one
    series without labels. Connection errors propagate (Prometheus may still be starting); an
    error answer fails the test with Prometheus's message.
    """
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=10) as reply:
        answer = json.load(reply)
    assert answer.get("status") == "success", f"Prometheus refused {expr!r}: {answer}"
    data = answer["data"]
    if data["resultType"] == "scalar":
        return [({}, float(data["result"][1]))]
    return [(series["metric"], float(series["value"][1])) for series in data["result"]]


def targets_up(prometheus_url: str) -> dict[str, float]:
    """Prometheus's scrape targets by instance (host:port), 1 for up and 0 for down.

    The compose stack finds its targets through the stack's DNS, so that only the services of
    the running profile are scraped; this is what a test checks that with.
    """
    return {
        labels.get("instance", "?"): value
        for labels, value in prometheus_series(prometheus_url, "up")
    }
