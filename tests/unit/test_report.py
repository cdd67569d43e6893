"""The run report over a synthetic run directory with real chain stores.

The chain stores come from the four-node in-memory network (tests.support); metrics.csv and the
profiles are written here with round numbers, so every expected figure below is computed by hand.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from itertools import pairwise
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.report import NotARunDirectory, load_run, render_report
from tests.support import NAMES, key, run_four_nodes

DURATION = 100.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# accuracy_test every 10 s from 0 to 100. The final window is t >= 70 (duration - 30), so:
#   n0: 0.0, 0.1 ... 1.0 -> mean(0.7, 0.8, 0.9, 1.0) = 0.85, max 1.0
#   n1: constant 0.6 until 60, then 0.2 -> mean 0.2, max 0.6 (a late collapse must show)
#   n2: 0.5 everywhere -> 0.5
#   n3: samples only until 50 (the node died) -> no final accuracy, max 0.4
ACCURACY = {
    "n0": {t: t / 100 for t in range(0, 101, 10)},
    "n1": {t: 0.6 if t <= 60 else 0.2 for t in range(0, 101, 10)},
    "n2": {t: 0.5 for t in range(0, 101, 10)},
    "n3": {t: 0.4 for t in range(0, 51, 10)},
}
LOCAL_ACCURACY = {"n0": 0.9, "n1": 0.8, "n2": 0.7, "n3": 0.6}  # constant per node

# n0: blockchain 1.0 + 1.0 + 0.5 = 2.5 of a total 10.0 -> share 0.25; process 10.5 -> 95.2 %.
# n1: the same work with process CPU 8.0 -> coverage 125 %: flagged.
# n2: process CPU 11.0 -> coverage 90.9 %: within 15 %, not flagged.
# n3: no profile.json, but cumulative cpu_seconds metrics: ml 4.0 + blockchain 1.0 -> share 0.2.
PROFILE_CPU = [
    {"task": "generate_block", "category": "blockchain", "seconds": 1.0},
    {"task": "generate_block", "category": "network", "seconds": 0.5},
    {"task": "generate_transaction", "category": "ml", "seconds": 2.0},
    {"task": "generate_transaction", "category": "blockchain", "seconds": 1.0},
    {"task": "generate_transaction", "category": "network", "seconds": 0.5},
    {"task": "update_model", "category": "ml", "seconds": 3.0},
    {"task": "receive_transaction", "category": "ml", "seconds": 1.0},
    {"task": "receive_transaction", "category": "ml", "seconds": 0.5},  # duplicates are summed
    {"task": "receive_transaction", "category": "blockchain", "seconds": 0.5},
]
PROCESS_CPU = {"n0": 10.5, "n1": 8.0, "n2": 11.0}


def _write_metrics(path: Path) -> None:
    rows = ["time_s,node,metric,value"]
    for node, series in ACCURACY.items():
        for t, value in series.items():
            rows.append(f"{t},{node},accuracy_test,{value}")
            rows.append(f"{t},{node},accuracy_local,{LOCAL_ACCURACY[node]}")
            rows.append(f"{t},{node},chain_height,{t // (10 + 2 * int(node[1]))}")
            rows.append(f"{t},{node},transactions_sent,{t // 5}")
            rows.append(f"{t},{node},gossip_latency_seconds,0.01")  # unknown: kept, not fatal
    rows.append("100,n3,cpu_seconds:update_model:ml,4.0")
    rows.append("50,n3,cpu_seconds:generate_block:blockchain,0.4")
    rows.append("90,n3,cpu_seconds:generate_block:blockchain,1.0")  # cumulative: last one counts
    rows.append("not-a-number,n0,accuracy_test,1.0")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real four-node run's chain stores, laid out as a run directory."""
    work = tmp_path_factory.mktemp("four_nodes")
    network = run_four_nodes(work)
    for node in network.nodes.values():
        node.store.close()
    run = tmp_path_factory.mktemp("run")
    for name in NAMES:
        (run / "nodes" / name).mkdir(parents=True)
        shutil.copy(work / name / "chain.sqlite", run / "nodes" / name / "chain.sqlite")
        if name in PROCESS_CPU:
            profile = {
                "cpu": PROFILE_CPU,
                "process_cpu_seconds": PROCESS_CPU[name],
                "profiled_seconds": 10.0,
            }
            (run / "nodes" / name / "profile.json").write_text(json.dumps(profile))
    description = {
        "name": "four-node-test",
        "runtime": "local",
        "protocol": "dfl",
        "started_at": "2025-01-01T00:00:00+00:00",
        "duration_s": DURATION,
        "nodes": [
            {
                "name": name,
                "address": key(name).address.hex(),
                "peers": [p for p in NAMES if p != name],
                "behaviour": "normal",
            }
            for name in NAMES
        ],
    }
    (run / "run.json").write_text(json.dumps(description))
    (run / "spec.yaml").write_text("name: four-node-test\nnodes: 4\nmarker: spec-appendix-42\n")
    _write_metrics(run / "metrics.csv")
    return run


