"""The compose stack under load: docker-compose.load.yml, as README's load-test command runs it.

The offline stack with the load override comes up; its orchestrator runs `dfl load` against the
four nodes for a short duration, while Prometheus must see it up as its orchestrator target and
scrape its dfl_load_requests_total (the dashboards' Load row) for every task the test runs; it
must then exit 0, having written one run directory into the host folder it was given: Locust's
CSV files, load.json and report.md with a Load section that names the requests of every task
the test asked for. Then `docker compose down -v` must leave nothing of the project behind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.conftest import Stack, brought_up, free_port, run, tail

pytestmark = pytest.mark.docker

LOAD_FILES = ("docker-compose.yml", "docker-compose.offline.yml", "docker-compose.load.yml")
DURATION = 45  # seconds of load (the spec's duration)
DEADLINE = DURATION + 150.0  # from `up` returning to the orchestrator's exit
POLL = 3.0
TASKS = {  # the tasks the test runs, and a request each must show
    "inject": "inject:InjectSamples",
    "status": "status:GetStatus",
    "transaction": "transaction:SubmitTransaction",
    "forged": "forged:bad_signature",
}
RUN_FILES = ("load_stats.csv", "load_failures.csv", "load.json", "report.md")


class LoadStack(Stack):
    """The compose project of the load override (the same clean-up as the plain stack's)."""

    def compose(self, *arguments: str, timeout: float = 600):
        files = [part for name in LOAD_FILES for part in ("-f", name)]
        command = ["docker", "compose", "-p", self.project, *files, *arguments]
        return run(command, timeout=timeout, env=self.env)

    def orchestrator_state(self) -> tuple[str, int | None]:
        """('running', None), or ('exited', its exit code), or ('', None) before it exists."""
        listing = self.compose(
            "ps", "-a", "--format", "{{.State}} {{.ExitCode}}", "orchestrator", timeout=60
        )
        state, _, code = listing.stdout.strip().partition(" ")
        return state, int(code) if state == "exited" and code.isdigit() else None


def tasks_with_answered_requests(prometheus_url: str) -> set[str]:
    """The tasks whose requests Prometheus has from the orchestrator's dfl_load_requests_total
    as answered the way they must be (outcome ok): the Load row's data."""
    query = urllib.parse.urlencode(
        {"query": 'sum by (task) (dfl_load_requests_total{outcome="ok"})'}
    )
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=10) as reply:
        answer = json.load(reply)
    return {
        series["metric"].get("task", "")
        for series in answer["data"]["result"]
        if float(series["value"][1]) > 0
    }


def orchestrator_up(prometheus_url: str) -> bool:
    """Whether Prometheus's last scrape of the orchestrator target succeeded."""
    query = urllib.parse.urlencode({"query": 'up{job="orchestrator"}'})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=10) as reply:
        answer = json.load(reply)
    return any(series["value"][1] == "1" for series in answer["data"]["result"])


@pytest.fixture
def load_stack(request, docker_images, tmp_path: Path) -> Iterator[tuple[LoadStack, Path]]:
    """The offline stack with the load override, up; its run directories go to a folder of
    the test's own."""
    project = f"dfl-e2e-load-{secrets.token_hex(4)}"
    port = free_port()
    runs = tmp_path / "runs"
    runs.mkdir()
    weights = " ".join(f"--task {task}=1" for task in TASKS)
    env = {
        **os.environ,
        "PROMETHEUS_PORT": str(port),
        "DFL_INJECTION_RATE": os.environ.get("DFL_E2E_INJECTION_RATE", "32"),
        "DFL_LOAD_DURATION": f"{DURATION}s",
        "DFL_LOAD_ARGS": f"--users 4 {weights}",
        "DFL_LOAD_RUNS": str(runs),
    }
    stack = LoadStack(project, f"http://127.0.0.1:{port}", env)
    # docker_images built the testbed's images; the load image is built on them here.
    build = stack.compose("build", "--quiet", "orchestrator", timeout=1800)
    if build.returncode != 0:
        pytest.fail(
            f"building the load image failed:\n{tail(build.stdout + build.stderr)}",
            pytrace=False,
        )
    with brought_up(stack, request):
        yield stack, runs


def test_compose_load_override_writes_the_load_run_to_the_host(
    load_stack: tuple[LoadStack, Path],
) -> None:
    stack, runs = load_stack
    started = time.monotonic()
    seen_up, state, code = False, "", None
    exported: set[str] = set()
    while time.monotonic() - started < DEADLINE:
        state, code = stack.orchestrator_state()
        if state == "exited":
            break
        with contextlib.suppress(OSError):  # URLError too: Prometheus still starting
            seen_up = seen_up or orchestrator_up(stack.prometheus_url)
            exported |= tasks_with_answered_requests(stack.prometheus_url)
        time.sleep(POLL)
    elapsed = time.monotonic() - started
    print(f"orchestrator {state} ({code}) after {elapsed:.0f} s")

    assert state == "exited", f"the load run still {state or 'absent'} after {elapsed:.0f} s"
    assert code == 0, f"dfl load exited with {code}"
    assert seen_up, "Prometheus never saw the orchestrator target up during the load"
    assert exported >= set(TASKS), f"dfl_load_requests_total in Prometheus only for {exported}"

    directories = sorted(path for path in runs.iterdir() if path.is_dir())
    assert len(directories) == 1 and directories[0].name.startswith("compose-load-"), (
        f"expected one compose-load-* run directory in the runs folder: {directories}"
    )
    out = directories[0]
    missing = [name for name in RUN_FILES if not (out / name).is_file()]
    assert not missing, f"missing from {out.name}: {missing}"
    if os.getuid() != 0:  # as root, the files go to the checkout's owner
        assert (out / "report.md").stat().st_uid == os.getuid(), "report.md is not the user's"

    with (out / "load_stats.csv").open(newline="") as stats:
        counts = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(stats)}
    report = (out / "report.md").read_text()
    assert "\n## Load\n" in report, "report.md has no Load section"
    load_section = report.split("\n## Load\n", 1)[1].split("\n## ", 1)[0]
    for task, name in TASKS.items():
        assert counts.get(name, 0) > 0, f"{task}: no {name} requests in load_stats.csv: {counts}"
        assert f"`{name}`" in load_section, f"the Load section does not name {name}"

    down = stack.down()
    assert down.returncode == 0, f"compose down failed: {down.stderr}"
    leftovers = stack.leftovers()
    assert not any(leftovers.values()), f"left behind by `compose down -v`: {leftovers}"
