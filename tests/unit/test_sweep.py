"""`dfl sweep`: a set of simulations from set.yaml, run in parallel, resumed, summarised."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import topology
from orchestrator.sim import outputs
from orchestrator.sim.set_report import write_set_report
from orchestrator.sim.sweep import SWEEP_FILE, load_set, run_sweep
from orchestrator.spec import SpecError, with_overrides
from tests.support import SMALL_DFL


def write_set(directory: Path, **changes: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = {**SMALL_DFL, "duration": 40}
    (directory / "base.yaml").write_text(yaml.safe_dump(base))
    definition = {
        "title": "tiny set",
        "base": "base.yaml",
        "figure": "grid",
        "rows": [
            {"label": "HalfFedAvg", "set": {"dfl.aggregator": "half-fedavg"}},
            {"label": "attacked", "set": {"nodes.behaviours.0": "random-model"}},
        ],
        "columns": [
            {"label": "IID"},
            {
                "label": "Dirichlet 1",
                "set": {"nodes.distribution": "dirichlet:1"},
                "repetitions": 2,
            },
        ],
        **changes,
    }
    (directory / "set.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
    return directory


def test_a_set_expands_into_cases_and_repetitions_with_their_own_seeds(tmp_path: Path) -> None:
    plan = load_set(write_set(tmp_path / "set"), tmp_path / "out")

    assert [case.slug for case in plan.cases] == [
        "halffedavg--iid",
        "halffedavg--dirichlet-1",
        "attacked--iid",
        "attacked--dirichlet-1",
    ]
    assert len(plan.runs) == 6
    repeated = [run for run in plan.runs if run.case.slug == "attacked--dirichlet-1"]
    assert [run.spec.seed for run in repeated] == [3, 4]
    assert repeated[1].out == tmp_path / "out" / "attacked--dirichlet-1" / "rep1"
    assert repeated[0].spec.nodes.behaviours[0].name == "random-model"
    assert repeated[0].spec.dfl.aggregator.name == "reputation-0.05"
    assert len(load_set(tmp_path / "set", repetitions=3).runs) == 8


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"figure": "pie"}, "figure"),
        ({"rows": []}, "rows"),
        ({"colums": []}, "colums"),
    ],
)
def test_a_malformed_set_file_is_an_error_naming_the_field(
    tmp_path: Path, changes: dict, field: str
) -> None:
    with pytest.raises(SpecError) as caught:
        load_set(write_set(tmp_path / "set", **changes))
    assert any(path.startswith(field) for path in caught.value.paths), caught.value.paths


def test_an_override_a_spec_refuses_names_the_case_and_the_field(tmp_path: Path) -> None:
    directory = write_set(
        tmp_path / "set", columns=[{"label": "bad", "set": {"dfl.fedavg_buffer": 0}}]
    )
    with pytest.raises(SpecError) as caught:
        load_set(directory)
    assert "dfl.fedavg_buffer" in caught.value.paths
    assert "column 'bad'" in str(caught.value)


RANDOM_COLUMN = {
    "label": "random graph",
    "set": {"nodes.count": 10, "topology.kind": "random", "topology.degree": 3},
    "repetitions": 2,
}


def test_each_repetition_is_validated_and_draws_its_own_graph(tmp_path: Path) -> None:
    plan = load_set(write_set(tmp_path / "set", columns=[RANDOM_COLUMN]))
    first, second = (run.spec for run in plan.runs if run.case.slug == "halffedavg--random-graph")
    assert (first.seed, second.seed) == (3, 4)
    assert second.edges() != first.edges()
    assert second == with_overrides(first, {"seed": 4})  # the graph of its own seed, not a copy


def test_a_repetition_whose_seed_cannot_draw_the_graph_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    draw = topology.random_edges

    def unlucky(n: int, degree: int, seed: int) -> list[topology.Edge]:
        if seed == 4:
            raise ValueError("could not draw a connected random graph (test)")
        return draw(n, degree, seed)

    monkeypatch.setattr(topology, "random_edges", unlucky)
    with pytest.raises(SpecError) as caught:
        load_set(write_set(tmp_path / "set", columns=[RANDOM_COLUMN]))
    assert caught.value.paths == ["topology.degree"]
    assert "halffedavg--random-graph, repetition 1" in str(caught.value)
    assert "could not draw a connected random graph" in str(caught.value)


def test_a_sweep_runs_every_case_writes_its_table_and_figure_and_resumes(
    tmp_path: Path, mnist: object, data_dir: Path
) -> None:
    directory = write_set(tmp_path / "set", columns=[{"label": "IID"}])
    plan = load_set(directory, tmp_path / "out")
    lines: list[str] = []

    record = run_sweep(plan, jobs=2, data_dir=str(data_dir), report=lines.append)
    paths = write_set_report(plan)

    assert record["ran"] == 2 and not record["failed"]
    assert all((run.out / outputs.SUMMARY_FILE).exists() for run in plan.runs)
    table = paths["md"].read_text()
    assert "| HalfFedAvg | IID | 1/1 |" in table and "| attacked | IID | 1/1 |" in table
    assert paths["figure"].stat().st_size > 10_000
    again = run_sweep(plan, jobs=2, data_dir=str(data_dir), report=lines.append)
    assert again["ran"] == 0 and again["skipped"] == 2
    assert len(json.loads((tmp_path / "out" / SWEEP_FILE).read_text())) == 2
    assert len(plan.pending(chain=False)) == 2  # what ran with the chain is not a chainless run

    base = yaml.safe_load((directory / "base.yaml").read_text())
    (directory / "base.yaml").write_text(yaml.safe_dump({**base, "duration": 30}))
    edited = load_set(directory, tmp_path / "out")
    assert len(edited.pending()) == 2  # runs of the old base are stale, not done


def dfl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True
    )


def test_simulate_refuses_a_bad_override_naming_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SMALL_DFL))
    result = dfl("simulate", str(spec), "--set", "sim.accuracy_interval=0", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "sim.accuracy_interval: must be >= 1" in result.stderr


def test_sweep_refuses_a_directory_without_a_set_file(tmp_path: Path) -> None:
    result = dfl("sweep", str(tmp_path))
    assert result.returncode == 2 and "set.yaml" in result.stderr


def test_simulate_writes_the_run_and_prints_its_headline(tmp_path: Path, data_dir: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SMALL_DFL))
    out = tmp_path / "run"
    result = dfl(
        "simulate",
        str(spec),
        "--set",
        "duration=20",
        "--quiet",
        "--threads",
        "1",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out}: final_accuracy ")
    assert outputs.read_summary(out)["ticks"] == 20
    assert (out / "run.png").exists() and (out / "nodes" / "node3" / "chain.sqlite").exists()
