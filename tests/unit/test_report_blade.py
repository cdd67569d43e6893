"""The run report of a BLADE-FL run directory with real chain stores.

The chain stores come from four real BLADE-FL engines on the in-memory network (tests.support),
with mining so fast and delivery so slow that every height forks and the tie-break spreads the
blocks over several miners. metrics.csv, the profiles and the rounds.jsonl files are written here
with round numbers, so every expected figure below is computed by hand; the chain figures are
compared with what the stores hold.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from node.ledger.store import ChainStore
from node.protocol.blade import BladeConfig
from orchestrator.report import (
    FINAL_WINDOW_S,
    final_window,
    load_run,
    render_report,
    summarize,
)
from proto.dfl.v1 import records_pb2 as pb
from tests.support import NAMES, blade_network, key

ROUNDS = 5
CONFIG = BladeConfig(
    clients=4,
    rounds=ROUNDS,
    local_iterations=2,
    dataset_size=64,
    collect_timeout=3.0,
    vote_timeout=2.0,
)
DURATION = 25.0  # 20 % of it is 5 s < 30 s: the final window is t >= 20
DIFFICULTY = 64.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ADDRESS = {name: key(name).address.hex() for name in NAMES}
BEHAVIOUR = {"n0": "normal", "n1": "normal", "n2": "normal", "n3": "lazy"}

# accuracy_test every 5 s from 0 to 25; the window holds t = 20 and 25:
#   n0 t/25 -> mean(0.8, 1.0) = 0.9; n1 0.5 until 15, then 0.7 -> 0.7; n2 0.6 -> 0.6;
#   n3 samples only until 15 -> none in the window (a 30 s window would have taken them all).
ACCURACY = {
    "n0": {t: t / 25 for t in range(0, 26, 5)},
    "n1": {t: 0.5 if t <= 15 else 0.7 for t in range(0, 26, 5)},
    "n2": {t: 0.6 for t in range(0, 26, 5)},
    "n3": {t: 0.4 for t in range(0, 16, 5)},
}
# Cumulative counters: (value at t = 10, value at the end); the last one is the total.
POW_HASHES = {"n0": (1e6, 2_000_000), "n1": (1e6, 3_000_000), "n2": (2e6, 4_000_000)}
MINING_SECONDS = {"n0": (4.0, 12.0), "n1": (5.0, 10.0), "n2": (6.0, 8.0)}
MINING_SEARCHES = {"n0": (2, 6), "n1": (3, 5), "n2": (1, 4)}
FORKS = {"n0": (1, 3), "n1": (0, 2), "n2": (0, 0)}
BYTES_SENT = {"n0": (10_000, 123_456), "n1": (20_000, 200_000), "n2": (0, 300_000)}
# CPU seconds of task "mine" (category blockchain): hashes per CPU second = hashes / these.
MINE_CPU = {"n0": 4.0, "n1": 6.0, "n2": 5.0}
# n3 left no counters and no profile (it "crashed"): its mining figures are n/a.

# rounds.jsonl: n3 (lazy) copies n0 every round: difference std about sigma = 0.1, copy
# coefficient near 1, update cosine near 0. Honest clients differ by about 0.001.
RESEMBLANCE = {
    #       nearest, model cosine, update cosine, copy coefficient, difference std per round
    "n0": ("n1", 0.999, 0.80, 0.80, (0.0010, 0.0012, 0.0008, 0.0010, 0.0010)),
    "n1": ("n0", 0.999, 0.70, 0.75, (0.0009, 0.0011, 0.0010, 0.0010, 0.0010)),
    "n2": ("n1", 0.998, 0.60, 0.65, (0.0011, 0.0013, 0.0012, 0.0012, 0.0012)),
    "n3": ("n0", 0.500, 0.02, 0.95, (0.1000, 0.0990, 0.1010, 0.1000, 0.1000)),
}
# n1's second choice in round 5 only: the most frequent nearest is still n0 (4 of 5).
N1_ROUND_5_NEAREST = "n2"


def _rounds_lines(rounds: range) -> str:
    lines = []
    for r in rounds:
        entries = []
        for client, (nearest, model, update, copy, spreads) in RESEMBLANCE.items():
            if client == "n1" and r == ROUNDS:
                nearest = N1_ROUND_5_NEAREST
            entries.append(
                {
                    "client": ADDRESS[client],
                    "nearest": ADDRESS[nearest],
                    "model_cosine": model,
                    "update_cosine": update,
                    "copy_coefficient": copy,
                    "difference_std": spreads[r - 1],
                }
            )
        record = {
            "round": r,
            "time": 1_700_000_000.0 + r,
            "miner": ADDRESS["n0"],
            "models": sorted(ADDRESS.values()),
            "local_accuracy": 0.5,
            "resemblance": entries,
        }
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


def _write_metrics(path: Path) -> None:
    rows = ["time_s,node,metric,value"]
    for node, series in ACCURACY.items():
        for t, value in series.items():
            rows.append(f"{t},{node},accuracy_test,{value}")
            rows.append(f"{t},{node},accuracy_local,0.5")
            rows.append(f"{t},{node},chain_height,{t // 5}")
            rows.append(f"{t},{node},transactions_sent,{t // 5}")
    counters = {
        "pow_hashes": POW_HASHES,
        "mining_seconds": MINING_SECONDS,
        "mining_searches": MINING_SEARCHES,
        "forks": FORKS,
        "bytes_sent": BYTES_SENT,
    }
    for metric, by_node in counters.items():
        for node, (early, last) in by_node.items():
            rows.append(f"10,{node},{metric},{early}")
            rows.append(f"{DURATION},{node},{metric},{last}")
    path.write_text("\n".join(rows) + "\n")


def _profile(mine: float) -> dict:
    return {
        "unit": "cpu_seconds",
        "entries": [
            {"task": "mine", "category": "blockchain", "seconds": mine},
            {"task": "train", "category": "ml", "seconds": 1.0},
            {"task": "verify_block", "category": "blockchain", "seconds": 0.5},
            {"task": "other", "category": "network", "seconds": 0.5},
        ],
        "process_cpu_seconds": mine + 2.0,
        "profiled_seconds": mine + 2.0,
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real BLADE-FL chain stores, laid out as a run directory with hand-written files."""
    work = tmp_path_factory.mktemp("blade_nodes")
    network = blade_network(work, CONFIG, hash_rate=1e9, latency=0.4)
    network.run(60.0)
    for node in network.nodes.values():
        node.store.close()
    run = tmp_path_factory.mktemp("blade_run")
    for name in NAMES:
        node_dir = run / "nodes" / name
        node_dir.mkdir(parents=True)
        shutil.copy(work / name / "chain.sqlite", node_dir / "chain.sqlite")
        if name in MINE_CPU:
            (node_dir / "profile.json").write_text(json.dumps(_profile(MINE_CPU[name])))
    # n0 left no rounds.jsonl (the first node that has one is read: n1); n2's stops a round
    # early (it disagrees on the rounds present); n3's agrees with n1's.
    (run / "nodes" / "n1" / "rounds.jsonl").write_text(_rounds_lines(range(1, ROUNDS + 1)))
    (run / "nodes" / "n2" / "rounds.jsonl").write_text(_rounds_lines(range(1, ROUNDS)))
    (run / "nodes" / "n3" / "rounds.jsonl").write_text(_rounds_lines(range(1, ROUNDS + 1)))
    description = {
        "name": "blade-test",
        "runtime": "local",
        "protocol": "blade-fl",
        "started_at": "2025-01-01T00:00:00+00:00",
        "duration_s": DURATION,
        "pow_difficulty": DIFFICULTY,
        "nodes": [
            {
                "name": name,
                "address": ADDRESS[name],
                "peers": [p for p in NAMES if p != name],
                "behaviour": BEHAVIOUR[name],
            }
            for name in NAMES
        ],
    }
    (run / "run.json").write_text(json.dumps(description))
    (run / "spec.yaml").write_text("name: blade-test\nprotocol: blade-fl\n")
    _write_metrics(run / "metrics.csv")
    return run


