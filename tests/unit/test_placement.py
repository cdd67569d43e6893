"""The spec's `placement:` section: Swarm constraints per node or group, checked at parse time."""

from __future__ import annotations

import pytest

from orchestrator.runtimes.swarm import health_interval, memory_bytes
from orchestrator.spec import SpecError, parse_yaml, spec_digest

BASE = """\
name: placed
protocol: dfl
seed: 3
duration: 30
model: mlp
dataset: mnist
nodes:
  count: 6
"""


def test_constraints_apply_to_every_node_and_to_their_groups() -> None:
    spec = parse_yaml(
        BASE
        + """\
placement:
  all: ["node.role == worker"]
  nodes:
    "0-2": ["node.labels.zone==a"]
    "2,5": ["node.hostname!=host3", "node.labels.zone==a"]
"""
    )
    assert spec.placement is not None
    assert spec.placement.constraints_of(0) == ["node.role == worker", "node.labels.zone==a"]
    assert spec.placement.constraints_of(2) == [
        "node.role == worker",
        "node.labels.zone==a",
        "node.hostname!=host3",
    ]
    assert spec.placement.constraints_of(4) == ["node.role == worker"]


def test_no_placement_leaves_the_spec_digest_as_it_was() -> None:
    assert parse_yaml(BASE).placement is None
    placed = parse_yaml(BASE + "placement:\n  all: ['node.role==manager']\n")
    assert spec_digest(placed) != spec_digest(parse_yaml(BASE))
    assert "placement" not in parse_yaml(BASE).to_yaml()


@pytest.mark.parametrize(
    ("section", "path", "says"),
    [
        ("  all: ['zone=a']\n", "placement.all", "not a Swarm constraint"),
        ("  nodes:\n    '0-9': ['node.role==worker']\n", "placement.nodes.0-9", "nodes.count is 6"),
        ("  nodes:\n    'first': ['node.role==worker']\n", "placement.nodes", "by index"),
        ("  nodes:\n    '4-2': ['node.role==worker']\n", "placement.nodes", "low-high"),
    ],
)
def test_a_bad_placement_names_the_field_and_the_fix(section: str, path: str, says: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_yaml(BASE + "placement:\n" + section)
    problems = {p.path: p.message for p in excinfo.value.problems}
    assert path in problems, problems
    assert says in problems[path]


def test_memory_limits_and_health_intervals_for_services() -> None:
    assert memory_bytes("768m") == 768 * 2**20
    assert memory_bytes("2g") == 2 * 2**30
    assert memory_bytes("512") == 512
    assert health_interval(4) == 10.0  # small runs are reachable (healthy) soon
    assert health_interval(6) == 15.0
    assert health_interval(24) == 60.0 and health_interval(80) == 60.0  # the image's interval
