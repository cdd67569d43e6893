"""FedAvg in the simulator: four clients learn MNIST, the wire carries FedAvg's cost and no more,
and one client alone is centralized training (benchmarks/centralized.py) on its data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks.centralized import train_and_test
from orchestrator.datasets import Dataset
from orchestrator.partition import Partition
from orchestrator.sim import outputs
from orchestrator.sim.fedavg import FedAvgSimulation
from orchestrator.sim.figures import plot_run
from orchestrator.sim.run import simulate
from orchestrator.spec import load_spec, parse_spec, with_overrides

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke-fedavg.yaml"


def test_four_clients_learn_mnist_and_the_run_directory_reads_back(
    tmp_path: Path, data_dir: Path
) -> None:
    spec = with_overrides(load_spec(SMOKE), {"fedavg.rounds": 4, "fedavg.local_epochs": 3})
    summary = simulate(spec, tmp_path / "run", progress=False, data_dir=data_dir)
    assert summary["protocol"] == "fedavg" and summary["rounds_done"] == 4
    assert summary["final_accuracy"] > 0.8, summary["final_accuracy"]
    assert summary["rejected"] == 0 and summary["models_missing"] == 0
    # FedAvg's wire: each client uploads one model a round, the aggregator sends one global
    # model to each of the three others a round, of the same size: 3x a client's bytes
    sent = summary["bytes_sent"]
    assert sent["client1"] == sent["client2"] == sent["client3"] > 0
    assert sent["client0"] == 3 * sent["client1"]
    assert summary["messages_sent"] == {"client0": 12, "client1": 4, "client2": 4, "client3": 4}
    # no chain: no blockchain CPU at all, every ML task the profiler knows
    assert summary["cpu_seconds"]["blockchain"] == 0.0 and summary["chain_share"] == 0.0
    tasks = {(row["task"], row["category"]) for row in summary["cpu_by_task"]}
    assert {("train", "ml"), ("update_model", "ml"), ("aggregate", "network")} <= tasks
    # the run directory: summary, the rounds series, each node's samples, the run's figure
    run = tmp_path / "run"
    assert outputs.read_summary(run) == json.loads(json.dumps(summary))
    header, rows = outputs.read_series(run / outputs.ROUNDS_FILE)
    assert header == ["round", "time", "loss", "accuracy"]
    assert list(rows[:, 0]) == [0, 1, 2, 3, 4]
    assert rows[-1, 3] == pytest.approx(summary["final_accuracy"], abs=1e-4)
    assert rows[-1, 3] > rows[0, 3] + 0.5  # the initial model is a guess
    assert sorted(p.name for p in (run / "nodes").iterdir()) == [f"client{i}" for i in range(4)]
    assert plot_run(run).stat().st_size > 0


def test_one_client_is_centralized_training_on_its_data(mnist: Dataset, tmp_path: Path) -> None:
    """A one-client FedAvg run (one round of E local epochs) against benchmarks/centralized.py's
    training on the same samples, epochs, batch and seed: the same Learner and train_epochs,
    so the two differ only in their seeded initial weights and shuffles."""
    size, epochs, batch, seed = 5000, 2, 32, 1
    spec = parse_spec(
        {
            "name": "one-client",
            "protocol": "fedavg",
            "seed": seed,
            "duration": "1h",
            "model": "mlp",
            "dataset": "mnist",
            "nodes": {"count": 1},
            "topology": {"kind": "star"},
            "fedavg": {
                "rounds": 1,
                "local_epochs": epochs,
                "dataset_size": size,
                "batch_size": batch,
            },
        }
    )
    fedavg = FedAvgSimulation(spec, mnist, tmp_path / "one", progress=False).run()
    assert fedavg["rounds_done"] == 1 and fedavg["bytes_sent"] == {"client0": 0}
    (picks,) = Partition.build(spec.partition(), 1, mnist.train_labels, seed).local_datasets(
        mnist.train_labels, size
    )
    local = dataclasses.replace(
        mnist, train_images=mnist.train_images[picks], train_labels=mnist.train_labels[picks]
    )
    _, centralized, _ = train_and_test("mlp", local, epochs, batch, seed)
    assert centralized > 0.8  # both learned: the comparison below means something
    assert fedavg["final_accuracy"] == pytest.approx(centralized, abs=0.01)