@pytest.fixture(scope="module")
def rendered(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = Path(shutil.copytree(template, tmp_path_factory.mktemp("rendered") / "run"))
    render_report(run)
    return run


@pytest.fixture
def run_dir(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "run"))


def _report(run: Path) -> str:
    return (run / "report.md").read_text()


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _blocks(path: Path) -> list[pb.PowBlock]:
    with ChainStore.open(path) as store:
        blocks = [store.block(h) for h in range(1, store.height + 1)]
    assert all(isinstance(b, pb.PowBlock) for b in blocks)
    return blocks  # type: ignore[return-value]


# --- the final-accuracy window -----------------------------------------------------------------


def test_the_window_is_30_s_or_a_fifth_of_a_short_blade_run() -> None:
    assert final_window("blade-fl", 25.0) == pytest.approx(5.0)
    assert final_window("blade-fl", 31.5) == pytest.approx(6.3)
    assert final_window("blade-fl", 150.0) == pytest.approx(FINAL_WINDOW_S)
    assert final_window("blade-fl", 600.0) == pytest.approx(FINAL_WINDOW_S)
    assert final_window("dfl", 25.0) == pytest.approx(FINAL_WINDOW_S)  # DFL keeps its 30 s
    assert final_window("dfl", 180.0) == pytest.approx(FINAL_WINDOW_S)


