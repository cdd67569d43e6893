"""`dfl run --runtime swarm` across two hosts: this machine's engine as the manager and a second
engine in a network namespace of its own as the worker (tests/docker/second_engine.py).

Half the nodes are placed on each host by the spec's `placement:`; the overlay network (VXLAN
over the veth between the two) is then the only way between them. The run must place the nodes
as asked, and gossip must cross: the chains of the manager's nodes hold receipts and
confirmations signed by the worker's nodes, which they can only have received over the overlay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.docker.second_engine import (
    copy_image,
    join_swarm,
    leave_swarm,
    second_engine,
    swarm_manager,
)
from tests.support import assert_audit_passes

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = REPO_ROOT / "experiments" / "compose-dfl.yaml"
DFL = (sys.executable, "-m", "orchestrator.cli")
IMAGE = os.environ.get("DFL_IMAGE", "dfl-testbed:latest")


def two_host_spec(path: Path, manager: str, worker: str) -> Path:
    spec = yaml.safe_load(SPEC.read_text())
    spec["name"] = "swarm-two-hosts"
    spec["duration"] = "75s"
    spec["nodes"]["count"] = 4
    spec["nodes"]["injection_rate"] = 32
    spec["resources"] = {"memory": "768m"}
    spec["placement"] = {
        "nodes": {"0-1": [f"node.hostname=={manager}"], "2-3": [f"node.hostname=={worker}"]}
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_nodes_on_two_hosts_gossip_across_the_overlay(engine, tmp_path: Path) -> None:
    assert engine.info()["Swarm"]["LocalNodeState"] == "inactive", "the engine is in a swarm"
    manager = engine.info()["Name"]
    with second_engine(hostname="dfl-host2") as worker:
        copy_image(IMAGE, worker)
        with swarm_manager(engine, worker.host_addr):
            node_id = join_swarm(engine, worker.base_url, worker.engine_addr)
            try:
                out = tmp_path / "run"
                spec = two_host_spec(tmp_path / "spec.yaml", manager, worker.hostname)
                result = subprocess.run(
                    [*DFL, "run", str(spec), "--runtime", "swarm", "--out", str(out)],
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
            finally:
                leave_swarm(engine, worker.base_url, node_id)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    info = json.loads((out / "run.json").read_text())
    assert info["hosts"] == {
        "node0": manager,
        "node1": manager,
        "node2": worker.hostname,
        "node3": worker.hostname,
    }
    assert info["prometheus_targets"] == {f"node{i}": "up" for i in range(4)}
    addresses = {node["name"]: node["address"] for node in info["nodes"]}
    summary = json.loads((out / "summary.json").read_text())
    for name, node in summary["nodes"].items():  # injected into and tested across the overlay
        assert node["final_test_accuracy"] > 0.5, name
    for name in ("node0", "node1"):  # collected from the manager's engine
        export = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "chain",
                "export",
                str(out / "nodes" / name),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert addresses["node2"] in export or addresses["node3"] in export, name
    assert "## Hosts" in (out / "report.md").read_text()
    assert "stay in volume" in result.stdout  # the worker's chains: the run said where they are
    assert_audit_passes(out)
