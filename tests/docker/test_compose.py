"""The testbed as users start it: `docker compose up`, then look at the dashboards.

Four DFL nodes, the orchestrator and Prometheus come up from the offline compose variant; within
five minutes every panel's PromQL must return data from the real Prometheus, and every node's
model must reach 80 % on the MNIST test set as the orchestrator measures it; Prometheus must
scrape those five and nothing else (the BLADE-FL profile's services are not running). Then
`docker compose down -v` must leave nothing of the project behind.
"""

from __future__ import annotations

import time

import pytest

from orchestrator.dashboards import dashboard_queries, queries_without_data
from tests.docker.conftest import ROOT, Stack, prometheus_series, targets_up

pytestmark = pytest.mark.docker

NODES = ("node0", "node1", "node2", "node3")
DEADLINE = 300.0  # seconds from `up` returning
MIN_ACCURACY = 0.80
POLL = 5.0


def accuracy_by_node(prometheus_url: str) -> dict[str, float]:
    """dfl_test_accuracy per node, as Prometheus has it now."""
    return {
        labels.get("node", "?"): value
        for labels, value in prometheus_series(prometheus_url, "dfl_test_accuracy")
    }


def test_compose_stack_trains_and_fills_every_dashboard(compose_stack: Stack) -> None:
    queries = dashboard_queries(ROOT / "dashboards")
    assert queries, "no PromQL found in dashboards/*.json"

    started = time.monotonic()
    empty, accuracy, problem = queries, {}, ""
    while True:
        try:
            empty = queries_without_data(compose_stack.prometheus_url, queries)
            accuracy = accuracy_by_node(compose_stack.prometheus_url)
            problem = ""
        except OSError as error:  # URLError too  # Prometheus still starting
            problem = f"Prometheus: {error}"
        trained = set(accuracy) >= set(NODES) and min(accuracy.values()) >= MIN_ACCURACY
        if (not problem and not empty and trained) or time.monotonic() - started > DEADLINE:
            break
        time.sleep(POLL)
    elapsed = time.monotonic() - started
    shown = ", ".join(f"{node} {value:.3f}" for node, value in sorted(accuracy.items()))
    print(
        f"after {elapsed:.0f} s: {len(queries) - len(empty)}/{len(queries)} queries with data, "
        f"test accuracy {shown}"
    )

    assert not problem, problem
    assert not empty, "panels without data after {:.0f} s:\n{}".format(
        elapsed, "\n".join(f"  {q.dashboard} / {q.panel}: {q.expr}" for q in empty)
    )
    assert sorted(accuracy) == sorted(NODES), f"dfl_test_accuracy series: {accuracy}"
    # Only the DFL net's services are targets: the BLADE-FL clients' names, which the scrape
    # config also lists, do not resolve without their profile, so they are not "down" targets.
    targets = targets_up(compose_stack.prometheus_url)
    expected = {f"{node}:9100" for node in NODES} | {"orchestrator:9200"}
    assert targets == dict.fromkeys(expected, 1.0), f"Prometheus's targets: {targets}"
    low = {node: value for node, value in accuracy.items() if value < MIN_ACCURACY}
    assert not low, f"test accuracy below {MIN_ACCURACY} after {elapsed:.0f} s: {low}"

    down = compose_stack.down()
    assert down.returncode == 0, f"compose down failed: {down.stderr}"
    leftovers = compose_stack.leftovers()
    assert not any(leftovers.values()), f"left behind by `compose down -v`: {leftovers}"