def test_final_accuracy_is_the_mean_over_the_last_fifth_of_the_run(rendered: Path) -> None:
    summary = _summary(rendered)
    assert summary["window_s"] == pytest.approx(5.0)
    assert summary["window_start_s"] == pytest.approx(20.0)
    nodes = summary["nodes"]
    assert nodes["n0"]["final_test_accuracy"] == pytest.approx(0.9)
    assert nodes["n0"]["test_samples_in_window"] == 2
    assert nodes["n1"]["final_test_accuracy"] == pytest.approx(0.7)
    assert nodes["n2"]["final_test_accuracy"] == pytest.approx(0.6)
    assert nodes["n3"]["final_test_accuracy"] is None
    text = _report(rendered)
    assert "last 5 s of the run: 20 % of the run's 25.0 s" in text
    assert "time ≥ 20.0 s" in text
    assert "n3: no accuracy_test samples in the last 5 s" in text
    assert "last 30 s" not in text


# --- the blockchain section --------------------------------------------------------------------


def test_models_per_block_and_blocks_mined_are_what_the_stores_hold(rendered: Path) -> None:
    nodes = _summary(rendered)["nodes"]
    reference = _blocks(rendered / "nodes" / "n0" / "chain.sqlite")
    assert len(reference) == ROUNDS
    mined = {name: 0 for name in NAMES}
    for block in reference:
        mined[next(n for n in NAMES if key(n).address == block.header.miner)] += 1
    assert sum(1 for count in mined.values() if count) >= 2  # the tie-breaks spread the blocks
    for name in NAMES:
        models = [len(b.transactions) for b in _blocks(rendered / "nodes" / name / "chain.sqlite")]
        figures = nodes[name]
        assert figures["blocks"] == len(models) == ROUNDS, name
        assert figures["tx_per_block_mean"] == pytest.approx(sum(models) / len(models)), name
        assert figures["tx_per_block_min"] == min(models) == 4, name  # every client's model
        assert figures["blocks_mined"] == mined[name], name
        assert figures["chain_verifies"] is True, name
        # DFL's receipts and confirmations do not exist in a PowBlock.
        assert figures["confirmations_per_block_mean"] is None, name
        assert figures["confirmed_fraction_mean"] is None, name
    text = _report(rendered)
    assert "## Blockchain (BLADE-FL)" in text
    assert "confirmations/block" not in text and "Confirmed =" not in text
    assert f"| n0 | {ROUNDS} | 4.00 | 4 | {mined['n0']} | 3 | 6 | 2.00 s |" in text
    assert "counted on n0's chain" in text


