"""`dfl compare SPEC --protocols ... --runtime sim` end to end on a tiny spec (MLP, 60 ticks, three
nodes), and the command's refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import datasets
from orchestrator.cli import main

TINY = """\
name: tiny-compare
protocol: dfl
seed: 3
duration: 60s
model: mlp
dataset: mnist
nodes:
  count: 3
  distribution: iid
  injection_rate: 64
dfl:
  fedavg_buffer: 2
  transactions_per_block: 4
evaluation:
  test_samples: 200
  interval: 5s
sim:
  training_interval: [2, 3]
  accuracy_interval: 5
  test_samples: 200
"""
PROTOCOLS = ("dfl", "blade-fl", "fedavg")
FIGURES = ("accuracy_time.png", "accuracy_cpu.png", "costs.png")


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def compared(
    spec_file: Path,
    mnist: datasets.Dataset,
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    out = tmp_path_factory.mktemp("compare") / "out"
    code = main(
        [
            "compare",
            str(spec_file),
            "--protocols",
            ",".join(PROTOCOLS),
            "--runtime",
            "sim",
            "--target",
            "0.5",
            "--out",
            str(out),
            "--data-dir",
            str(data_dir),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_each_protocol_runs_into_its_own_directory(compared: Path) -> None:
    for protocol in PROTOCOLS:
        assert (compared / protocol / "summary.json").exists()
        assert (compared / protocol / "spec.yaml").exists()
        summary = json.loads((compared / protocol / "summary.json").read_text())
        assert summary["protocol"] == protocol


def test_the_table_holds_the_protocols_side_by_side(compared: Path) -> None:
    text = (compared / "compare.md").read_text()
    assert "| | dfl | blade-fl | fedavg |" in text.replace("|  |", "| |")
    for row in (
        "final test-set accuracy",
        "time to 0.5",
        "protocol CPU to 0.5",
        "blockchain share of CPU",
        "bytes sent, all nodes",
        "local SGD steps per node",
    ):
        assert f"| {row} |" in text
    assert "| local SGD steps per node | 24 | 24 | 24 |" in text  # the rule's equal steps
    assert "| topology | full | full | star |" in text
    assert "virtual time" in text  # the sim's clock is named
    assert "same local training per node" in text  # the rule is stated
    for figure in FIGURES:
        assert f"]({figure})" in text


def test_the_json_and_the_figures_hold_each_protocol(compared: Path) -> None:
    document = json.loads((compared / "compare.json").read_text())
    rows = {row["protocol"]: row for row in document["protocols"]}
    assert list(rows) == list(PROTOCOLS)
    assert all(document["equal_fields"].values())
    for protocol, row in rows.items():
        assert row["final_accuracy"] > 0.3, protocol  # well above chance in 24 steps
        assert row["cpu_seconds_total"] > 0
        assert row["local_sgd_steps_per_node"] == 24
        assert len(row["curve"]["times"]) == len(row["curve"]["mean"]) >= 2
        reached = row["time_to_target_s"]
        best = max(row["curve"]["mean"])
        assert (reached is not None) == (best >= 0.5)
    assert rows["fedavg"]["blockchain_share"] == 0.0  # no chain
    assert rows["dfl"]["blockchain_share"] > 0 and rows["blade-fl"]["blockchain_share"] > 0
    assert rows["dfl"]["bytes_sent_total"] > 0 and rows["fedavg"]["bytes_sent_total"] > 0
    for figure in FIGURES:
        assert (compared / figure).stat().st_size > 10_000


def test_run_directories_with_protocols_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run.mkdir()
    assert main(["compare", *map(str, runs), "--protocols", "dfl,blade-fl"]) == 2
    err = capsys.readouterr().err
    assert "--protocols" in err and "one SPEC file" in err


def test_an_unknown_protocol_lists_the_known(
    spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["compare", str(spec_file), "--protocols", "dfl,raft", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown protocol 'raft'; known: dfl, blade-fl, fedavg" in err
    assert not out.exists()  # refused before anything ran


def test_a_spec_needs_protocols_and_a_second_one(
    spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(spec_file)]) == 2
    assert "add --protocols" in capsys.readouterr().err
    assert main(["compare", str(spec_file), "--protocols", "dfl"]) == 2
    assert "at least two protocols" in capsys.readouterr().err


def test_a_spec_that_cannot_run_under_a_protocol_names_the_field(
    spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "compare",
            str(spec_file),
            "--protocols",
            "dfl,fedavg",
            "--set",
            "nodes.behaviours={0: observer, 1: observer, 2: observer}",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "nodes.behaviours" in capsys.readouterr().err
    assert not out.exists()


def test_help_explains_the_spec_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("--protocols", "--runtime", "same local training per node", "virtual time"):
        assert phrase in text


def test_finished_runs_are_not_overwritten_without_force(
    compared: Path, spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (compared / "fedavg" / "summary.json").read_text()
    args = ["compare", str(spec_file), "--protocols", ",".join(PROTOCOLS), "--out", str(compared)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "--force" in err
    assert (compared / "fedavg" / "summary.json").read_text() == before  # nothing ran