@pytest.fixture
def run_dir(template: Path, tmp_path: Path) -> Path:
    """A fresh copy per test, so tests that break a store or delete files stay independent."""
    return Path(shutil.copytree(template, tmp_path / "run"))


@pytest.fixture(scope="module")
def rendered(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One rendering shared by the tests that only read it (drawing takes most of a second)."""
    run = Path(shutil.copytree(template, tmp_path_factory.mktemp("rendered") / "run"))
    render_report(run)
    return run


def _report(run_dir: Path) -> str:
    return (run_dir / "report.md").read_text()


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_final_accuracy_is_the_mean_over_the_last_30_seconds(rendered: Path) -> None:
    nodes = _summary(rendered)["nodes"]
    assert nodes["n0"]["final_test_accuracy"] == pytest.approx(0.85)
    assert nodes["n0"]["test_samples_in_window"] == 4
    assert nodes["n1"]["final_test_accuracy"] == pytest.approx(0.2)
    assert nodes["n1"]["max_test_accuracy"] == pytest.approx(0.6)
    assert nodes["n2"]["final_test_accuracy"] == pytest.approx(0.5)
    assert nodes["n1"]["final_local_accuracy"] == pytest.approx(0.8)
    assert nodes["n3"]["final_test_accuracy"] is None
    assert nodes["n3"]["max_test_accuracy"] == pytest.approx(0.4)
    assert _summary(rendered)["mean_final_test_accuracy"] == pytest.approx((0.85 + 0.2 + 0.5) / 3)


def test_report_states_the_window_and_the_accuracy_figures(rendered: Path) -> None:
    text = _report(rendered)
    assert "last 30 s" in text and "time ≥ 70.0 s" in text
    assert "| n0 | 0.850 | 4 | 1.000 | 0.900 |" in text
    assert "n3: no accuracy_test samples in the last 30 s" in text
    assert "Chance is 0.10" in text


def test_blockchain_share_and_coverage_from_the_profiles(rendered: Path) -> None:
    text = _report(rendered)
    nodes = _summary(rendered)["nodes"]
    n0, n1, n2 = nodes["n0"], nodes["n1"], nodes["n2"]
    assert n0["profiler_cpu_seconds"] == pytest.approx(10.0)
    assert n0["cpu_seconds_by_category"] == pytest.approx(
        {"ml": 6.5, "blockchain": 2.5, "network": 1.0}
    )
    assert n0["blockchain_share"] == pytest.approx(0.25)
    assert n0["coverage"] == pytest.approx(10.0 / 10.5)
    assert not n0["coverage_flagged"]
    assert n1["coverage"] == pytest.approx(1.25) and n1["coverage_flagged"]
    assert n2["coverage"] == pytest.approx(10.0 / 11.0) and not n2["coverage_flagged"]
    # Table 6 rows: the receive row sums its duplicate ml entries.
    assert "| receive transactions | 1.50 | 0.50 | 0.00 | 2.00 |" in text
    assert "| generate block | 0.00 | 1.00 | 0.50 | 1.50 |" in text
    assert "blockchain share = 2.50 / 10.00 = 25.0 %" in text
    assert "profiler total vs process CPU: 10.00 s vs 8.00 s, coverage 125.0 %" in text
    assert "n1: profiler total is 125.0 % of the process's CPU" in text
    assert "n2: profiler total" not in text


def test_a_node_without_profile_falls_back_to_the_cpu_metrics(rendered: Path) -> None:
    text = _report(rendered)
    n3 = _summary(rendered)["nodes"]["n3"]
    assert n3["cpu_source"] == "metrics.csv"
    assert n3["profiler_cpu_seconds"] == pytest.approx(5.0)
    assert n3["blockchain_share"] == pytest.approx(0.2)
    assert n3["coverage"] is None
    assert "n3: no profile.json" in text


def test_a_profiler_snapshot_with_entries_instead_of_cpu_is_read(run_dir: Path) -> None:
    """node/service/profiler.py's snapshot names the list "entries"; both spellings count."""
    path = run_dir / "nodes" / "n2" / "profile.json"
    profile = json.loads(path.read_text())
    profile["entries"] = profile.pop("cpu")
    path.write_text(json.dumps(profile))
    render_report(run_dir)
    assert _summary(run_dir)["nodes"]["n2"]["profiler_cpu_seconds"] == pytest.approx(10.0)


def test_chain_statistics_follow_the_engine_configuration(rendered: Path) -> None:
    for name, figures in _summary(rendered)["nodes"].items():
        # run_four_nodes: 3 transactions per block; full mesh, so each transaction is confirmed
        # by the creator's 3 neighbours: 9 confirmations per block (the paper's 12 x 3 = 36).
        assert figures["tx_per_block_mean"] == 3 and figures["tx_per_block_min"] == 3, name
        assert figures["confirmations_per_block_mean"] == 9, name
        assert figures["confirmations_per_block_min"] == 9, name
        assert figures["peers"] == 3
        assert figures["chain_verifies"] is True
        assert figures["blocks"] == _height(rendered / "nodes" / name / "chain.sqlite") > 0


def test_a_dfl_run_has_no_mining_figures_and_no_lazy_clients_section(rendered: Path) -> None:
    summary = _summary(rendered)
    assert summary["window_s"] == 30.0  # a 100 s DFL run keeps the 30 s window
    assert summary["plagiarism"] == {}
    assert summary["pow_difficulty"] is None and summary["network_hash_rate"] is None
    for name, figures in summary["nodes"].items():
        for field in (
            "pow_hashes",
            "forks",
            "blocks_mined",
            "hash_rate",
            "mining_searches",
            "mining_seconds_per_search",
        ):
            assert figures[field] is None, (name, field)
        assert figures["counters"]["bytes_sent"] is None, name  # this run did not record it
    text = _report(rendered)
    assert "## Blockchain (paper Table 7 layout)" in text and "BLADE-FL" not in text
    assert "Lazy clients" not in text
    assert "| n0 | 20 | n/a | n/a | n/a | n/a |" in text  # counters: bytes sent is n/a
    assert not (rendered / "plots" / "plagiarism.png").exists()


def _height(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT MAX(height) FROM blocks").fetchone()[0]


def test_a_tampered_chain_is_reported_as_not_verifying(run_dir: Path) -> None:
    with sqlite3.connect(run_dir / "nodes" / "n2" / "chain.sqlite") as db:
        db.execute("UPDATE blocks SET final_digest = zeroblob(32) WHERE height = 2")
    text = render_report(run_dir).read_text()
    n2 = _summary(run_dir)["nodes"]["n2"]
    assert n2["chain_verifies"] is False
    assert n2["chain_problem"].startswith("height 2: digest_mismatch")
    assert n2["tx_per_block_mean"] == 3  # the statistics are still read
    assert "no (height 2: digest_mismatch" in text
    assert _summary(run_dir)["nodes"]["n1"]["chain_verifies"] is True


def test_a_missing_chain_store_is_reported_not_fatal(run_dir: Path) -> None:
    (run_dir / "nodes" / "n1" / "chain.sqlite").unlink()
    text = render_report(run_dir).read_text()
    n1 = _summary(run_dir)["nodes"]["n1"]
    assert n1["chain_verifies"] is None and n1["blocks"] is None
    assert "no chain store" in n1["chain_problem"]
    assert "n1: no chain store (the node may have died" in text
    assert _summary(run_dir)["nodes"]["n0"]["blocks"] > 0


def test_a_garbage_chain_store_is_reported_not_fatal(run_dir: Path) -> None:
    (run_dir / "nodes" / "n0" / "chain.sqlite").write_bytes(b"not sqlite at all" * 300)
    render_report(run_dir)
    n0 = _summary(run_dir)["nodes"]["n0"]
    assert n0["chain_verifies"] is None
    assert "not a readable SQLite database" in n0["chain_problem"]


def test_plots_are_real_pngs(rendered: Path) -> None:
    for name in ("accuracy", "cpu", "chain"):
        data = (rendered / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, name  # axes, lines and text, not an empty canvas


def test_a_run_with_only_run_json_still_renders(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(
        json.dumps({"name": "bare", "duration_s": 5, "nodes": [{"name": "solo", "peers": []}]})
    )
    text = render_report(tmp_path).read_text()
    assert "metrics.csv is missing" in text and "spec.yaml was not found" in text
    assert (tmp_path / "plots" / "cpu.png").read_bytes().startswith(PNG_MAGIC)
    assert _summary(tmp_path)["nodes"]["solo"]["final_test_accuracy"] is None


def test_report_header_appendix_and_unknown_metrics(rendered: Path) -> None:
    text = _report(rendered)
    assert text.startswith("# Run report: four-node-test")
    assert "- duration: 100.0 s (1 min 40 s)" in text
    assert "`dfl report DIR`" in text
    assert "marker: spec-appendix-42" in text
    assert "`gossip_latency_seconds`" in text
    assert "1 unreadable rows skipped" in text
    assert str(rendered) not in text  # the report is portable: no machine paths in it


def test_load_run_series_are_sorted_and_typed(rendered: Path) -> None:
    data = load_run(rendered)
    series = data.metrics.series("n0", "accuracy_test")
    assert all(a < b for a, b in pairwise(series.times))
    assert series.values[-1] == pytest.approx(1.0)
    assert [n.name for n in data.info.nodes] == list(NAMES)
    assert data.nodes["n3"].profile is not None and data.nodes["n3"].profile.source == "metrics.csv"


def test_load_run_refuses_a_directory_without_run_json(tmp_path: Path) -> None:
    with pytest.raises(NotARunDirectory, match=r"no run\.json"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text("{ not json")
    with pytest.raises(NotARunDirectory, match="not a valid run description"):
        load_run(tmp_path)


def test_cli_renders_and_exits_0(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert (run_dir / "report.md").is_file() and (run_dir / "summary.json").is_file()


def test_cli_exits_2_when_dir_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_a_local_run_has_no_containers_section(rendered: Path) -> None:
    assert "## Containers" not in _report(rendered)
    assert all(n["memory_peak_bytes"] is None for n in _summary(rendered)["nodes"].values())


def test_a_docker_run_reports_memory_per_container_and_health(run_dir: Path) -> None:
    with (run_dir / "metrics.csv").open("a") as metrics:
        for t, mib in ((10, 200), (20, 260), (30, 230)):
            metrics.write(f"{t},n0,memory_bytes,{mib * 2**20}\n")
        metrics.write("30,n0,cgroup_cpu_seconds,12.5\n")
    info = json.loads((run_dir / "run.json").read_text())
    info["runtime"] = "docker"
    info["health"] = {"n0": {"starting": 2, "healthy": 9}, "n1": {"healthy": 8, "unhealthy": 1}}
    (run_dir / "run.json").write_text(json.dumps(info))
    render_report(run_dir)

    n0 = _summary(run_dir)["nodes"]["n0"]
    assert n0["memory_peak_bytes"] == 260 * 2**20
    assert n0["memory_mean_bytes"] == pytest.approx(230 * 2**20)
    assert n0["cgroup_cpu_seconds"] == 12.5
    text = _report(run_dir)
    assert "| n0 | 230 MiB | 260 MiB | 12.50 | healthy 9, starting 2 |" in text
    assert "| n2 | n/a | n/a | n/a | n/a |" in text
    assert "**unhealthy at some sample: n1**" in text
