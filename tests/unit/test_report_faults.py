"""The run report's Faults section over a synthetic run directory, and the orchestrator's fault
gauge.

faults.jsonl and metrics.csv are written here by hand, with the faults' JSON form taken from the
spec's own models (as orchestrator/faults.py writes it), so every expected figure below can be
worked out from the tables in this file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from orchestrator.exporter import OrchestratorMetrics
from orchestrator.report import load_run, render_report
from orchestrator.report.faults import (
    NEVER,
    fault_windows,
    first_rise_after,
    increase,
    recovery_after,
    slowest,
)
from orchestrator.report.schema import FaultMoment, Series
from orchestrator.spec.faults import CrashFault, LatencyFault, PartitionFault

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ("n0", "n1", "n2", "n3")
DURATION = 110.0

# Per node, per sample time: accuracy_test, chain_height, transactions_sent, rejected, and, for
# the nodes that export them, fault_messages_dropped and fault_messages_delayed.
# n1 crashes at 20 s and restarts at 50 s: not sampled at 30, 40, 50; its process counters
# (transactions_sent, rejected) start again from 0. n2 crashes at 100 s for good: no sample at
# 110. n1 carries no fault-message columns (as from a driver that does not scrape them).
ROWS: dict[str, dict[int, tuple[float, ...]]] = {
    "n0": {
        0: (0.1, 0, 0, 0, 0, 0),
        10: (0.2, 1, 2, 0, 0, 0),
        20: (0.3, 2, 4, 0, 0, 0),
        30: (0.4, 3, 6, 0, 0, 0),
        40: (0.5, 4, 8, 3, 0, 0),
        50: (0.6, 5, 10, 3, 0, 0),
        60: (0.7, 6, 12, 3, 0, 0),
        70: (0.75, 7, 14, 3, 0, 0),
        80: (0.8, 8, 16, 3, 0, 0),
        90: (0.7, 9, 18, 5, 4, 0),
        100: (0.85, 10, 20, 5, 4, 0),
        110: (0.85, 11, 22, 6, 4, 0),
    },
    "n1": {
        0: (0.1, 0, 0, 0),
        10: (0.4, 1, 2, 0),
        20: (0.5, 2, 4, 1),
        60: (0.3, 6, 0, 0),
        70: (0.45, 7, 1, 0),
        80: (0.55, 8, 3, 0),
        90: (0.5, 9, 5, 0),
        100: (0.52, 10, 7, 0),
        110: (0.53, 11, 9, 0),
    },
    "n2": {
        **{t: (0.5, t // 10, t // 5, 0, 0, 0) for t in range(0, 61, 10)},
        70: (0.5, 7, 14, 2, 0, 0),
        80: (0.5, 8, 16, 2, 0, 0),
        90: (0.5, 9, 16, 2, 6, 0),
        100: (0.5, 10, 16, 2, 6, 0),
    },
    "n3": {
        0: (0.2, 0, 0, 0, 0, 0),
        10: (0.4, 1, 2, 0, 0, 0),
        20: (0.6, 2, 4, 0, 0, 0),
        30: (0.7, 3, 6, 0, 0, 0),
        40: (0.65, 4, 6, 0, 0, 5),
        50: (0.6, 5, 6, 0, 0, 12),
        60: (0.62, 6, 6, 0, 0, 20),
        70: (0.68, 6, 6, 0, 0, 30),
        80: (0.72, 7, 6, 0, 0, 30),
        90: (0.75, 8, 9, 0, 1, 30),
        100: (0.75, 9, 10, 0, 1, 30),
        110: (0.75, 10, 11, 0, 1, 30),
    },
}
COLUMNS = (
    "accuracy_test",
    "chain_height",
    "transactions_sent",
    "rejected",
    "fault_messages_dropped",
    "fault_messages_delayed",
)

CRASH = CrashFault(at=20, nodes=[1], restart_after=30)
LATENCY = LatencyFault(at=30, nodes=[3], delay="200ms", jitter="50ms", duration="40s")
PARTITION = PartitionFault(at=80, groups=[[2, 3], [0, 1]], duration=10)
FOR_GOOD = CrashFault(at=100, nodes=[2])
# (time, phase, fault, chain heights of the nodes that answered), in the order the runner
# writes them. n1 is down from 20 s to 50 s and does not answer then.
MOMENTS = [
    (20.0, "begin", CRASH, {"n0": 2, "n1": 2, "n2": 2, "n3": 2}),
    (30.0, "begin", LATENCY, {"n0": 3, "n2": 3, "n3": 3}),
    (50.0, "end", CRASH, {"n0": 5, "n2": 5, "n3": 5}),
    (70.0, "end", LATENCY, {"n0": 7, "n1": 7, "n2": 7, "n3": 6}),
    (80.0, "begin", PARTITION, {"n0": 8, "n1": 8, "n2": 8, "n3": 7}),
    (90.0, "end", PARTITION, {"n0": 9, "n1": 9, "n2": 9, "n3": 8}),
    (100.0, "begin", FOR_GOOD, {"n0": 10, "n1": 10, "n2": 10, "n3": 9}),
]


def _fault_line(time_s: float, phase: str, fault, heights: dict[str, int]) -> str:
    return json.dumps(
        {
            "time_s": time_s,
            "unix": 1_700_000_000 + time_s,
            "phase": phase,
            "kind": fault.kind,
            "nodes": list(fault.nodes),
            "fault": fault.model_dump(mode="json"),
            "chain_heights": heights,
        }
    )


def _write_metrics(path: Path, columns: tuple[str, ...] = COLUMNS) -> None:
    rows = ["time_s,node,metric,value"]
    for node, samples in ROWS.items():
        for t, values in samples.items():
            for metric, value in zip(columns, values, strict=False):
                rows.append(f"{t}.00,{node},{metric},{value}")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    description = {
        "name": "faults-test",
        "runtime": "local",
        "protocol": "dfl",
        "started_at": "2025-01-01T00:00:00+00:00",
        "duration_s": DURATION,
        "nodes": [{"name": n, "peers": [p for p in NAMES if p != n]} for n in NAMES],
    }
    (run / "run.json").write_text(json.dumps(description))
    (run / "spec.yaml").write_text("name: faults-test\n")
    _write_metrics(run / "metrics.csv")
    (run / "faults.jsonl").write_text("\n".join(_fault_line(*m) for m in MOMENTS) + "\n")
    return run


def _faults(run: Path) -> list[dict]:
    return json.loads((run / "summary.json").read_text())["faults"]


def test_one_row_per_fault_with_every_figure(run_dir: Path) -> None:
    text = render_report(run_dir).read_text()
    assert "## Faults" in text
    # 1. n1 down 20-50 s. Before: accuracy 0.5 at 20 s; not sampled in the window, so its first
    #    sample after the end (0.3 at 60 s): drop 0.2, back at 0.5 at 80 s (30 s). Its
    #    transactions_sent restarted from 0: 0 at 60 s is no rise, 1 at 70 s is (20 s); its
    #    chain rose to 6 at 60 s (10 s). Height after: not in the end line (it was down), so
    #    its last sample, 11. Rejections from 20 s to the first sample at or after 50 s: n0's 3
    #    (n1's fell from 1 to 0: a restart, nothing new). n1 has no fault-message counters.
    assert (
        "| 1 | crash (restart after 30 s) | n1 | 20.0–50.0 s | 2 | 11* | 20.0 s | 10.0 s "
        "| 0.200 | 30.0 s | — | — | 3 |" in text
    )
    # 2. latency on n3 30-70 s: before 0.7, lowest 0.6 at 50 s, back above 0.7 at 80 s (10 s);
    #    transactions_sent stuck at 6 until 90 s (20 s), chain 6 -> 7 at 80 s (10 s); 30
    #    messages delayed (0 at 30 s, 30 at 70 s); rejections n0 3 + n2 2.
    assert (
        "| 2 | latency (200 ms ± 50 ms) | n3 | 30.0–70.0 s | 3 | 6 | 20.0 s | 10.0 s "
        "| 0.100 | 10.0 s | 0 | 30 | 5 |" in text
    )
    # 3. partition {n2, n3} / {n0, n1} 80-90 s, nodes in group order. Drops: n2 0, n3 -0.03
    #    (it rose), n0 0.1, n1 0.05: mean 0.03. n2 sent nothing after the end and n1 never got
    #    back to 0.55: both "not within the run". Every chain rose at 100 s. Dropped: n2 6 +
    #    n0 4 + n3 1 (n1 has no counter); rejections: n0 3 -> 5.
    assert (
        "| 3 | partition (2 groups) | n2, n3 / n0, n1 | 80.0–90.0 s | 8, 7, 8, 8 | 9, 8, 9, 9 "
        "| not within the run | 10.0 s | 0.030 | not within the run | 11 | 0 | 2 |" in text
    )
    # 4. n2 crashes at 100 s for good: no end, so no times and no window samples; height after
    #    is its last sample. Rejections after 100 s: n0 5 -> 6.
    assert (
        "| 4 | crash (no restart) | n2 | 100.0 s to the end | 10 | 10* | n/a | n/a | n/a | n/a "
        "| 0 | 0 | 1 |" in text
    )
    assert "![accuracy with the fault windows](plots/faults.png)" in text
    assert "metrics.csv has no" not in text  # the counters are there (for three nodes)


def test_a_partition_is_detailed_by_node(run_dir: Path) -> None:
    text = render_report(run_dir).read_text()
    assert "### Faults by node" in text
    assert (
        "| 3 | partition | n2 | 8 | 9 | not within the run | 10.0 s | 0.500 | 0.500 | 0.000 "
        "| 0.0 s |" in text
    )
    assert (
        "| 3 | partition | n3 | 7 | 8 | 10.0 s | 10.0 s | 0.720 | 0.750 | -0.030 | 0.0 s |" in text
    )
    assert (
        "| 3 | partition | n0 | 8 | 9 | 10.0 s | 10.0 s | 0.800 | 0.700 | 0.100 | 10.0 s |" in text
    )
    assert (
        "| 3 | partition | n1 | 8 | 9 | 10.0 s | 10.0 s | 0.550 | 0.500 | 0.050 "
        "| not within the run |" in text
    )
    assert "| 1 | crash | n1 |" not in text  # single-node faults are in the main table only


def test_summary_json_holds_the_same_figures(run_dir: Path) -> None:
    render_report(run_dir)
    crash, latency, partition, for_good = _faults(run_dir)
    assert crash["kind"] == "crash" and crash["nodes"] == ["n1"]
    assert (crash["start_s"], crash["end_s"]) == (20.0, 50.0)
    assert crash["accuracy_drop"] == pytest.approx(0.2)
    assert crash["recovery_s"] == pytest.approx(30.0)
    assert crash["next_transaction_s"] == pytest.approx(20.0)
    assert crash["next_block_s"] == pytest.approx(10.0)
    assert crash["messages_dropped"] is None and crash["messages_delayed"] is None
    assert crash["rejections"] == 3
    [n1] = crash["by_node"]
    assert n1["height_before"] == 2 and n1["height_after"] == 11
    assert n1["height_after_from_metrics"] is True
    assert n1["accuracy_before"] == 0.5 and n1["accuracy_min"] == 0.3
    assert latency["messages_delayed"] == 30 and latency["messages_dropped"] == 0
    assert latency["by_node"][0]["height_after_from_metrics"] is False
    assert partition["groups"] == [["n2", "n3"], ["n0", "n1"]]
    assert partition["nodes"] == ["n2", "n3", "n0", "n1"]
    assert partition["accuracy_drop"] == pytest.approx(0.03)
    assert partition["recovery_s"] == NEVER and partition["next_transaction_s"] == NEVER
    assert partition["messages_dropped"] == 11
    assert for_good["end_s"] is None and for_good["accuracy_drop"] is None
    assert for_good["recovery_s"] is None and for_good["setting"] == "no restart"
    assert for_good["send_failures"] is None  # this metrics.csv has no send_failures


def test_the_faults_plot_is_drawn(run_dir: Path) -> None:
    render_report(run_dir)
    data = (run_dir / "plots" / "faults.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_without_the_fault_message_counters_the_columns_show_a_dash(run_dir: Path) -> None:
    _write_metrics(run_dir / "metrics.csv", COLUMNS[:4])
    text = render_report(run_dir).read_text()
    assert "| 0.100 | 10.0 s | — | — | 5 |" in text  # the latency fault
    assert "| 0.030 | not within the run | — | — | 2 |" in text  # the partition
    assert "metrics.csv has no fault_messages_dropped or fault_messages_delayed counter" in text


def test_send_failures_are_listed_when_metrics_csv_has_them(run_dir: Path) -> None:
    with (run_dir / "metrics.csv").open("a") as out:
        for t, value in ((10, 0), (20, 0), (60, 4), (70, 9), (110, 9)):
            out.write(f"{t},n0,send_failures,{value}\n")
    text = render_report(run_dir).read_text()
    # crash 20 -> first sample at or after 50 (60): 4; latency 30 -> 70: 9; partition: 0;
    # the last crash, 100 s to the end: 0.
    assert "send failures (dfl_send_failures_total, every node) in the same span: " in text
    assert "#1 4, #2 9, #3 0, #4 0" in text
    assert "`send_failures`" not in text  # known: not under "other metrics"


def test_a_run_without_faults_jsonl_has_no_faults_section(run_dir: Path) -> None:
    (run_dir / "faults.jsonl").unlink()
    text = render_report(run_dir).read_text()
    assert "## Faults" not in text
    assert not (run_dir / "plots" / "faults.png").exists()
    assert json.loads((run_dir / "summary.json").read_text())["faults"] == []
    assert load_run(run_dir).faults is None


def test_unreadable_lines_and_ends_without_a_begin_are_reported(run_dir: Path) -> None:
    with (run_dir / "faults.jsonl").open("a") as out:
        out.write("{ not json\n")
        out.write(json.dumps({"time_s": 5, "phase": "sideways", "kind": "crash"}) + "\n")
        out.write(_fault_line(105.0, "end", LATENCY, {}) + "\n")  # its begin was closed at 70
    text = render_report(run_dir).read_text()
    assert "faults.jsonl: 2 unreadable lines skipped" in text
    assert "faults.jsonl: 1 end lines without a begin were left out." in text
    assert len(_faults(run_dir)) == 4


def test_a_begin_without_its_end_lasts_to_the_end_of_the_run(run_dir: Path) -> None:
    """A run stopped before a fault ended: the runner wrote no end line."""
    lines = (run_dir / "faults.jsonl").read_text().splitlines()
    (run_dir / "faults.jsonl").write_text("\n".join(lines[:5]) + "\n")  # up to the partition
    render_report(run_dir)
    partition = _faults(run_dir)[2]
    assert partition["end_s"] is None
    # n2, n3, n0, n1: their last chain_height samples (n2's at 100 s, the others' at 110 s)
    assert [f["height_after"] for f in partition["by_node"]] == [10, 10, 11, 11]
    assert all(f["height_after_from_metrics"] for f in partition["by_node"])
    # Window (80 s, end of run]: n0's lowest is 0.7 at 90 s.
    assert partition["by_node"][2]["accuracy_min"] == 0.7


def test_an_empty_faults_jsonl_says_so(run_dir: Path) -> None:
    (run_dir / "faults.jsonl").write_text("")
    text = render_report(run_dir).read_text()
    assert "## Faults\n\nfaults.jsonl lists no fault that began." in text
    assert not (run_dir / "plots" / "faults.png").exists()


def test_the_report_re_renders_the_same(run_dir: Path) -> None:
    first = render_report(run_dir).read_text()
    copy = Path(shutil.copytree(run_dir, run_dir.parent / "again"))
    assert render_report(copy).read_text() == first


# --- the helpers, on their own ------------------------------------------------------------------


def series(points: dict[float, float]) -> Series:
    return Series(tuple(points), tuple(points.values()))


def test_first_rise_after_counts_a_restarted_counter() -> None:
    sent = series({0: 5, 10: 8, 20: 0, 30: 0, 40: 2})
    assert first_rise_after(sent, 10, counter=True) == 30  # 0 at 20 and 30: no rise yet
    assert first_rise_after(series({0: 5, 10: 8, 20: 3}), 10, counter=True) == 10
    assert first_rise_after(series({0: 5, 10: 8, 20: 3}), 10, counter=False) == NEVER
    assert first_rise_after(series({}), 10, counter=True) is None
    assert first_rise_after(sent, None, counter=True) is None
    assert first_rise_after(series({20: 1}), 10, counter=False) == 10  # no sample before: 0


def test_increase_spans_the_window_and_survives_restarts() -> None:
    counter = series({0: 1, 10: 3, 20: 7, 30: 2, 40: 5, 50: 9})
    assert increase(counter, 10, 40) == (7 - 3) + 2 + (5 - 2)
    assert increase(counter, 10, 35) == increase(counter, 10, 40)  # to the first at or after
    assert increase(counter, 45, None) == 4
    assert increase(counter, 60, None) == 0
    assert increase(series({}), 0, 10) is None


def test_recovery_and_slowest() -> None:
    accuracy = series({0: 0.8, 10: 0.5, 20: 0.79, 30: 0.81})
    assert recovery_after(accuracy, 10, 0.8) == 20
    assert recovery_after(accuracy, 10, 0.9) == NEVER
    assert recovery_after(accuracy, None, 0.8) is None
    assert slowest([3.0, None, 7.0]) == 7.0
    assert slowest([3.0, NEVER]) == NEVER
    assert slowest([None, None]) is None


def test_fault_windows_pair_each_end_with_its_begin() -> None:
    windows, strays = fault_windows(_moments(MOMENTS))
    assert strays == 0
    assert [(w.kind, w.start, w.end) for w in windows] == [
        ("crash", 20.0, 50.0),
        ("latency", 30.0, 70.0),
        ("partition", 80.0, 90.0),
        ("crash", 100.0, None),
    ]
    assert windows[2].nodes == (2, 3, 0, 1)


def _moments(moments: list) -> tuple[FaultMoment, ...]:
    return tuple(
        FaultMoment(t, phase, f.kind, tuple(f.nodes), f.model_dump(mode="json"), heights)
        for t, phase, f, heights in moments
    )


# --- the orchestrator's gauge -------------------------------------------------------------------


def _gauge(metrics: OrchestratorMetrics, kind: str, node: str) -> float | None:
    return metrics.registry.get_sample_value("dfl_fault_active", {"kind": kind, "node": node})


def test_fault_active_is_1_while_the_fault_lasts_and_0_after() -> None:
    metrics = OrchestratorMetrics()
    assert _gauge(metrics, "crash", "node2") is None  # nothing before the first fault
    metrics.fault_changed("crash", ["node2"], True)
    metrics.fault_changed("partition", ["node0", "node1"], True)
    assert _gauge(metrics, "crash", "node2") == 1
    assert _gauge(metrics, "partition", "node1") == 1
    metrics.fault_changed("crash", ["node2"], False)
    assert _gauge(metrics, "crash", "node2") == 0
    assert _gauge(metrics, "partition", "node0") == 1
    assert b'dfl_fault_active{kind="crash",node="node2"} 0.0' in generate_latest(metrics.registry)


def test_fault_active_stays_1_until_the_last_overlapping_fault_is_lifted() -> None:
    metrics = OrchestratorMetrics()
    metrics.fault_changed("latency", ["node3"], True)
    metrics.fault_changed("latency", ["node3"], True)
    metrics.fault_changed("latency", ["node3"], False)
    assert _gauge(metrics, "latency", "node3") == 1
    metrics.fault_changed("latency", ["node3"], False)
    metrics.fault_changed("latency", ["node3"], False)  # a stray lift: stays 0
    assert _gauge(metrics, "latency", "node3") == 0
    metrics.fault_changed("latency", ["node3"], True)
    assert _gauge(metrics, "latency", "node3") == 1
