"""The Load section over a hand-written `dfl load` run directory, and the node figures read
from a real node's /metrics exposition.

load_stats.csv and load_failures.csv below are in the layout Locust 2.x writes (its column
names, an Aggregated row last, N/A percentiles for a name without requests); load.json is what
orchestrator/load/runner.py writes. Every expected figure can be worked out from this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from node.ledger.errors import RejectReason
from node.service.metrics import NodeMetrics
from orchestrator.load.scrape import parse_figures, settled
from orchestrator.report import load_run, render_report, summarize
from orchestrator.report.markdown import report_markdown
from orchestrator.report.markdown_load import refusal_check

PERCENTILES = "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
STATS = f"""Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,{PERCENTILES}
grpc,forged:bad_signature,40,0,3,3.5,1.2,9.8,0,2.0,0.0,3,3,4,4,5,6,8,9,10,10,10
grpc,forged:garbage,40,2,1,1.1,0.5,3.1,0,2.0,0.1,1,1,1,1,2,2,3,3,3,3,3
grpc,status:GetStatus,200,0,1,0.9,0.3,12.0,80,10.0,0.0,1,1,1,1,1,2,3,4,12,12,12
grpc,transaction:SubmitTransaction,100,30,14,20.5,4.0,410.0,0,5.0,1.5,14,18,22,25,40,95,200,320,410,410,410
grpc,unauthenticated:GetModel,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A
,Aggregated,380,32,2,6.8,0.3,410.0,42,19.0,1.6,2,3,4,6,14,40,95,200,410,410,410
"""
FAILURES = """Method,Name,Error,Occurrences,First Seen,Last Seen
grpc,transaction:SubmitTransaction,RESOURCE_EXHAUSTED queue_full,28,1.0,2.0
grpc,transaction:SubmitTransaction,RESOURCE_EXHAUSTED evaluation_budget,2,1.0,2.0
grpc,forged:garbage,RESOURCE_EXHAUSTED queue_full (expected INVALID_ARGUMENT malformed),2,1.0,2.0
"""


def figures(**values: float) -> dict[str, float]:
    base = {
        "transactions_received": 0.0,
        "receipts_written": 0.0,
        "evaluations_failed": 0.0,
        "ml_pending": 0.0,
        "peers_banned": 0.0,
        "samples_injected": 0.0,
        "gossip_latency_sum": 0.0,
        "gossip_latency_count": 0.0,
        "process_cpu_seconds": 0.0,
        "rejected:bad_signature": 0.0,
        "rejected:malformed": 0.0,
        "rejected:queue_full": 0.0,
    }
    return {**base, **values}


# node0 took the forged records; node1 only honest gossip. The load ran 10-30 s of the run.
LOAD = {
    "users": 4,
    "spawn_rate": 4,
    "weights": {"forged": 1, "status": 2, "transaction": 1, "unauthenticated": 1},
    "wait_seconds": 0.0,
    "run_started_at": 1_700_000_000.0,
    "started_s": 10.0,
    "ended_s": 30.0,
    "locust_exit_code": 0,
    "locust_cpu_seconds": 16.0,
    "batch_size": 16,
    "nodes": {
        "node0": {
            "injection_rate": 64,
            "before_s": 9.5,
            "after_s": 29.5,  # before the run's injection ended: the window is 20 s
            "injection_ended_s": 31.0,
            "before": figures(transactions_received=5, receipts_written=5, samples_injected=100),
            "after": figures(
                transactions_received=75,
                receipts_written=74,
                evaluations_failed=1,
                samples_injected=1300,
                gossip_latency_sum=1.4,
                gossip_latency_count=70,
                process_cpu_seconds=30,
                **{
                    "rejected:bad_signature": 40,
                    "rejected:malformed": 37,  # Locust saw 38 refused as malformed
                    "rejected:queue_full": 30,
                },
            ),
            "settled": True,
        },
        "node1": {
            "injection_rate": 64,
            "before_s": 10.0,
            "after_s": 33.0,  # after the run's injection ended at 30 s: the window is 20 s
            "injection_ended_s": 30.0,
            "before": figures(samples_injected=100, process_cpu_seconds=2),
            "after": figures(
                transactions_received=10,
                receipts_written=9,
                ml_pending=2,
                samples_injected=1380,
                process_cpu_seconds=12,
            ),
            "settled": False,
        },
    },
}


def _metrics() -> str:
    rows = ["time_s,node,metric,value"]
    for node, (ml, chain) in {"node0": (4.0, 2.0), "node1": (1.0, 1.0)}.items():
        for t, scale, accuracy in ((10, 0, 0.2), (30, 1, 0.6)):
            rows += [
                f"{t}.00,{node},accuracy_test,{accuracy}",
                f"{t}.00,{node},cpu_seconds:receive_transaction:ml,{ml * scale * 10}",
                f"{t}.00,{node},cpu_seconds:generate_transaction:ml,{ml * scale * 10}",
                f"{t}.00,{node},cpu_seconds:receive_transaction:blockchain,{chain * scale * 10}",
            ]
    return "\n".join(rows) + "\n"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    description = {
        "name": "load-test",
        "runtime": "local",
        "protocol": "dfl",
        "started_at": "2025-01-01T00:00:00+00:00",
        "duration_s": 30.0,
        "nodes": [{"name": "node0", "peers": ["node1"]}, {"name": "node1", "peers": ["node0"]}],
    }
    (run / "run.json").write_text(json.dumps(description))
    (run / "spec.yaml").write_text("name: load-test\n")
    (run / "metrics.csv").write_text(_metrics())
    (run / "load_stats.csv").write_text(STATS)
    (run / "load_failures.csv").write_text(FAILURES)
    (run / "load.json").write_text(json.dumps(LOAD))
    return run


def test_the_requests_table_has_one_row_per_name_and_the_total(run_dir: Path) -> None:
    text = render_report(run_dir).read_text()
    assert "## Load" in text
    assert "Locust's own process used 0.80 cores meanwhile." in text
    assert "| `transaction:SubmitTransaction` | OK | 100 | 5.0 | 30 | 14 | 95 | 320 | 410 |" in text
    assert (
        "| `forged:bad_signature` | UNAUTHENTICATED bad_signature | 40 | 2.0 | 0 "
        "| 3.0 | 6.0 | 9.0 | 9.8 |" in text
    )
    assert (
        "| `unauthenticated:GetModel` | UNAUTHENTICATED unauthenticated | 0 | 0.0 | 0 "
        "| n/a | n/a | n/a | 0.0 |" in text
    )
    assert "| **Aggregated** |  | **380** | **19.0** | **32** |" in text
    summary = json.loads((run_dir / "summary.json").read_text())["load"]
    assert summary["total"]["requests"] == 380
    assert [r["name"] for r in summary["requests"]] == [
        "forged:bad_signature",
        "forged:garbage",
        "status:GetStatus",
        "transaction:SubmitTransaction",
        "unauthenticated:GetModel",
    ]


def test_failures_are_listed_by_status_most_frequent_first(run_dir: Path) -> None:
    text = report_markdown(data := load_run(run_dir), summarize(data))
    section = text[text.index("### Failures by status") :]
    first = section.index("RESOURCE_EXHAUSTED queue_full | 28")
    assert first < section.index("evaluation_budget | 2")
    assert "refused for load before any check" in text
    assert "queue_full 30" in text and "evaluation_budget 2" in text


def test_the_nodes_figures_are_the_gains_between_the_two_scrapes(run_dir: Path) -> None:
    load = summarize(load_run(run_dir)).load
    assert load is not None
    node0, node1 = load.nodes
    assert node0.rejected == {"bad_signature": 40, "malformed": 37, "queue_full": 30}
    assert (node0.transactions_received, node0.receipts_written) == (70, 69)
    assert node0.evaluations_failed == 1 and node0.settled and not node1.settled
    assert node0.gossip_latency_mean_s == pytest.approx(0.02)
    assert (node0.samples_delivered, node0.samples_offered) == (1200, 64 * 20)
    assert node1.samples_offered == 64 * 20
    assert load.locust_cores == pytest.approx(0.8)  # 16 CPU s over the load's 20 s
    assert node0.process_cores == pytest.approx(1.5)  # 30 CPU s over 20 s
    assert node1.process_cores == pytest.approx(0.5)
    # metrics.csv: node0's ml rose 0 -> 40 + 40 s and blockchain 0 -> 20 s over 20 s.
    assert node0.cores_by_category == pytest.approx({"blockchain": 1.0, "ml": 4.0})
    assert (node0.accuracy_first, node0.accuracy_last) == (0.2, 0.6)
    assert node1.gossip_latency_mean_s is None


def test_locust_and_the_nodes_are_checked_against_each_other(run_dir: Path) -> None:
    data = load_run(run_dir)
    summary = summarize(data)
    assert summary.load is not None
    assert refusal_check(summary.load) == [
        ("bad_signature", 40, 40.0),
        ("malformed", 38, 37.0),
        ("unauthenticated", 0, 0.0),
    ]
    text = report_markdown(data, summary)
    assert "refused as `bad_signature`: Locust saw 40, the nodes counted 40\n" in text
    assert "refused as `malformed`: Locust saw 38, the nodes counted 37 **(they differ)**" in text
    assert "should have refused and took: 0\n" in text
    assert "| node1 | none | 10 | 9 | 0 | **no** |" in text
    # 1,200 + 1,280 taken; the driver offered 64/s x 20 s to each, and no inject task ran.
    assert "the nodes took 2,480 of 2,560 offered (2,560 by the driver" in text
    # node1's queue was not empty at the end: no claim that every model was answered.
    assert "models taken and answered" not in text


def test_a_run_without_load_files_has_no_load_section(run_dir: Path) -> None:
    for name in ("load_stats.csv", "load_failures.csv", "load.json"):
        (run_dir / name).unlink()
    data = load_run(run_dir)
    summary = summarize(data)
    assert summary.load is None
    assert "## Load" not in report_markdown(data, summary)


def test_a_load_run_whose_locust_left_nothing_says_so(run_dir: Path) -> None:
    (run_dir / "load_stats.csv").unlink()
    text = report_markdown(data := load_run(run_dir), summarize(data))
    assert "## Load" in text
    assert "load_stats.csv is missing: Locust left no statistics" in text


def test_the_figures_come_from_a_real_nodes_exposition() -> None:
    metrics = NodeMetrics()
    for _ in range(3):
        metrics.rejected(RejectReason.BAD_SIGNATURE)
    metrics.rejected(RejectReason.UNAUTHENTICATED)
    metrics.sync_engine_counters(
        {"transactions_received": 7, "receipts_written": 6, "evaluations_failed": 1}
    )
    metrics.transaction_received(100.0, 100.25)
    metrics.ml_pending.set(2)
    found = parse_figures(generate_latest(metrics.registry).decode())
    assert found["rejected:bad_signature"] == 3
    assert found["rejected:unauthenticated"] == 1
    assert found["rejected:queue_full"] == 0
    assert (found["transactions_received"], found["receipts_written"]) == (7, 6)
    assert found["evaluations_failed"] == 1
    assert (found["gossip_latency_sum"], found["gossip_latency_count"]) == (0.25, 1)
    assert found["process_cpu_seconds"] > 0
    assert not settled(found)
    metrics.ml_pending.set(0)
    assert settled(parse_figures(generate_latest(metrics.registry).decode()))


def test_a_step_run_gets_its_capacity_curve_knee_and_cpu_bound(run_dir: Path) -> None:
    load = json.loads((run_dir / "load.json").read_text())
    load["machine_cores"] = 4
    load["orchestrator_cpu_seconds"] = 4.0  # over the load's 20 s: 0.2 cores
    load["user_rate"] = 2.0
    load["step"] = {"judged": "transaction:SubmitTransaction"}
    # Receiving transactions cost node0 2.0 s ml + 0.5 s blockchain for its 70 new models and
    # node1 0.5 s ml for its 10: 3.0 s over 80 models, 37.5 ms each.
    nodes = load["nodes"]
    nodes["node0"]["after"].update({"receive_cpu:ml": 2.0, "receive_cpu:blockchain": 0.5})
    nodes["node0"]["before"].update({"receive_cpu:ml": 0.0, "receive_cpu:blockchain": 0.0})
    nodes["node1"]["after"]["receive_cpu:ml"] = 0.5
    (run_dir / "load.json").write_text(json.dumps(load))
    stages = [
        (0, 4, 8.0, 0, 20.0, None),
        (1, 8, 16.0, 0, 25.0, None),  # power 0.64: the knee
        (2, 12, 20.0, 0, 60.0, None),
        (3, 16, 22.0, 3, 90.0, "failures 9.0% > 5%"),
    ]
    lines = [
        json.dumps(
            {
                "stage": number,
                "users": users,
                "seconds": 15.0,
                "requests": int(served * 15) + failed,
                "failures": failed,
                "throughput": served + failed / 15,
                "served": served,
                "mean_ms": mean,
                "p50_ms": mean,
                "p95_ms": 2 * mean,
                "p99_ms": 3 * mean,
                "over": over or "",
            }
        )
        for number, users, served, failed, mean, over in stages
    ]
    (run_dir / "load_steps.jsonl").write_text("\n".join(lines) + "\n")

    text = render_report(run_dir).read_text()
    capacity = summarize(load_run(run_dir)).load.capacity  # type: ignore[union-attr]
    assert capacity is not None and capacity.knee is not None
    assert capacity.knee.stage == 1 and capacity.knee_per_node == pytest.approx(8.0)
    assert capacity.receive_ms_by_category == {
        "blockchain": pytest.approx(6.25),
        "ml": pytest.approx(31.25),
    }
    assert capacity.bound_one_core == pytest.approx(1000 / 37.5)
    # 4 cores, less the nodes' other work ((30 - 2.5) + (10 - 0.5) CPU s over 20 s: 1.85 cores)
    # the orchestrator's 0.2 and Locust's 0.8 cores, over 37.5 ms per model plus Locust's
    # 16 s / 380 requests.
    per_request = 0.0375 + 16 / 380
    assert capacity.other_cores == pytest.approx(1.85)
    assert capacity.orchestrator_cores == pytest.approx(0.2)
    assert capacity.bound_machine == pytest.approx((4 - 1.85 - 0.2 - 0.8) / per_request / 2)
    assert "### Capacity (step mode)" in text
    assert "each user at 2 tasks/s" in text
    assert "| **1** | **8** |" in text  # the knee's row
    assert "| 3 | 16 |" in text and "failures 9.0% > 5%" in text
    assert "**8.0 per node**" in text
    assert "37.5 ms (blockchain 6.2, ml 31.2)" in text  # 6.25 and 31.25, rounded half to even
    assert (run_dir / "plots" / "load_capacity.png").stat().st_size > 10_000


def test_a_run_without_steps_has_no_capacity_section(run_dir: Path) -> None:
    text = render_report(run_dir).read_text()
    assert "### Capacity" not in text
    assert not (run_dir / "plots" / "load_capacity.png").exists()


def test_a_node_that_crashed_during_the_load_counts_from_its_restart(run_dir: Path) -> None:
    crash = {"at": 15.0, "kind": "crash", "nodes": [1], "restart_after": 5.0}
    lines = [
        {"time_s": t, "phase": phase, "kind": "crash", "nodes": [1], "fault": crash}
        for t, phase in ((15.0, "begin"), (20.0, "end"))
    ]
    (run_dir / "faults.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    load = summarize(load_run(run_dir)).load
    assert load is not None
    node0, node1 = load.nodes
    assert not node0.restarted and node1.restarted
    # node1's counters began again at its restart: after, not after - before.
    assert node1.samples_delivered == 1380 and node1.process_cores == pytest.approx(12 / 20)
    assert node0.samples_delivered == 1200  # a gain, as before
    text = render_report(run_dir).read_text()  # malformed: Locust saw 38, the nodes counted 37
    assert "the nodes counted 37 (node1 restarted during the load" in text
    assert "(they differ)" not in text
