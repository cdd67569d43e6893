"""The report's memory and CPU per node: a process's own figures for a local run ("Processes"),
the container's cgroup and the process inside it for a docker run ("Containers").

The run directories are written here with round numbers (no chain stores: the report says so
and goes on), so every expected cell is computed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.report import load_run
from orchestrator.report.markdown import report_markdown
from orchestrator.report.summary import RunSummary, summarize

MIB = 2**20

# USS and PSS every 10 s (MiB), process CPU cumulative (s); n1 has no smaps_rollup (None).
USS = {"n0": (300, 340, 320), "n1": None}
PSS = {"n0": (330, 372, 350), "n1": None}
PROCESS_CPU = {"n0": (10.0, 20.0, 31.25), "n1": (5.0, 9.0, 12.5)}
# The machine's figures, as nodes exported them before they checked their cgroup was theirs.
MACHINE_MEMORY_MIB = 2225
MACHINE_CPU = 2718.0


def _run_dir(tmp_path: Path, runtime: str, *, cgroup: bool) -> Path:
    run = tmp_path / runtime
    run.mkdir()
    rows = ["time_s,node,metric,value"]
    for name in ("n0", "n1"):
        for i, t in enumerate((10, 20, 30)):
            rows.append(f"{t},{name},accuracy_test,0.5")
            rows.append(f"{t},{name},process_cpu_seconds,{PROCESS_CPU[name][i]}")
            uss, pss = USS[name], PSS[name]
            if uss is not None and pss is not None:
                rows.append(f"{t},{name},uss_bytes,{uss[i] * MIB}")
                rows.append(f"{t},{name},pss_bytes,{pss[i] * MIB}")
            if cgroup:
                rows.append(f"{t},{name},memory_bytes,{(MACHINE_MEMORY_MIB - i) * MIB}")
                rows.append(f"{t},{name},cgroup_cpu_seconds,{MACHINE_CPU + t}")
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    info = {
        "name": "processes-test",
        "runtime": runtime,
        "protocol": "dfl",
        "started_at": "2025-01-01T00:00:00+00:00",
        "duration_s": 30.0,
        "nodes": [
            {"name": n, "address": "", "peers": [], "behaviour": "normal"} for n in ("n0", "n1")
        ],
    }
    (run / "run.json").write_text(json.dumps(info))
    return run


def _render(run: Path) -> tuple[RunSummary, str]:
    data = load_run(run)
    summary = summarize(data)
    return summary, report_markdown(data, summary)


def test_a_local_run_reports_each_process_own_memory_and_cpu(tmp_path: Path) -> None:
    summary, text = _render(_run_dir(tmp_path, "local", cgroup=False))
    n0 = summary.nodes["n0"]
    assert n0.uss_mean_bytes == pytest.approx(320 * MIB)
    assert n0.uss_peak_bytes == 340 * MIB
    assert n0.pss_peak_bytes == 372 * MIB
    assert n0.process_lifetime_cpu_seconds == 31.25
    assert summary.nodes["n1"].uss_peak_bytes is None
    assert "## Processes" in text and "## Containers" not in text
    assert "| node | USS mean | USS peak | PSS peak | process CPU s |" in text
    assert "| n0 | 320 MiB | 340 MiB | 372 MiB | 31.25 |" in text
    assert "| n1 | n/a | n/a | n/a | 12.50 |" in text
    assert "- all nodes together at their PSS peaks: 372 MiB" in text


def test_a_local_run_never_shows_the_machines_cgroup_as_a_node(tmp_path: Path) -> None:
    """A run directory from before the nodes' check holds the machine's cgroup figures."""
    summary, text = _render(_run_dir(tmp_path, "local", cgroup=True))
    for node in summary.nodes.values():
        assert node.memory_peak_bytes is None and node.memory_mean_bytes is None
        assert node.cgroup_cpu_seconds is None
    assert "## Processes" in text and "## Containers" not in text
    assert f"{MACHINE_MEMORY_MIB:,} MiB" not in text and "2748" not in text
    assert "cgroup figures under the nodes' names" in text


def test_a_docker_run_shows_the_container_and_the_process_inside(tmp_path: Path) -> None:
    summary, text = _render(_run_dir(tmp_path, "docker", cgroup=True))
    n0 = summary.nodes["n0"]
    assert n0.memory_peak_bytes == MACHINE_MEMORY_MIB * MIB
    assert n0.cgroup_cpu_seconds == MACHINE_CPU + 30
    assert "## Containers" in text and "## Processes" not in text
    assert f"| n0 | 2,224 MiB | {MACHINE_MEMORY_MIB:,} MiB | 2748.00 | n/a |" in text
    assert "The node's process inside each container." in text
    assert "| n0 | 320 MiB | 340 MiB | 372 MiB | 31.25 |" in text


def test_a_run_without_memory_figures_has_neither_section(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "local", cgroup=False)
    metrics = run / "metrics.csv"
    kept = [line for line in metrics.read_text().splitlines() if "accuracy" in line]
    metrics.write_text("time_s,node,metric,value\n" + "\n".join(kept) + "\n")
    _, text = _render(run)
    assert "## Processes" not in text and "## Containers" not in text
