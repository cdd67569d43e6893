"""`dfl load` for real: two local DFL nodes learning while Locust calls their gRPC with every task.

One run of the command as a user runs it (its own process, 20 s, 5 users), then the run
directory is read: Locust's CSV files say what was asked and answered, load.json what the nodes
themselves counted before and after. The two must agree: every forged record and unsigned call
refused with the status its reason names and counted by the nodes under that reason, no record
taken that should have been refused, and every model the nodes took answered by a receipt.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.load.tasks import FORGED, FORGED_KINDS, TASKS, UNSIGNED, expected_of, split_name
from tests.support import assert_audit_passes

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DURATION_S = 20
USERS = 5
TIMEOUT_S = 150  # the whole command: nodes starting, 20 s of load, the end scrape, the report


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _left_running(marker: str) -> list[str]:
    """Command lines of live processes that name `marker` (the run directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command:
            found.append(command)
    return found


def run_load(out: Path, duration_s: int, *options: str) -> subprocess.CompletedProcess[str]:
    """`dfl load` on smoke-dfl.yaml cut to two local nodes, as a user runs it; exit 0 asserted."""
    command = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "load",
        str(REPO_ROOT / "experiments" / "smoke-dfl.yaml"),
        "--runtime",
        "local",
        "--out",
        str(out),
        "--set",
        "nodes.count=2",
        "--set",
        f"duration={duration_s}s",
        "--set",
        "evaluation.interval=5s",
        *options,
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def load_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("load") / "run"
    tasks = [arg for task in TASKS for arg in ("--task", f"{task}=1")]
    run_load(out, DURATION_S, "--users", str(USERS), "--quiet", *tasks)
    assert_audit_passes(out)
    return out


def test_locust_made_requests_of_every_task_and_left_its_files(load_run: Path) -> None:
    for name in ("load_stats.csv", "load_stats_history.csv", "load_failures.csv", "load.json"):
        assert (load_run / name).is_file(), name
    requests: Counter[str] = Counter()
    for row in _rows(load_run / "load_stats.csv"):
        task, _ = split_name(row["Name"])
        if task:
            assert expected_of(row["Name"]) is not None, row["Name"]
            requests[task] += int(row["Request Count"])
    assert set(requests) == set(TASKS), requests
    assert all(count > 0 for count in requests.values()), requests
    history = _rows(load_run / "load_stats_history.csv")
    assert {row["Name"] for row in history} > {"Aggregated"}  # per name over time too


def test_forged_and_unsigned_requests_are_refused_and_counted_by_reason(load_run: Path) -> None:
    failures = _rows(load_run / "load_failures.csv")
    # The only failures of requests that must be refused: shed under load before any check
    # (a full ML queue refuses every new transaction, forged or not). Never taken.
    for row in failures:
        if split_name(row["Name"])[0] in (FORGED, "unauthenticated"):
            assert row["Error"].startswith("RESOURCE_EXHAUSTED "), row
    assert not [row for row in failures if row["Error"].startswith("ACCEPTED")]

    refused_as_expected: Counter[str] = Counter()
    for row in _rows(load_run / "load_stats.csv"):
        expected = expected_of(row["Name"])
        if expected is not None and expected.status != "OK":
            refused_as_expected[expected.reason] += int(row["Request Count"]) - int(
                row["Failure Count"]
            )
    reasons = {e.reason for e in FORGED_KINDS.values()} | {UNSIGNED.reason}
    assert set(refused_as_expected) == reasons
    assert all(refused_as_expected[reason] > 0 for reason in reasons), refused_as_expected

    nodes = json.loads((load_run / "load.json").read_text())["nodes"]
    counted = {
        reason: sum(
            node["after"][f"rejected:{reason}"] - node["before"][f"rejected:{reason}"]
            for node in nodes.values()
        )
        for reason in reasons
    }
    assert counted == refused_as_expected
    assert all(node["after"]["peers_banned"] == 0 for node in nodes.values())


def test_every_transaction_the_nodes_took_was_answered_with_a_receipt(load_run: Path) -> None:
    stats = {row["Name"]: row for row in _rows(load_run / "load_stats.csv")}
    sent = stats["transaction:SubmitTransaction"]
    accepted = int(sent["Request Count"]) - int(sent["Failure Count"])
    assert accepted > 0
    # What the nodes refused of the virtual peers' transactions they refused for load only.
    for row in _rows(load_run / "load_failures.csv"):
        if row["Name"].startswith("transaction:"):
            assert row["Error"].startswith("RESOURCE_EXHAUSTED "), row

    nodes = json.loads((load_run / "load.json").read_text())["nodes"]
    assert all(node["settled"] for node in nodes.values()), nodes
    gained = {
        key: sum(node["after"][key] - node["before"][key] for node in nodes.values())
        for key in ("transactions_received", "receipts_written", "evaluations_failed")
    }
    # Every model taken (the neighbour's and the virtual peers') was evaluated and receipted.
    assert gained["evaluations_failed"] == 0
    assert gained["receipts_written"] == gained["transactions_received"] >= accepted


def test_the_report_has_a_load_section_that_agrees_with_the_nodes(load_run: Path) -> None:
    report = (load_run / "report.md").read_text()
    assert "## Load" in report
    assert "`transaction:SubmitTransaction`" in report and "`forged:bad_signature`" in report
    assert "### The nodes under load" in report
    assert "(they differ)" not in report
    assert "should have refused and took: 0\n" in report
    summary = json.loads((load_run / "summary.json").read_text())
    assert summary["load"]["users"] == USERS


def test_nothing_is_left_running(load_run: Path) -> None:
    assert _left_running(str(load_run)) == []


STEP_SECONDS = 6
STEP_USERS = (2, 4, 6)


@pytest.fixture(scope="module")
def step_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dfl load --step` with three short stages on two nodes; the run may last 120 s, but the
    end of the stages ends it."""
    out = tmp_path_factory.mktemp("load-step") / "run"
    done = run_load(
        out,
        120,
        "--task",
        "transaction=1",
        "--users",
        str(STEP_USERS[0]),
        "--step",
        "--step-users",
        str(STEP_USERS[1] - STEP_USERS[0]),
        "--step-seconds",
        str(STEP_SECONDS),
        "--step-settle",
        "2",
        "--max-users",
        str(STEP_USERS[-1]),
        "--p99-limit",
        "60000",  # this test is about the stages, not where this machine's limit lies
        "--failure-limit",
        "1",
    )
    assert "stage 2: 6 users" in done.stdout  # each stage is shown as it ends
    assert_audit_passes(out)
    return out


def test_the_step_mode_runs_its_stages_and_the_end_of_them_ends_the_run(step_run: Path) -> None:
    stages = [json.loads(line) for line in (step_run / "load_steps.jsonl").read_text().splitlines()]
    assert [stage["users"] for stage in stages] == list(STEP_USERS)
    for stage in stages:
        assert stage["requests"] > 0 and stage["over"] == ""
        assert STEP_SECONDS - 2 - 1.5 < stage["seconds"] < STEP_SECONDS  # the settled part
        assert stage["p50_ms"] <= stage["p95_ms"] <= stage["p99_ms"]
    # The users run at the default 2 tasks/s each: more users, more requests per second.
    assert stages[-1]["throughput"] > stages[0]["throughput"]
    info = json.loads((step_run / "run.json").read_text())
    assert info["duration_s"] < 60, "the run went on after its last stage"

    report = (step_run / "report.md").read_text()
    assert "### Capacity (step mode)" in report and "- knee: stage " in report
    assert "CPU per received transaction" in report
    assert (step_run / "plots" / "load_capacity.png").is_file()


def test_the_live_totals_agree_with_locusts_final_statistics(step_run: Path) -> None:
    live = json.loads((step_run / "load" / "live.json").read_text())
    counted: Counter[str] = Counter()
    for task, rpc, _, count in live["requests"]:
        counted[f"{task}:{rpc}"] += count
    stats = {row["Name"]: int(row["Request Count"]) for row in _rows(step_run / "load_stats.csv")}
    assert counted["transaction:SubmitTransaction"] == stats["transaction:SubmitTransaction"] > 0
    assert _left_running(str(step_run)) == []