def test_hash_rate_and_mining_time_per_search_come_from_the_counters(rendered: Path) -> None:
    summary = _summary(rendered)
    nodes = summary["nodes"]
    for name, mine in MINE_CPU.items():
        figures = nodes[name]
        hashes, seconds, searches = (
            POW_HASHES[name][1],
            MINING_SECONDS[name][1],
            MINING_SEARCHES[name][1],
        )
        assert figures["pow_hashes"] == hashes, name
        assert figures["hash_rate"] == pytest.approx(hashes / mine), name
        assert figures["mining_searches"] == searches, name
        assert figures["mining_seconds_per_search"] == pytest.approx(seconds / searches), name
        assert figures["forks"] == FORKS[name][1], name
    assert nodes["n0"]["hash_rate"] == pytest.approx(500_000)  # 2e6 / 4.0
    assert nodes["n1"]["mining_seconds_per_search"] == pytest.approx(2.0)  # 10 / 5
    n3 = nodes["n3"]
    assert n3["pow_hashes"] is None and n3["hash_rate"] is None
    assert n3["mining_seconds_per_search"] is None and n3["forks"] is None
    # The network: 9e6 hashes / mean(12, 10, 8) = 10 s of mining = 900,000 hashes per second.
    assert summary["network_hash_rate"] == pytest.approx(900_000)
    assert summary["pow_difficulty"] == pytest.approx(DIFFICULTY)
    text = _report(rendered)
    assert "| 2,000,000 | 500,000 | yes |" in text
    assert "= 900,000 hashes per wall second" in text
    assert "difficulty (run.json `pow_difficulty`): 64 expected hashes per block" in text
    assert f"{DIFFICULTY / 900_000:.2f} s" in text


def test_a_tampered_chain_moves_the_blocks_mined_count_to_a_verifying_one(run_dir: Path) -> None:
    with sqlite3.connect(run_dir / "nodes" / "n0" / "chain.sqlite") as db:
        db.execute("UPDATE blocks SET final_digest = zeroblob(32) WHERE height = 2")
    text = render_report(run_dir).read_text()
    nodes = _summary(run_dir)["nodes"]
    assert nodes["n0"]["chain_verifies"] is False
    assert nodes["n0"]["tx_per_block_min"] == 4  # the statistics are still read
    assert sum(nodes[n]["blocks_mined"] for n in NAMES) == ROUNDS
    assert "counted on n1's chain" in text
    # n0's digest column no longer matches: its chain differs from the reference's at height 2.
    assert "n0: its chain differs from n1's from height 2 on" in text


# --- lazy clients ------------------------------------------------------------------------------


def test_the_verdict_marks_exactly_the_lazy_client(rendered: Path) -> None:
    verdicts = _summary(rendered)["plagiarism"]
    assert list(verdicts) == list(NAMES)
    assert [n for n, v in verdicts.items() if v["suspected"]] == ["n3"]
    n3 = verdicts["n3"]
    assert n3["difference_std"] == pytest.approx(0.1)
    assert n3["copy_coefficient"] == pytest.approx(0.95)
    assert n3["update_cosine"] == pytest.approx(0.02)
    assert n3["model_cosine"] == pytest.approx(0.5)
    assert (n3["nearest"], n3["nearest_rounds"], n3["rounds"]) == ("n0", ROUNDS, ROUNDS)
    assert n3["behaviour"] == "lazy"
    assert verdicts["n0"]["difference_std"] == pytest.approx(0.001)
    assert verdicts["n2"]["difference_std"] == pytest.approx(0.0012)
    assert (verdicts["n1"]["nearest"], verdicts["n1"]["nearest_rounds"]) == ("n0", ROUNDS - 1)
    assert verdicts["n1"]["behaviour"] == "normal"
    text = _report(rendered)
    assert "## Lazy clients (plagiarism)" in text
    assert "From n1's rounds.jsonl (5 blocks" in text  # n0 has none: the first that has one
    assert (
        "| n3 | lazy | 5 | 0.5000 | 0.020 | 0.950 | 1.00e-01 | n0 (5/5) | **suspected** |" in text
    )
    assert (
        "| n1 | normal | 5 | 0.9990 | 0.700 | 0.750 | 1.00e-03 | n0 (4/5) | honest-looking |"
        in text
    )
    assert "difference std about the noise's sigma" in text


