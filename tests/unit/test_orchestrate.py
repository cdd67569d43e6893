"""`dfl orchestrate`'s arguments, and the pieces of the docker runtime that need no engine."""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.commands.common import spec_from_args
from orchestrator.commands.orchestrate import VARIABLES, parse_node
from orchestrator.exporter import OrchestratorMetrics
from orchestrator.runtimes.docker import _extract_into, _tar_of
from orchestrator.spec import ExperimentSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_node_is_name_equals_host_port_or_just_host_port() -> None:
    node = parse_node("node2=10.0.0.7:50051", 2, 9100)
    assert (node.name, node.target, node.index) == ("node2", "10.0.0.7:50051", 2)
    assert node.metrics_url == "http://10.0.0.7:9100/metrics"
    assert parse_node("node3:50051", 3, 0).name == "node3"
    assert parse_node("node3:50051", 3, 0).metrics_url is None  # port 0: not scraped


@pytest.mark.parametrize("text", ["node0=node0", "node0=:50051", "=node0:1", "node0=h:port"])
def test_a_malformed_node_names_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="expected NAME=HOST:PORT"):
        parse_node(text, 0, 9100)


COMPOSE_SPEC = REPO_ROOT / "experiments" / "compose-dfl.yaml"
RATE = "DFL_INJECTION_RATE"


def compose_spec(*sets: str) -> ExperimentSpec:
    spec = spec_from_args(argparse.Namespace(spec=COMPOSE_SPEC, set=list(sets)), VARIABLES)
    assert spec is not None
    return spec


def test_the_rate_is_the_specs_then_the_environment_then_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RATE, raising=False)
    assert compose_spec().nodes.injection_rate == 4.0
    monkeypatch.setenv(RATE, " ")
    assert compose_spec().nodes.injection_rate == 4.0
    monkeypatch.setenv(RATE, " 32 ")
    assert compose_spec().nodes.injection_rate == 32.0
    assert compose_spec("nodes.injection_rate=8").nodes.injection_rate == 8.0  # --set wins


@pytest.mark.parametrize(("raw", "needle"), [("fast", "must be a number"), ("0", "must be > 0")])
def test_a_bad_rate_in_the_environment_names_the_variable_and_the_field(
    monkeypatch: pytest.MonkeyPatch, capsys, raw: str, needle: str
) -> None:
    monkeypatch.setenv(RATE, raw)
    nodes = [f"--node=node{i}=node{i}:50051" for i in range(4)]
    assert main(["orchestrate", str(COMPOSE_SPEC), *nodes]) == 2
    err = capsys.readouterr().err
    assert f"(${RATE}): nodes.injection_rate: {needle}" in err


def test_orchestrate_has_no_rate_flag_beside_the_spec(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["orchestrate", str(COMPOSE_SPEC), "--node", "node0=node0:50051", "--rate", "8"])
    assert "unrecognized arguments: --rate" in capsys.readouterr().err


def test_orchestrate_refuses_a_node_count_the_spec_does_not_have(capsys) -> None:
    spec = str(REPO_ROOT / "experiments" / "compose-dfl.yaml")
    assert main(["orchestrate", spec, "--node", "node0=node0:50051"]) == 2
    assert "--set nodes.count=1" in capsys.readouterr().err


def test_the_exporter_labels_accuracy_and_injection_by_node() -> None:
    metrics = OrchestratorMetrics()
    metrics.sampled("node1", {"accuracy_test": 0.93, "chain_height": 4})
    metrics.injected_into("node1")(16)
    metrics.injected_into("node1")(16)
    value = metrics.registry.get_sample_value
    assert value("dfl_test_accuracy", {"node": "node1"}) == 0.93
    assert value("dfl_orchestrator_samples_injected_total", {"node": "node1"}) == 32
    assert value("dfl_orchestrator_evaluations_total", {"node": "node1"}) == 1
    metrics.sampled("node2", {"chain_height": 1})  # no accuracy measured: no series invented
    assert value("dfl_test_accuracy", {"node": "node2"}) is None


def test_a_config_archive_creates_its_folders_and_round_trips(tmp_path: Path) -> None:
    blob = _tar_of("/etc/dfl/node.yaml", "name: node0\n")
    with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
        assert archive.getnames() == ["etc", "etc/dfl", "etc/dfl/node.yaml"]
        archive.extractall(tmp_path, filter="data")
    assert (tmp_path / "etc" / "dfl" / "node.yaml").read_text() == "name: node0\n"


def test_a_data_directory_archive_unpacks_without_its_top_folder(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in (("data/chain.sqlite", b"chain"), ("data/sub/x", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("data/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    _extract_into([buffer.getvalue()[:100], buffer.getvalue()[100:]], tmp_path)
    assert (tmp_path / "chain.sqlite").read_bytes() == b"chain"
    assert (tmp_path / "sub" / "x").read_bytes() == b"x"
    assert not (tmp_path / "escape").exists()  # links from a container are not followed


def test_progress_names_each_of_a_few_nodes_and_summarizes_many() -> None:
    from orchestrator.driver import Progress

    few = {f"node{i}": {"accuracy_test": 0.5 + i / 10, "chain_height": i} for i in range(2)}
    assert Progress(60, True).line(10.0, few) == (
        "[  10.0/60 s] node0 acc 0.500 blk 0 | node1 acc 0.600 blk 1"
    )
    many = {f"node{i}": {"accuracy_test": i / 10, "chain_height": 2 + i % 3} for i in range(9)}
    assert Progress(None, True).line(5.0, many) == (
        "[   5.0 s] 9 nodes: acc min 0.000 mean 0.400 max 0.800 | blk 2-4"
    )


def test_a_run_without_its_dataset_stops_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("DFL_DATA_DIR", str(tmp_path / "empty"))
    spec = str(REPO_ROOT / "experiments" / "compose-dfl.yaml")
    out = tmp_path / "run"
    for runtime in ("local", "docker"):
        assert main(["run", spec, "--runtime", runtime, "--out", str(out)]) == 2
        assert "dfl data fetch mnist" in capsys.readouterr().err
    assert not out.exists()  # no run directory, no nodes, no containers
