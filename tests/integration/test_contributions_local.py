"""`dfl chain contributions` on a BLADE-FL run of real processes (the local runtime).

A process runtime calibrates its mining difficulty to the machine, so its chain cannot be
re-simulated; the verdict then comes from the tables the clients wrote to rounds.jsonl, used
only for the rounds whose block the chain holds. Three short rounds, one lazy client of four.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.contributions_output import CONTRIBUTIONS_FILE, LAZY_ROUNDS_FILE
from orchestrator.datasets import DATA_DIR_ENV, ensure_dataset
from orchestrator.runtimes.local import run_local
from orchestrator.spec import load_spec, with_overrides

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
OVERRIDES = {
    "name": "contributions-local",
    "blade.rounds": ROUNDS,
    "blade.t_sum": None,
    "blade.alpha": None,
    "blade.local_iterations": 2,
    "blade.beta": "1s",
    "blade.lazy_clients": 1,
    "blade.noise_variance": 0.01,
    "evaluation.interval": "3s",
    "evaluation.test_samples": 200,
}


def test_the_lazy_process_and_only_it_is_flagged_from_its_peers_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data")
    ensure_dataset("mnist", data)
    monkeypatch.setenv(DATA_DIR_ENV, str(data))  # the driver loads the dataset by name
    spec = with_overrides(load_spec(REPO_ROOT / "experiments" / "smoke-blade.yaml"), OVERRIDES)
    run_local(spec, tmp_path / "run", progress=False)

    out = tmp_path / "out"
    assert main(["chain", "contributions", str(tmp_path / "run"), "--out", str(out)]) == 0

    with (tmp_path / "out" / LAZY_ROUNDS_FILE).open(newline="") as handle:
        per_round = list(csv.DictReader(handle))
    assert {row["source"] for row in per_round} == {"rounds.jsonl"}
    assert {(row["round"], row["client"]) for row in per_round if row["lazy"] == "1"} == {
        (str(r), "node3") for r in range(1, ROUNDS + 1)
    }
    with (tmp_path / "out" / CONTRIBUTIONS_FILE).open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["node"] for row in table if row["lazy"] == "1"] == ["node3"]
