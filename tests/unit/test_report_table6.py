"""The CPU section as the paper's Table 6 (orchestrator/report/table6.py), from profiles with round
numbers, so that every cell, share and remainder below is worked out by hand.

PROFILE is a node's profile.json with the accounting fields (start-up, apportioned, remainder,
cgroup); OLD_PROFILE one from before them, which must still render.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from orchestrator.compare import compare, comparison_markdown
from orchestrator.report import load_run, summarize
from orchestrator.report.cpu_table import TASK_ORDER, is_protocol_task, task_rows
from orchestrator.report.markdown import report_markdown
from orchestrator.report.render import json_ready
from orchestrator.report.schema import CpuProfile
from orchestrator.report.table6 import (
    PAPER_SHARES,
    PAPER_TABLE6,
    AccountedProfile,
    account_notes,
    accounted,
    cpu_account,
    protocol_shares,
    table6_rows,
)

# Protocol tasks: 20.0 s. blockchain 0.3 + 0.4 + 0.2 = 0.9 (4.5 %), network 0.5 + 1.0 + 0.2 +
# 1.6 = 3.3 (16.5 %), ml 0.2 + 6.0 + 2.0 + 7.6 = 15.8 (79.0 %). generate block's ml and update
# model's network have no paper column; update model has no blockchain entry (a 0.00 cell).
# observe 4.0 and other 0.5 make the entries 24.5 of a process CPU of 25.0 since start-up:
# remainder 0.5, attributed 98 %. Start-up 5.0: process total 30.0; the container 31.5.
ENTRIES = {
    ("generate_block", "network"): 0.5,
    ("generate_block", "blockchain"): 0.3,
    ("generate_block", "ml"): 0.2,
    ("generate_transaction", "network"): 1.0,
    ("generate_transaction", "ml"): 6.0,
    ("generate_transaction", "blockchain"): 0.4,
    ("update_model", "ml"): 2.0,
    ("update_model", "network"): 0.2,
    ("receive_transaction", "network"): 1.6,
    ("receive_transaction", "ml"): 7.6,
    ("receive_transaction", "blockchain"): 0.2,
    ("observe", "network"): 3.0,
    ("observe", "ml"): 1.0,
    ("other", "blockchain"): 0.5,
}
APPORTIONED = {("receive_transaction", "network"): 1.0, ("observe", "network"): 0.5}
PROFILE = {
    "unit": "cpu_seconds",
    "entries": [
        {"task": t, "category": c, "seconds": s, "scopes": 1} for (t, c), s in ENTRIES.items()
    ],
    "profiled_seconds": 24.5,
    "process_cpu_seconds": 25.0,
    "process_cpu_seconds_at_start": 4.0,  # ignored: startup_cpu_seconds is there
    "startup_cpu_seconds": 5.0,
    "apportioned": [{"task": t, "category": c, "seconds": s} for (t, c), s in APPORTIONED.items()],
    "remainder_seconds": 0.5,
    "attributed_share": 0.98,
    "cgroup_cpu_seconds": 31.5,
}
# Before the accounting fields: "cpu" for the list, no start-up, no observe task.
OLD_PROFILE = {
    "cpu": [
        {"task": "generate_transaction", "category": "ml", "seconds": 3.0},
        {"task": "receive_transaction", "category": "blockchain", "seconds": 1.0},
        {"task": "other", "category": "network", "seconds": 4.0},
    ],
    "process_cpu_seconds": 10.0,
    "profiled_seconds": 8.0,
}


def _run(directory: Path, profiles: dict[str, dict], runtime: str = "docker") -> Path:
    """A run directory with run.json and the nodes' profile.json only (no chain, no metrics)."""
    description = {
        "name": "table6",
        "runtime": runtime,
        "protocol": "dfl",
        "started_at": "2025-01-01T00:00:00+00:00",
        "duration_s": 100.0,
        "nodes": [{"name": n, "peers": [p for p in profiles if p != n]} for n in profiles],
    }
    directory.mkdir(parents=True)
    (directory / "run.json").write_text(json.dumps(description))
    (directory / "metrics.csv").write_text("time_s,node,metric,value\n")
    for name, profile in profiles.items():
        (directory / "nodes" / name).mkdir(parents=True)
        (directory / "nodes" / name / "profile.json").write_text(json.dumps(profile))
    return directory


def _report(directory: Path) -> str:
    data = load_run(directory)
    return report_markdown(data, summarize(data))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return _run(tmp_path / "run", {"n0": PROFILE, "n1": OLD_PROFILE})


