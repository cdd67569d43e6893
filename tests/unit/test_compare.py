"""`dfl compare` over two synthetic run directories with round numbers.

test_report.py's run directory needs a real four-node network for its chain stores; a comparison
reads no chain figures, so these runs hold only run.json, metrics.csv and profile.json, and every
expected figure below is computed by hand from the constants.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from orchestrator import compare as compare_module
from orchestrator.cli import main
from orchestrator.compare import compare, compare_runs, comparison_markdown
from orchestrator.report import NodeSummary, RunData, RunSummary, load_run, summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DURATION = 100.0  # the final-accuracy window is t >= 70

# Run A (dfl, 2 nodes). Final accuracy: a0 mean(0.6, 0.8) = 0.7, a1 mean(0.8, 1.0) = 0.9.
ACCURACY_A = {
    "a0": {0: 0.2, 40: 0.4, 80: 0.6, 100: 0.8},
    "a1": {0: 0.4, 40: 0.6, 80: 0.8, 100: 1.0},
}
# Cumulative counters: the last value is the node's total (1.5 MB + 2.5 MB = 4 MB).
BYTES_A = {"a0": {40: 500_000, 100: 1_500_000}, "a1": {40: 1_000_000, 100: 2_500_000}}
# a0: blockchain 3 of 10 -> 30 %; a1: 1 of 10 -> 10 %. Summed: ml 14, blockchain 4, network 2.
CPU_A = {
    "a0": {
        ("train", "ml"): 6.0,
        ("generate_block", "blockchain"): 2.0,
        ("receive_transaction", "blockchain"): 1.0,
        ("other", "network"): 1.0,
    },
    "a1": {("train", "ml"): 8.0, ("generate_block", "blockchain"): 1.0, ("other", "network"): 1.0},
}

# Run B (blade-fl, 3 nodes, no bytes_sent: recorded before the metric existed). b2 died after
# t = 50 and left no profile: it drops out of the accuracy curve and out of the CPU means.
ACCURACY_B = {
    "b0": {0: 0.1, 50: 0.3, 100: 0.5},
    "b1": {0: 0.3, 50: 0.5, 100: 0.9},
    "b2": {0: 0.2, 50: 0.8},
}
CPU_B = {
    "b0": {("train", "ml"): 2.0, ("mine", "blockchain"): 2.0},
    "b1": {("train", "ml"): 2.0, ("mine", "blockchain"): 2.0},
}


def _write_run(
    directory: Path,
    *,
    name: str,
    protocol: str,
    accuracy: Mapping[str, Mapping[int, float]],
    cpu: Mapping[str, Mapping[tuple[str, str], float]],
    bytes_sent: Mapping[str, Mapping[int, float]] | None = None,
) -> Path:
    """A run directory as `dfl run` leaves it, minus what a comparison does not read."""
    nodes = list(accuracy)
    description = {
        "name": name,
        "runtime": "local",
        "protocol": protocol,
        "started_at": "2025-01-01T00:00:00+00:00",
        "duration_s": DURATION,
        "nodes": [{"name": n, "peers": [p for p in nodes if p != n]} for n in nodes],
    }
    directory.mkdir(parents=True)
    (directory / "run.json").write_text(json.dumps(description))
    rows = ["time_s,node,metric,value"]
    for metric, series in (("accuracy_test", accuracy), ("bytes_sent", bytes_sent or {})):
        rows += [f"{t},{n},{metric},{v}" for n, points in series.items() for t, v in points.items()]
    (directory / "metrics.csv").write_text("\n".join(rows) + "\n")
    for node, seconds in cpu.items():
        entries = [{"task": t, "category": c, "seconds": s} for (t, c), s in seconds.items()]
        (directory / "nodes" / node).mkdir(parents=True)
        (directory / "nodes" / node / "profile.json").write_text(json.dumps({"cpu": entries}))
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    run_a = _write_run(
        base / "dfl", name="exp", protocol="dfl", accuracy=ACCURACY_A, cpu=CPU_A, bytes_sent=BYTES_A
    )
    run_b = _write_run(
        base / "blade", name="exp", protocol="blade-fl", accuracy=ACCURACY_B, cpu=CPU_B
    )
    return run_a, run_b


@pytest.fixture(scope="module")
def written(runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One comparison shared by the tests that only read it (drawing takes about a second)."""
    out = tmp_path_factory.mktemp("out") / "compare"
    compare_runs(runs, out)
    return out


