"""BLADE-FL as users start it: `docker compose --profile blade-fl up`, then its dashboard.

The offline stack comes up with the blade-fl profile: the four BLADE-FL clients blade0..blade3,
their orchestrator (experiments/compose-blade.yaml) and Prometheus, and none of the DFL
services, which the profile replaces. Once every client holds a few blocks, every query of every
panel of dashboards/blade-fl.json, as Grafana would send it for the default view
(orchestrator/dashboards.py fills in the variables), must come back from the real Prometheus
with data from the four clients and only from them, and with a value that is not zero: a
mining panel that reads a flat 0 is as broken as one that says "No data". Grafana itself cannot
run here, so no stand-in renders anything: the check is the panels' PromQL against Prometheus.

The exceptions are named in ZERO_BY_DESIGN, each with why: panels that count faults and load
read 0 in a run that schedules no fault and runs no load generator (the compose orchestrator
can do neither), and must then read exactly 0 for every client, not "No data".

Then `docker compose down -v` must leave nothing of the project behind.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from orchestrator.dashboards import PanelQuery, dashboard_queries
from tests.docker.conftest import (
    COMPOSE_FILES,
    PROJECT_LABEL,
    ROOT,
    Stack,
    brought_up,
    compose_command,
    free_port,
    prometheus_series,
    run,
    targets_up,
)

pytestmark = pytest.mark.docker

PROFILE = "blade-fl"
DASHBOARD = "blade-fl.json"
CLIENTS = ("blade0", "blade1", "blade2", "blade3")
# Running once the stack is up; control-key and blade-config have run and exited by then.
RUNNING = {*CLIENTS, "blade-orchestrator", "prometheus"}
ONE_SHOT = {"control-key", "blade-config"}
MIN_BLOCKS = 5  # every client's chain height before the panels count
DEADLINE = 300.0  # seconds from `up` returning
POLL = 5.0

# Panels that read 0 in this run by design, and why; everything else must be non-zero.
ZERO_BY_DESIGN = {
    "Faults in effect": "no fault is scheduled: compose-blade.yaml has no faults:, and "
    "`dfl orchestrate` carries none out",
    "Network-fault messages per second": "no network fault is injected, so none is dropped "
    "or delayed",
    "Load requests per second by task and outcome": "no load generator runs (`dfl load` is the "
    "load override's orchestrator, for the DFL net)",
    "Load latency p50 and p99 by request": "no load generator runs",
    "Load users and failed share": "no load generator runs",
    "Load requests per second by node's answer": "no load generator runs",
}


class BladeStack(Stack):
    """The compose project with the blade-fl profile: every compose call names the profile, as
    README's command does, so `up`, `logs` and `down` see the BLADE-FL services."""

    def compose(self, *arguments: str, timeout: float = 600):
        command = compose_command(self.project, "--profile", PROFILE, *arguments)
        return run(command, timeout=timeout, env=self.env)

    def services(self) -> dict[str, str]:
        """Each container's service and its state, from the engine (not from compose, which
        lists only the services of the profiles it is given)."""
        listing = run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label={PROJECT_LABEL}={self.project}",
                "--format",
                '{{.Label "com.docker.compose.service"}} {{.State}}',
            ],
            timeout=60,
        )
        assert listing.returncode == 0, listing.stderr
        return dict(line.split(" ", 1) for line in listing.stdout.splitlines() if line)


DFL_NET = {"node0", "node1", "node2", "node3", "orchestrator"}
BLADE_NET = {*CLIENTS, "blade-config", "blade-orchestrator"}
BOTH = {"control-key", "prometheus"}  # no profile: they serve either net


@pytest.mark.parametrize(
    ("profile", "net"), [(None, DFL_NET), (PROFILE, BLADE_NET)], ids=["default", PROFILE]
)
@pytest.mark.parametrize(
    "files", [("docker-compose.yml",), COMPOSE_FILES], ids=["plain", "offline"]
)
def test_a_profile_chooses_one_net(
    profile: str | None, net: set[str], files: tuple[str, ...]
) -> None:
    """`docker compose config` accepts the file with and without the profile, and the profile
    decides which net's services run: the DFL net by default (.env), the BLADE-FL net instead
    with --profile blade-fl, never both. Grafana runs with either, unless offline."""
    env = {key: value for key, value in os.environ.items() if key != "COMPOSE_PROFILES"}
    command = ["docker", "compose", *(part for name in files for part in ("-f", name))]
    if profile is not None:
        command += ["--profile", profile]
    valid = run([*command, "config", "--quiet"], timeout=60, env=env)
    assert valid.returncode == 0, valid.stderr
    listed = run([*command, "config", "--services"], timeout=60, env=env)
    assert listed.returncode == 0, listed.stderr
    grafana = set() if files == COMPOSE_FILES else {"grafana"}
    assert set(listed.stdout.split()) == net | BOTH | grafana


