"""The simulator carries out experiments/faults-dfl.yaml in virtual time and reports it with the
Faults section a real run's report has: the same rows (one per fault, in the order of their
begins, with the same windows and nodes), from the same files a run directory holds.

A crashed node is rebuilt as its process would be: its chain store reopened (and so re-verified)
and a fresh host resumed from the checkpoint it saved at its last aggregation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from node.ledger.store import ChainStore
from orchestrator.datasets import load_dataset
from orchestrator.report.faults import fault_windows
from orchestrator.report.readers import load_run
from orchestrator.sim.dfl import DflSimulation
from orchestrator.sim.faults import FAULTS_REPORT
from orchestrator.sim.run import simulate
from orchestrator.spec import load_spec, with_overrides
from tests.support import assert_audit_passes

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
FAULTS_SPEC = REPO_ROOT / "experiments" / "faults-dfl.yaml"


def table_rows(markdown: str) -> list[list[str]]:
    """The first Markdown table's body rows, as cells."""
    lines: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_simulator_runs_the_fault_spec_with_the_reports_faults_rows(tmp_path: Path) -> None:
    spec = load_spec(FAULTS_SPEC)
    out = tmp_path / "sim"
    summary = simulate(spec, out, progress=False, figures=False)
    assert_audit_passes(out)

    expected = [
        (f.kind, list(f.nodes), f.start, f.end) for f in sorted(spec.faults, key=lambda f: f.start)
    ]
    rows = summary["faults"]
    assert [(r["kind"], r["nodes"], r["start_s"], r["end_s"]) for r in rows] == [
        (kind, [f"node{i}" for i in nodes], start, end) for kind, nodes, start, end in expected
    ]
    markdown = (out / FAULTS_REPORT).read_text()
    assert markdown.startswith("## Faults")
    cells = table_rows(markdown)
    assert [row[0] for row in cells] == ["1", "2", "3"]
    assert [row[3] for row in cells] == [f"{s:.1f}–{e:.1f} s" for _, _, s, e in expected]
    assert (out / "plots" / "faults.png").stat().st_size > 10_000

    # faults.jsonl is the one a process run writes: every moment, in virtual seconds
    data = load_run(out)
    windows, strays = fault_windows(data.faults or ())
    assert strays == 0 and [(w.start, w.end) for w in windows] == [(s, e) for *_, s, e in expected]

    by_kind = {row["kind"]: row for row in rows}
    assert by_kind["latency"]["messages_delayed"] > 0
    assert by_kind["partition"]["messages_dropped"] > 0  # the cut links' messages
    assert by_kind["crash"]["send_failures"] > 0  # its neighbours could not reach it
    crash = by_kind["crash"]
    assert crash["next_transaction_s"] not in (None, "not within the run")

    metrics = data.metrics
    down = [t for t in metrics.series("node1", "accuracy_test").times if 40 < t < 70]
    assert down == [], "a crashed node was sampled"
    heights_at_crash = next(m for m in data.faults if m.kind == "crash").chain_heights
    for index in range(spec.nodes.count):
        with ChainStore.open(out / "nodes" / f"node{index}") as store:  # verifies every block
            assert store.height >= heights_at_crash.get(f"node{index}", 0)
    assert json.loads((out / "run.json").read_text())["runtime"] == "sim"


def test_a_restarted_simulated_node_resumes_its_checkpoint_and_chain(tmp_path: Path) -> None:
    spec = with_overrides(
        load_spec(FAULTS_SPEC),
        {
            "nodes.count": 3,
            "topology.kind": "full",
            "duration": 140,
            "faults": [{"at": "100s", "kind": "crash", "nodes": [1], "restart_after": "10s"}],
        },
    )
    simulation = DflSimulation(spec, load_dataset(spec.dataset), tmp_path, progress=False)
    network = simulation.network
    network.run(100.0)
    node = network.nodes["node1"]
    height = node.store.height
    assert height > 0, "no block finalized in 100 ticks"
    saved = simulation.checkpoints[1].load()
    assert saved is not None and saved.metadata["reason"] == "aggregation"

    network.crash("node1")
    network.run(110.0)
    assert node.engine.state.height == height  # a crashed node does nothing
    simulation.restart(1)
    restarted = simulation.hosts[1]
    assert np.array_equal(restarted.learner.weights(), saved.weights)
    assert not np.array_equal(saved.weights, simulation.hosts[0].learner.weights())
    assert node.engine.state.height == node.store.height == height
    assert node.engine.state.head_digest == node.store.head_digest
    network.run(135.0)  # training comes every 8-12 ticks
    assert node.engine.state.counters["transactions_generated"] > 0, "no work after restart"
    for store in simulation.stores:
        store.close()