def _set_spread(run: Path, client: str, value: float) -> None:
    """Rewrites one client's difference_std in every rounds.jsonl of the run."""
    for name in NAMES:
        path = run / "nodes" / name / "rounds.jsonl"
        if not path.is_file():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record in records:
            for entry in record["resemblance"]:
                if entry["client"] == ADDRESS[client]:
                    entry["difference_std"] = value
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_the_verdict_is_relative_to_the_median_client(run_dir: Path) -> None:
    """The clients' mean spreads are 0.001, 0.001, 0.0012 and n3's: the median is 0.0011, so n3
    is suspected from 0.011 on."""
    _set_spread(run_dir, "n3", 0.012)
    verdicts = summarize(load_run(run_dir)).plagiarism
    assert verdicts["n3"].difference_std == pytest.approx(0.012)
    assert [n for n, v in verdicts.items() if v.suspected] == ["n3"]
    _set_spread(run_dir, "n3", 0.010)
    verdicts = summarize(load_run(run_dir)).plagiarism
    assert not any(v.suspected for v in verdicts.values())
    # Everyone identical (a spread of 0 everywhere) suspects no one.
    for name in NAMES:
        _set_spread(run_dir, name, 0.0)
    assert not any(v.suspected for v in summarize(load_run(run_dir)).plagiarism.values())


def test_a_rounds_file_that_disagrees_on_the_rounds_is_noted(rendered: Path) -> None:
    text = _report(rendered)
    assert "n2: rounds.jsonl disagrees with n1's on the rounds present" in text
    assert "(n2 has rounds 1-4, n1 has rounds 1-5)" in text
    assert "n3: rounds.jsonl disagrees" not in text


def test_a_blade_run_without_rounds_files_says_so(run_dir: Path) -> None:
    for name in NAMES:
        (run_dir / "nodes" / name / "rounds.jsonl").unlink(missing_ok=True)
    text = render_report(run_dir).read_text()
    assert "## Lazy clients (plagiarism)" in text
    assert "No node left a rounds.jsonl" in text
    assert _summary(run_dir)["plagiarism"] == {}
    assert not (run_dir / "plots" / "plagiarism.png").exists()


def test_the_plagiarism_plot_is_a_real_png(rendered: Path) -> None:
    data = (rendered / "plots" / "plagiarism.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert "](plots/plagiarism.png)" in _report(rendered)


# --- counters ----------------------------------------------------------------------------------


def test_bytes_sent_and_the_mining_counters_are_rendered_not_listed_as_other(
    rendered: Path,
) -> None:
    nodes = _summary(rendered)["nodes"]
    assert nodes["n0"]["counters"]["bytes_sent"] == 123_456
    assert nodes["n3"]["counters"]["bytes_sent"] is None
    assert summarize(load_run(rendered)).nodes["n2"].bytes_sent == 300_000
    text = _report(rendered)
    assert "| bytes sent |" in text
    assert "| n0 | 5 | n/a | 123,456 | n/a | n/a |" in text
    assert "| n3 | 3 | n/a | n/a | n/a | n/a |" in text
    assert "Other metrics present" not in text
    assert str(rendered) not in text