@pytest.fixture
def blade_stack(request, docker_images) -> Iterator[BladeStack]:
    """The offline stack with the blade-fl profile, up and healthy."""
    project = f"dfl-e2e-blade-{secrets.token_hex(4)}"
    port = free_port()
    env = {**os.environ, "PROMETHEUS_PORT": str(port)}
    env.pop("COMPOSE_PROFILES", None)  # the --profile alone decides, as in README's command
    with brought_up(BladeStack(project, f"http://127.0.0.1:{port}", env), request) as stack:
        yield stack


@dataclass(frozen=True)
class Answer:
    """What Prometheus returned for one panel query, and what is wrong with it (if anything)."""

    query: PanelQuery
    series: tuple[tuple[tuple[tuple[str, str], ...], float], ...]

    @classmethod
    def ask(cls, prometheus_url: str, query: PanelQuery) -> Answer:
        found = prometheus_series(prometheus_url, query.expr)
        return cls(query, tuple((tuple(sorted(labels.items())), value) for labels, value in found))

    @property
    def nodes(self) -> set[str]:
        return {dict(labels)["node"] for labels, _ in self.series if "node" in dict(labels)}

    def problem(self) -> str | None:
        if not self.series:
            return "no data"
        strangers = self.nodes - set(CLIENTS)
        if strangers:
            return f"series of nodes that are not BLADE-FL clients: {sorted(strangers)}"
        if self.nodes and self.nodes != set(CLIENTS):
            return f"data from {sorted(self.nodes)} only"
        values = [value for _, value in self.series]
        if self.query.panel in ZERO_BY_DESIGN:
            return None if all(value == 0 for value in values) else "expected 0 in this run"
        if not any(value != 0 and math.isfinite(value) for value in values):
            return "only zeros" if not any(math.isnan(v) for v in values) else "only 0 or NaN"
        return None

    def shown(self) -> str:
        """The values, per node where the series have one, for the test's output."""

        def name(labels: tuple[tuple[str, str], ...]) -> str:
            return ",".join(value for _, value in labels) or "-"

        return "; ".join(f"{name(labels)} {value:.4g}" for labels, value in self.series)


def chain_heights(prometheus_url: str) -> dict[str, float]:
    return {
        labels.get("node", "?"): value
        for labels, value in prometheus_series(prometheus_url, "max by (node) (dfl_chain_height)")
    }


def test_blade_profile_mines_and_fills_every_blade_fl_panel(blade_stack: BladeStack) -> None:
    queries = [q for q in dashboard_queries(ROOT / "dashboards") if q.dashboard == DASHBOARD]
    assert queries, f"no PromQL found in dashboards/{DASHBOARD}"
    assert set(ZERO_BY_DESIGN) <= {q.panel for q in queries}, "ZERO_BY_DESIGN names no panel"

    services = blade_stack.services()
    assert set(services) == RUNNING | ONE_SHOT, f"the blade-fl profile's containers: {services}"

    started = time.monotonic()
    answers: list[Answer] = []
    heights: dict[str, float] = {}
    targets: dict[str, float] = {}
    problem = ""
    while True:
        try:
            heights = chain_heights(blade_stack.prometheus_url)
            targets = targets_up(blade_stack.prometheus_url)
            answers = [Answer.ask(blade_stack.prometheus_url, query) for query in queries]
            problem = ""
        except OSError as error:  # URLError too: Prometheus still starting
            problem = f"Prometheus: {error}"
        mined = set(heights) == set(CLIENTS) and min(heights.values()) >= MIN_BLOCKS
        wrong = [answer for answer in answers if answer.problem() is not None]
        if (not problem and mined and not wrong) or time.monotonic() - started > DEADLINE:
            break
        time.sleep(POLL)
    elapsed = time.monotonic() - started

    print(f"\nafter {elapsed:.0f} s: chain heights {heights}, targets {targets}")
    for answer in answers:
        verdict = answer.problem() or "ok"
        print(f"  [{verdict}] {answer.query.panel}: {answer.query.expr!r} -> {answer.shown()}")

    assert not problem, problem
    expected_targets = {f"{client}:9100" for client in CLIENTS} | {"blade-orchestrator:9200"}
    assert targets == dict.fromkeys(expected_targets, 1.0), f"Prometheus's targets: {targets}"
    assert set(heights) == set(CLIENTS), f"chain heights: {heights}"
    assert min(heights.values()) >= MIN_BLOCKS, f"fewer than {MIN_BLOCKS} blocks: {heights}"
    wrong = [answer for answer in answers if answer.problem() is not None]
    assert not wrong, "panels without the data they should show after {:.0f} s:\n{}".format(
        elapsed,
        "\n".join(f"  {a.query.panel}: {a.problem()}: {a.query.expr}" for a in wrong),
    )

    down = blade_stack.down()
    assert down.returncode == 0, f"compose down failed: {down.stderr}"
    leftovers = blade_stack.leftovers()
    assert not any(leftovers.values()), f"left behind by `compose down -v`: {leftovers}"