def test_table6_cells_follow_the_papers_columns_and_keep_the_others() -> None:
    rows = {(r.task, r.category): r for r in table6_rows(ENTRIES)}
    # Three columns per task as the paper has them, plus the two it has no column for; observe
    # and other are not Table 6 rows.
    assert len(rows) == 10 + 2
    assert rows[("generate_block", "network")].label == "gather confirmation"
    assert rows[("generate_block", "network")].ours == pytest.approx(0.5)
    assert rows[("generate_block", "network")].paper == {"node-1": 56.63, "node-2": 105.66}
    assert rows[("receive_transaction", "ml")].label == "calculate accuracy"
    assert rows[("receive_transaction", "ml")].paper["node-1"] == 1944.49
    assert rows[("update_model", "blockchain")].ours == 0.0  # the paper's column, ours empty
    extra = rows[("generate_block", "ml")]
    assert extra.label == "ml (no paper column)" and not extra.in_paper
    assert rows[("update_model", "network")].ours == pytest.approx(0.2)
    assert sum(r.ours for r in rows.values()) == pytest.approx(20.0)  # no protocol CPU dropped
    assert [r.task for r in table6_rows(ENTRIES)][:3] == ["generate_block"] * 3  # paper order


def test_protocol_shares_leave_observe_and_other_out() -> None:
    shares = protocol_shares(ENTRIES)
    assert shares.total == pytest.approx(20.0)
    assert shares.blockchain == pytest.approx(0.045)
    assert shares.network == pytest.approx(0.165)
    assert shares.ml == pytest.approx(0.79)
    busier = {**ENTRIES, ("observe", "network"): 300.0, ("other", "blockchain"): 50.0}
    assert protocol_shares(busier) == shares
    assert not is_protocol_task("observe") and not is_protocol_task("other")
    assert is_protocol_task("mine")  # BLADE-FL's tasks are the protocol's
    assert TASK_ORDER[-2:] == ("observe", "other")
    assert task_rows(["other", "observe", "update_model"]) == ["update_model", "observe", "other"]


def test_the_papers_figures_add_up_to_its_text() -> None:
    node1 = PAPER_SHARES["node-1"]
    assert node1.total == pytest.approx(2777.90)
    assert node1.blockchain == pytest.approx(35.52 / 2777.90)
    assert node1.network == pytest.approx(342.83 / 2777.90)
    assert node1.ml == pytest.approx(2399.55 / 2777.90)
    assert sum(PAPER_TABLE6["node-2"].values()) == pytest.approx(2467.65)


def test_the_account_covers_all_of_the_process_cpu(run_dir: Path) -> None:
    profile = load_run(run_dir).nodes["n0"].profile
    assert isinstance(profile, AccountedProfile)
    assert profile.startup_cpu_seconds == 5.0 and profile.startup_source == "startup_cpu_seconds"
    assert profile.apportioned == APPORTIONED
    account = cpu_account(profile, own_cgroup=True)
    lines = {line.label: line for line in account.lines}
    assert account.process_total == pytest.approx(30.0)
    assert lines["remainder (no task claimed it)"].seconds == pytest.approx(0.5)
    assert lines["observe (testbed)"].seconds == pytest.approx(4.0)
    parts = [line.seconds for line in account.lines if line.kind == "part"]
    assert sum(parts) == pytest.approx(30.0)  # start-up + tasks + remainder = the total
    assert lines["container (cgroup) total"].seconds == 31.5
    outside = lines["outside the node process (health checks, `docker exec`, init)"]
    assert outside.seconds == pytest.approx(1.5)
    # A local node's cgroup is the machine's: no container lines.
    assert all(line.kind != "beyond" for line in cpu_account(profile, own_cgroup=False).lines)


def test_summary_carries_the_protocol_shares_and_the_attributed_share(run_dir: Path) -> None:
    nodes = json_ready(asdict(summarize(load_run(run_dir))))["nodes"]
    n0 = nodes["n0"]
    assert n0["protocol_cpu_seconds"] == pytest.approx(20.0)
    assert n0["protocol_blockchain_share"] == pytest.approx(0.045)
    assert n0["protocol_network_share"] == pytest.approx(0.165)
    assert n0["protocol_ml_share"] == pytest.approx(0.79)
    assert n0["attributed_share"] == pytest.approx(0.98)
    assert n0["startup_cpu_seconds"] == 5.0
    assert n0["remainder_cpu_seconds"] == pytest.approx(0.5)
    assert n0["cpu_seconds_by_task"]["observe"] == pytest.approx(4.0)
    assert n0["blockchain_share"] == pytest.approx(1.4 / 24.5)  # of all profiled CPU, as before
    # The old profile: shares from its entries, no start-up.
    n1 = nodes["n1"]
    assert n1["protocol_blockchain_share"] == pytest.approx(0.25)
    assert n1["attributed_share"] == pytest.approx(0.8)
    assert n1["startup_cpu_seconds"] is None
    assert n1["remainder_cpu_seconds"] == pytest.approx(2.0)


