"""`dfl run --runtime swarm` on a one-node swarm that the test makes and leaves as it found it.

Six DFL nodes as Swarm services with TLS between them (the swarm runtime's default), the
orchestrator in a container on the run's overlay network, Prometheus finding the nodes through
Swarm's DNS: the run must end with exit 0, valid chains, learned models, and nothing of the run
left on the engine. Before the swarm exists, the runtime must refuse and say how to make one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.runtimes.swarm import leftovers
from tests.support import assert_audit_passes

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = REPO_ROOT / "experiments" / "compose-dfl.yaml"
NODES = 6


def dfl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def swarm_run(out: Path, name: str, *extra: str) -> list[str]:
    return [
        "run", str(SPEC), "--runtime", "swarm", "--out", str(out),
        "--set", f"name={name}", "--set", f"nodes.count={NODES}",
        "--set", "nodes.injection_rate=32", "--set", "duration=90s",
        "--set", "resources.memory=768m", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def one_node_swarm(engine, tmp_path_factory):
    """This engine as a one-node swarm; left afterwards in the state it was found in."""
    state = engine.info()["Swarm"]["LocalNodeState"]
    made = state == "inactive"
    if made:
        refused = dfl(*swarm_run(tmp_path_factory.mktemp("refused"), "swarm-refused"))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "docker swarm init" in refused.stderr and "--swarm-init" in refused.stderr
        engine.swarm.init()
    try:
        yield engine
    finally:
        if made:
            engine.swarm.leave(force=True)
            assert engine.info()["Swarm"]["LocalNodeState"] == "inactive"


def test_a_six_node_swarm_run_over_tls_verifies_and_leaves_nothing(
    one_node_swarm, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = dfl(*swarm_run(out, "swarm-e2e"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    info = json.loads((out / "run.json").read_text())
    assert info["runtime"] == "swarm" and info["tls"] is True
    assert info["image_id"].startswith("sha256:")
    names = [f"node{index}" for index in range(NODES)]
    assert sorted(info["hosts"]) == names  # every task was placed, on this engine's host
    assert set(info["hosts"].values()) == {one_node_swarm.info()["Name"]}
    # Prometheus found each node's task through tasks.<service> and scraped it.
    assert info["prometheus_targets"] == {name: "up" for name in names}, info["prometheus_targets"]
    for name in names:
        states = info["health"][name]
        assert states.get("healthy", 0) >= 1 and states.get("unhealthy", 0) == 0, (name, states)
        verify = dfl("chain", "verify", str(out / "nodes" / name), timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        log = (out / "nodes" / name / "node.log").read_text()
        assert "listening" in log, log[-2000:]
        assert (out / "nodes" / name / "tls").exists() is False  # the key stayed a secret

    summary = json.loads((out / "summary.json").read_text())
    for name, node in summary["nodes"].items():
        assert node["final_test_accuracy"] > 0.5, name  # 90 s at 32 samples/s learns something
        assert node["memory_peak_bytes"] is not None, name
    report = (out / "report.md").read_text()
    assert "## Hosts" in report and "Prometheus found 6 of 6 nodes" in report
    assert leftovers(one_node_swarm, info["run_id"]) == []
    assert_audit_passes(out)
