"""`dfl chain contributions` on real simulated runs: it names the poisoner and the lazy client.

Each run is the simulator's, small and real (MNIST, an MLP, signed records in SQLite chain
stores): a DFL run in which node 2 sends random models, a BLADE-FL run in which the last client
copies a peer's model and adds noise, and a FedAvg run, which has no chain at all.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from node.ledger.store import ChainStore
from orchestrator.cli import main
from orchestrator.contributions import compute
from orchestrator.contributions_output import CONTRIBUTIONS_FILE, LAZY_ROUNDS_FILE
from orchestrator.contributions_plots import PLOT_FILE
from orchestrator.contributions_run import open_chains
from orchestrator.datasets import Dataset
from orchestrator.sim.run import simulate
from orchestrator.spec import load_spec, parse_spec, with_overrides
from proto.dfl.v1 import records_pb2 as pb
from tests.support import SMALL_BLADE, SMALL_DFL

REPO_ROOT = Path(__file__).resolve().parents[2]
ATTACKER = "node2"
LAZY = "client3"  # blade.lazy_clients: 1 makes the last client lazy


def contributions(*argv: str) -> int:
    """`dfl chain contributions ARGV...`, through the real command line."""
    return main(["chain", "contributions", *argv])


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dfl_run(tmp_path_factory: pytest.TempPathFactory, mnist: Dataset, data_dir: Path) -> Path:
    spec = parse_spec(
        {
            **SMALL_DFL,
            "name": "contributions-dfl",
            "duration": 60,
            "topology": {"kind": "full"},
            "nodes": {
                "count": 4,
                "distribution": "iid",
                "behaviours": {2: {"name": "random-model", "options": {"high": 0.01}}},
            },
        }
    )
    out = tmp_path_factory.mktemp("contributions") / "dfl"
    simulate(spec, out, progress=False, data_dir=data_dir, figures=False)
    return out


@pytest.fixture(scope="module")
def blade_run(tmp_path_factory: pytest.TempPathFactory, mnist: Dataset, data_dir: Path) -> Path:
    spec = parse_spec(
        {
            **SMALL_BLADE,
            "name": "contributions-blade",
            "blade": {
                "rounds": 4,
                "t_sum": 48,
                "alpha": 1,
                "beta": 10,
                "dataset_size": 64,
                "lazy_clients": 1,
                "noise_variance": 0.01,
            },
        }
    )
    out = tmp_path_factory.mktemp("contributions") / "blade"
    simulate(spec, out, progress=False, data_dir=data_dir, figures=False)
    return out


# --- DFL ----------------------------------------------------------------------------------------


def test_the_model_poisoner_ranks_last_and_the_outputs_hold_every_node(
    dfl_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert contributions(str(dfl_run), "--out", str(out)) == 0

    table = rows(out / CONTRIBUTIONS_FILE)
    assert [row["rank"] for row in table] == ["1", "2", "3", "4"]
    assert sorted(row["node"] for row in table) == ["node0", "node1", "node2", "node3"]
    assert table[-1]["node"] == ATTACKER
    scores = {row["node"]: float(row["score"]) for row in table}
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(scores[ATTACKER] < score / 2 for node, score in scores.items() if node != ATTACKER)
    # the figures are the chains': every transaction in a block, every receipt and confirmation
    transactions = receipts = confirmations = 0
    for node in ("node0", "node1", "node2", "node3"):
        with ChainStore.open(dfl_run / "nodes" / node) as store:
            for height, _, _ in store.blocks():
                block = store.block(height)
                assert isinstance(block, pb.Block)
                transactions += len(block.body.transactions)
                receipts += sum(len(tx.receipts) for tx in block.body.transactions)
                confirmations += len(block.finalization.confirmations)
    assert transactions > 0
    assert sum(int(row["transactions"]) for row in table) == transactions
    assert sum(int(row["receipts"]) for row in table) == receipts
    assert sum(int(row["confirmations_given"]) for row in table) == confirmations
    assert all(row["accuracy_bin1"] and row["accuracy_slope_per_min"] for row in table)
    assert is_png(out / PLOT_FILE)
    assert not (dfl_run / CONTRIBUTIONS_FILE).exists()  # --out, not the run directory
    printed = capsys.readouterr().out.splitlines()
    ranking = [line.split()[1] for line in printed if line.strip()[:1].isdigit()]
    assert ranking == [row["node"] for row in table]


def test_a_transaction_in_several_chains_is_counted_once(dfl_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(dfl_run, run)
    # a second chain holding node0's transactions (and their receipts) again
    shutil.copytree(run / "nodes" / "node0", run / "nodes" / "node9")

    with open_chains(dfl_run) as chains:
        once = compute(chains)
    with open_chains(run) as chains:
        twice = compute(chains)

    node0 = next(n for n in once.nodes if n.node == "node0")
    assert twice.duplicates == node0.transactions > 0
    assert len(twice.transactions) == len(once.transactions)
    assert twice.ranking()[: len(once.nodes)] == once.ranking()
    figures = {n.node: (n.transactions, n.receipts, n.score) for n in once.nodes}
    assert {n.node: (n.transactions, n.receipts, n.score) for n in twice.nodes} == {
        **figures,
        "node9": (0, 0, 0.0),
    }


# --- BLADE-FL -----------------------------------------------------------------------------------


def test_the_lazy_client_and_only_it_is_flagged_in_every_round(
    blade_run: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert contributions(str(blade_run), "--data-dir", str(data_dir)) == 0

    per_round = rows(blade_run / LAZY_ROUNDS_FILE)
    assert {row["round"] for row in per_round} == {"1", "2", "3", "4"}
    assert all(row["source"] == "chain+replay" for row in per_round)
    assert len(per_round) == 16  # four clients' models in each of four blocks
    assert {(row["round"], row["client"]) for row in per_round if row["lazy"] == "1"} == {
        (str(r), LAZY) for r in range(1, 5)
    }
    table = rows(blade_run / CONTRIBUTIONS_FILE)
    assert sorted(row["node"] for row in table) == ["client0", "client1", "client2", LAZY]
    assert [row["node"] for row in table if row["lazy"] == "1"] == [LAZY]
    assert table[-1]["node"] == LAZY and float(table[-1]["score"]) == 0.0
    assert is_png(blade_run / PLOT_FILE)
    assert "round 3: lazy client3" in capsys.readouterr().out


def test_an_honest_blade_fl_run_flags_nobody(
    tmp_path: Path, mnist: Dataset, data_dir: Path
) -> None:
    spec = with_overrides(
        load_spec(REPO_ROOT / "experiments" / "smoke-blade.yaml"),
        {
            "name": "contributions-honest",
            "blade.rounds": 3,
            "blade.t_sum": None,
            "blade.alpha": None,
            "blade.beta": 10,
            "blade.local_iterations": 1,
            "blade.dataset_size": 64,
        },
    )
    simulate(spec, tmp_path / "run", progress=False, data_dir=data_dir, figures=False)
    assert contributions(str(tmp_path / "run"), "--data-dir", str(data_dir)) == 0
    assert not [row for row in rows(tmp_path / "run" / LAZY_ROUNDS_FILE) if row["lazy"] == "1"]


# --- what is not a run --------------------------------------------------------------------------


def test_exit_2_for_a_directory_that_is_not_a_run_or_has_no_chain(
    tmp_path: Path, mnist: Dataset, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert contributions(str(tmp_path)) == 2
    assert "not a run directory" in capsys.readouterr().err

    spec = with_overrides(
        load_spec(REPO_ROOT / "experiments" / "smoke-fedavg.yaml"),
        {"fedavg.rounds": 1, "fedavg.local_epochs": 1, "fedavg.dataset_size": 64},
    )
    simulate(spec, tmp_path / "fedavg", progress=False, data_dir=data_dir, figures=False)
    assert contributions(str(tmp_path / "fedavg")) == 2
    assert "fedavg run" in capsys.readouterr().err
    assert not (tmp_path / "fedavg" / CONTRIBUTIONS_FILE).exists()
