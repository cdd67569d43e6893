"""How the orchestrator turns the faults active at a moment into each node's network state."""

from __future__ import annotations

from pathlib import Path

from orchestrator.faults import network_state
from orchestrator.spec import load_spec, with_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]


def spec_with(faults: list[dict]) -> object:
    base = load_spec(REPO_ROOT / "experiments" / "smoke-dfl.yaml")
    return with_overrides(base, {"nodes.count": 6, "duration": 100, "faults": faults})


def address(index: int) -> str:
    return f"node{index}:50051"


def test_faults_of_different_kinds_on_one_node_compose() -> None:
    spec = spec_with(
        [
            {"at": 10, "kind": "latency", "nodes": [1], "delay": 0.2, "jitter": 0.05,
             "duration": 30},
            {"at": 20, "kind": "loss", "nodes": [1, 2], "probability": 0.25, "duration": 30},
            {"at": 25, "kind": "partition", "groups": [[0, 1], [2, 3]], "duration": 10},
        ]
    )  # fmt: skip
    active = list(spec.faults)
    one = network_state(active, 1, address)
    assert (one.delay_ms, one.jitter_ms, one.loss) == (200, 50, 0.25)
    assert list(one.cut) == ["node2:50051", "node3:50051"]
    two = network_state(active, 2, address)
    assert (two.delay_ms, two.loss, list(two.cut)) == (0, 0.25, ["node0:50051", "node1:50051"])
    outside = network_state(active, 5, address)  # in no group: keeps every link
    assert outside == type(outside)()


def test_an_ended_fault_leaves_nothing_behind() -> None:
    spec = spec_with([{"at": 10, "kind": "latency", "nodes": [1], "delay": 0.2, "duration": 30}])
    assert network_state(list(spec.faults), 1, address).delay_ms == 200
    assert network_state([], 1, address) == type(network_state([], 1, address))()


def test_the_timeline_lifts_a_window_before_the_next_begins() -> None:
    spec = spec_with(
        [
            {"at": 10, "kind": "pause", "nodes": [1], "duration": 10},
            {"at": 20, "kind": "pause", "nodes": [1], "duration": 5},
        ]
    )
    steps = [(step.time, step.phase) for step in spec.fault_timeline()]
    assert steps == [(10, "begin"), (20, "end"), (20, "begin"), (25, "end")]