def test_the_section_shows_table6_the_papers_figures_and_all_the_cpu(run_dir: Path) -> None:
    text = _report(run_dir)
    section = text[text.index("## CPU time") : text.index("### n1")]
    # Overview: protocol shares with their targets, attributed share, then the paper's nodes.
    assert (
        "| n0 | 20.00 | 4.5 % (> 4 %) | 16.5 % (> 15 %) | 79.0 % | 4.00 | 0.50 | 5.00 | 25.00 "
        "| 98.0 % |"
    ) in section
    assert "| paper node-1 | 2777.90 | 1.3 % | 12.3 % | 86.4 % |" in section
    # Table 6: ours, share of our protocol total, then the paper's two nodes.
    assert (
        "| generate block | gather confirmation | 0.50 | 2.5 % | 56.63 | 2.0 % | 105.66 | 4.3 % |"
    ) in section
    assert "|  | ml (no paper column) | 0.20 | 1.0 % | — | — | — | — |" in section
    assert "|  | calculate accuracy | 7.60 | 38.0 % | 1944.49 | 70.0 % | 1438.01 | 58.3 % |" in (
        section
    )
    assert (
        "| **blockchain** | all tasks | 0.90 | 4.5 % | 35.52 | 1.3 % | 36.38 | 1.5 % |" in section
    )
    # All the CPU: shares of the process total of 30 s.
    assert "| start-up (until serving) |  |  |  | 5.00 | 16.7 % |" in section
    assert "| observe (testbed) | 1.00 | 0.00 | 3.00 | 4.00 | 13.3 % |" in section
    assert "| remainder (no task claimed it) |  |  |  | 0.50 | 1.7 % |" in section
    assert "| **process total** |  |  |  | **30.00** | **100.0 %** |" in section
    assert "| outside the node process (health checks, `docker exec`, init) |" in section
    assert "protocol blockchain share = 0.90 / 20.00 = 4.5 % (target ≤ 4 %;" in section
    assert "gRPC's own C threads" in section and "receive transactions network 1.00" in section


def test_a_profile_without_the_new_fields_still_renders(run_dir: Path) -> None:
    text = _report(run_dir)
    section = text[text.index("### n1") :]
    assert "| start-up" not in section.split("###")[1]
    assert "| **process CPU since start-up** |  |  |  | **10.00** | **100.0 %** |" in section
    assert "| remainder (no task claimed it) |  |  |  | 2.00 | 20.0 % |" in section
    assert "start-up: not in this profile.json" in section
    assert "| generate block | gather confirmation | 0.00 | 0.0 % |" in section  # DFL: all four
    assert "protocol blockchain share = 1.00 / 4.00 = 25.0 %" in section


def test_an_older_profile_takes_its_start_up_from_the_profilers_start(tmp_path: Path) -> None:
    old = {**OLD_PROFILE, "process_cpu_seconds_at_start": 2.0, "cgroup_cpu_seconds": 99.0}
    profile = load_run(_run(tmp_path / "run", {"n0": old}, runtime="local")).nodes["n0"].profile
    assert profile is not None
    account = cpu_account(profile, own_cgroup=False)
    assert account.process_total == pytest.approx(12.0)
    assert account.startup_source == "process_cpu_seconds_at_start"
    text = _report(tmp_path / "run")
    assert "from `process_cpu_seconds_at_start`" in text
    assert "container (cgroup)" not in text  # a local run's cgroup is the machine's


def test_a_profile_rebuilt_from_metrics_has_no_account_figures() -> None:
    plain = CpuProfile({("generate_block", "blockchain"): 1.0}, None, None, "metrics.csv")
    assert accounted(plain).startup_cpu_seconds is None
    account = cpu_account(plain, own_cgroup=True)
    assert account.process_total is None
    assert [line.seconds for line in account.lines if line.kind == "total"] == [None]
    assert account_notes(account) == []  # nothing to say where nothing was recorded


def test_compare_prints_the_protocol_shares(tmp_path: Path) -> None:
    first = _run(tmp_path / "a", {"n0": PROFILE})
    second = _run(tmp_path / "b", {"n0": OLD_PROFILE})
    runs = compare([load_run(first), load_run(second)], tmp_path)
    assert runs[0].protocol_blockchain_share.mean == pytest.approx(0.045)
    assert runs[0].protocol_figures == {}  # the new summary fields are common ones
    text = comparison_markdown(runs)
    assert "| table6 (dfl, a) | 4.5 % | 4.5 % .. 4.5 % | n0 4.5 % | 16.5 % |" in text