def _json_runs(out: Path) -> list[dict]:
    return json.loads((out / "compare.json").read_text())["runs"]


def test_labels_are_name_and_protocol(written: Path) -> None:
    assert [r["label"] for r in _json_runs(written)] == ["exp (dfl)", "exp (blade-fl)"]


def test_cpu_by_category_is_summed_and_averaged_over_profiled_nodes(written: Path) -> None:
    run_a, run_b = _json_runs(written)
    assert run_a["cpu_seconds_total"] == pytest.approx({"ml": 14, "blockchain": 4, "network": 2})
    assert run_a["cpu_seconds_node_mean"] == pytest.approx({"ml": 7, "blockchain": 2, "network": 1})
    assert run_b["profiled_nodes"] == 2  # b2 has no profile: not counted in the per-node mean
    assert run_b["cpu_seconds_node_mean"] == pytest.approx({"ml": 2, "blockchain": 2, "network": 0})
    text = (written / "compare.md").read_text()
    assert (
        "| exp (dfl) | 2 of 2 | 14.00 | 4.00 | 2.00 | 20.00 | 7.00 | 2.00 | 1.00 | 10.00 |" in text
    )
    row_b = "| exp (blade-fl) | 2 of 3 | 4.00 | 4.00 | 0.00 | 8.00 | 2.00 | 2.00 | 0.00 | 4.00 |"
    assert row_b in text
    assert "exp (blade-fl): b2: no profile.json" in text


def test_blockchain_share_mean_and_range_over_nodes(written: Path) -> None:
    run_a, run_b = _json_runs(written)
    assert run_a["blockchain_share_by_node"] == pytest.approx({"a0": 0.3, "a1": 0.1})
    assert run_a["blockchain_share"]["mean"] == pytest.approx(0.2)
    assert run_b["blockchain_share_by_node"]["b2"] is None
    text = (written / "compare.md").read_text()
    assert "| exp (dfl) | 20.0 % | 10.0 % .. 30.0 % | a0 30.0 %, a1 10.0 % |" in text
    row_b = "| exp (blade-fl) | 50.0 % | 50.0 % .. 50.0 % | b0 50.0 %, b1 50.0 %, b2 n/a |"
    assert row_b in text


def test_bytes_sent_is_each_nodes_last_counter_value(written: Path) -> None:
    run_a = _json_runs(written)[0]
    assert run_a["bytes_sent_by_node"] == {"a0": 1_500_000, "a1": 2_500_000}
    assert run_a["bytes_sent_total"] == 4_000_000
    text = (written / "compare.md").read_text()
    row = "| exp (dfl) | 4.00 MB | 2.00 MB | 1.50 MB .. 2.50 MB | a0 1.50 MB, a1 2.50 MB |"
    assert row in text


def test_a_run_without_bytes_sent_says_not_recorded(written: Path) -> None:
    run_b = _json_runs(written)[1]
    assert run_b["bytes_sent_by_node"] == {"b0": None, "b1": None, "b2": None}
    assert run_b["bytes_sent_total"] is None
    text = (written / "compare.md").read_text()
    row = "| exp (blade-fl) | not recorded | not recorded | not recorded | not recorded |"
    assert row in text


def test_final_accuracy_nodes_and_duration(written: Path) -> None:
    run_a, run_b = _json_runs(written)
    assert run_a["final_test_accuracy"]["mean"] == pytest.approx(0.8)
    assert run_a["final_test_accuracy"]["minimum"] == pytest.approx(0.7)
    assert run_b["final_test_accuracy"]["mean"] == pytest.approx(0.7)  # b2 has no final figure
    assert (run_a["nodes"], run_b["nodes"], run_b["protocol"]) == (2, 3, "blade-fl")
    text = (written / "compare.md").read_text()
    assert "| exp (dfl) | 0.800 | 0.700 | 2 of 2 |" in text
    assert "| exp (blade-fl) | 0.700 | 0.500 | 2 of 3 |" in text
    base = _json_runs(written)[1]["directory"].rsplit("/", 1)[0]  # pytest numbers the base
    header_row = f"| `{base}/blade` | blade-fl | local | 2025-01-01T00:00:00+00:00 | 3 | 100.0 s"
    assert header_row in text


