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


@pytest.fixture(scope="module")
def load_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("load") / "run"
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
        f"duration={DURATION_S}s",
        "--set",
        "evaluation.interval=5s",
        "--users",
        str(USERS),
        "--quiet",
        *(arg for task in TASKS for arg in ("--task", f"{task}=1")),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
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
