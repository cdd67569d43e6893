"""`dfl run --runtime docker`: real containers from the dfl-testbed image, driven from the host.

A small DFL run end to end (containers healthy, chains collected and valid, nothing left behind),
and Ctrl-C in the middle of a run, which must still collect, report and remove everything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.datasets import DATA_DIR_ENV, ensure_dataset
from orchestrator.runtimes.docker import RUN_LABEL, leftovers
from tests.support import assert_audit_passes

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = REPO_ROOT / "experiments" / "compose-dfl.yaml"


@pytest.fixture(scope="module")
def data_env() -> dict[str, str]:
    """The orchestrator on the host injects MNIST: prepared once, shared with the other tests."""
    data = Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data")
    ensure_dataset("mnist", data)
    return {**os.environ, DATA_DIR_ENV: str(data)}


def dfl(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def small_run(out: Path, name: str, duration: str) -> list[str]:
    return [
        "run",
        str(SPEC),
        "--runtime",
        "docker",
        "--out",
        str(out),
        "--set",
        f"name={name}",
        "--set",
        "nodes.count=3",
        "--set",
        "nodes.injection_rate=32",
        "--set",
        f"duration={duration}",
        "--set",
        "resources.memory=768m",
    ]


def test_a_docker_run_collects_valid_chains_and_leaves_nothing(
    engine, data_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    process = dfl(data_env, *small_run(out, "docker-e2e", "60s"))
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output

    info = json.loads((out / "run.json").read_text())
    assert info["runtime"] == "docker"
    assert leftovers(engine, info["run_id"]) == []
    assert [n["name"] for n in info["nodes"]] == ["node0", "node1", "node2"]
    for node in info["nodes"]:
        states = info["health"][node["name"]]
        assert states.get("healthy", 0) >= 1 and states.get("unhealthy", 0) == 0, states
        verify = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "chain",
                "verify",
                str(out / "nodes" / node["name"]),
            ],
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert (out / "nodes" / node["name"] / "node.log").stat().st_size > 0

    summary = json.loads((out / "summary.json").read_text())
    for name, node in summary["nodes"].items():
        assert node["final_test_accuracy"] > 0.5, name  # 60 s at 32 samples/s learns something
        assert node["memory_peak_bytes"] is not None, name  # read from the container's cgroup
        assert 50 * 2**20 < node["memory_peak_bytes"] < 768 * 2**20, name
    assert "## Containers" in (out / "report.md").read_text()
    assert_audit_passes(out)


def test_ctrl_c_stops_the_run_and_still_removes_everything(
    engine, data_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    process = dfl(data_env, *small_run(out, "docker-sigint", "10m"))
    lines = []
    deadline = time.monotonic() + 300
    assert process.stdout is not None
    for line in process.stdout:  # wait for the first progress line: the run is under way
        lines.append(line)
        if line.startswith("[") or time.monotonic() > deadline:
            break
    run_ids = {
        c.labels[RUN_LABEL]
        for c in engine.containers.list(filters={"label": "dfl-testbed.experiment=docker-sigint"})
    }
    assert len(run_ids) == 1, "".join(lines)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, "".join(lines) + output

    (run_id,) = run_ids
    assert leftovers(engine, run_id) == []
    info = json.loads((out / "run.json").read_text())
    assert info["duration_s"] < 300  # stopped early, not at the spec's 10 minutes
    assert (out / "report.md").is_file()
    assert (out / "nodes" / "node0" / "chain.sqlite").is_file()
    assert_audit_passes(out)