def test_accuracy_curve_is_mean_and_band_over_the_reporting_nodes(written: Path) -> None:
    run_a, run_b = _json_runs(written)
    curve = run_a["accuracy"]
    assert curve["times"] == [0, 40, 80, 100]
    assert curve["mean"] == pytest.approx([0.3, 0.5, 0.7, 0.9])
    assert curve["minimum"] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert curve["maximum"] == pytest.approx([0.4, 0.6, 0.8, 1.0])
    # At t = 100, b2 (last sample at 50) no longer counts: mean of 0.5 and 0.9 only.
    curve = run_b["accuracy"]
    assert curve["times"] == [0, 50, 100]
    assert curve["mean"] == pytest.approx([0.2, 1.6 / 3, 0.7])
    assert curve["maximum"] == pytest.approx([0.3, 0.8, 0.9])


def test_plots_are_real_pngs(written: Path) -> None:
    for name in ("accuracy", "cpu"):
        data = (written / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, name  # axes, lines and text, not an empty canvas
    text = (written / "compare.md").read_text()
    assert "](accuracy.png)" in text and "](cpu.png)" in text


def test_the_comparison_is_portable(written: Path, runs: tuple[Path, Path]) -> None:
    for name in ("compare.md", "compare.json"):
        text = (written / name).read_text()
        assert str(runs[0]) not in text and str(written) not in text, name
    base = f"../../{runs[0].parent.name}"  # relative to the comparison, not absolute
    assert [r["directory"] for r in _json_runs(written)] == [f"{base}/dfl", f"{base}/blade"]


@dataclass(frozen=True)
class _BladeNodeSummary(NodeSummary):
    mined_blocks: int = 0


@dataclass(frozen=True)
class _BladeSummary(RunSummary):
    rounds: int = 0
    lazy: dict[str, int] = field(default_factory=dict)


def _with_blade_fields(data: RunData) -> RunSummary:
    """summarize() as it will be once BLADE-FL's fields are added, for blade-fl runs."""
    summary = summarize(data)
    if summary.protocol != "blade-fl":
        return summary
    nodes = {
        name: _BladeNodeSummary(**_as_kwargs(node), mined_blocks=2 * (i + 1))
        for i, (name, node) in enumerate(summary.nodes.items())
    }
    return _BladeSummary(**{**_as_kwargs(summary), "nodes": nodes}, rounds=7, lazy={"nodes": 1})


def _as_kwargs(instance: object) -> dict[str, object]:
    return {f.name: getattr(instance, f.name) for f in fields(instance)}  # type: ignore[arg-type]


def test_protocol_specific_summary_fields_are_listed(
    runs: Sequence[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compare_module, "summarize", _with_blade_fields)
    run_a, run_b = compare([load_run(r) for r in runs], tmp_path)
    assert run_a.protocol_figures == {}
    assert run_b.protocol_figures == {"rounds": 7, "lazy.nodes": 1, "mined_blocks (node mean)": 4.0}
    text = comparison_markdown((run_a, run_b))
    assert "| exp (blade-fl) | rounds | 7 |" in text
    assert "| exp (blade-fl) | mined_blocks (node mean) | 4 |" in text


def test_cli_writes_the_comparison_and_prints_its_path(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nested" / "cmp"
    assert main(["compare", *map(str, runs), str(runs[0]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out / 'compare.md'}"
    labels = [r["label"] for r in _json_runs(out)]
    assert labels == ["exp (dfl, dfl) #1", "exp (blade-fl)", "exp (dfl, dfl) #2"]


def test_cli_exits_2_for_a_directory_that_is_not_a_run(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(runs[0]), str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nowhere is not a run directory" in err
    assert "run.json, metrics.csv" in err  # says what a run directory holds
    assert not out.exists()  # every run is read before anything is written


def test_cli_exits_2_for_a_single_run(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(runs[0]), "--out", str(out)]) == 2
    assert "at least 2 run directories, got 1" in capsys.readouterr().err
    assert not out.exists()


def test_help_says_what_is_compared_and_where_it_goes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["compare", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    phrases = (
        "wall-clock time",
        "ml, blockchain, network",
        "blockchain share",
        "bytes_sent",
        "OUT/compare.md",
        "accuracy.png",
        "cpu.png",
        "runs/compare",
        "Exit 2",
    )
    for phrase in phrases:
        assert phrase in text, phrase
