"""The step mode's rules: stage sizes, the figures of a stage from two of Locust's snapshots, the
limits that stop it, the knee, and the command line that sets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.load.steps import (
    ALL_REQUESTS,
    JUDGED_TRANSACTION,
    Counts,
    StageFigures,
    StepPlan,
    between,
    judged_name,
    knee,
    percentile,
    read_stages,
    stage_figures,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = str(REPO_ROOT / "experiments" / "smoke-dfl.yaml")


def plan(**changes: object) -> StepPlan:
    settings: dict[str, object] = {
        "start_users": 4,
        "add_users": 4,
        "stage_seconds": 20.0,
        "settle_seconds": 5.0,
        "max_users": 20,
        "p99_limit_ms": 500.0,
        "failure_limit": 0.05,
        "judged": JUDGED_TRANSACTION,
        "steps_file": "steps.jsonl",
    }
    settings.update(changes)
    return StepPlan(**settings)  # type: ignore[arg-type]


def stage(number: int, served: float, mean_ms: float, over: str = "") -> StageFigures:
    return StageFigures(
        stage=number,
        users=4 * (number + 1),
        seconds=15.0,
        requests=int(served * 15),
        failures=0,
        throughput=served,
        served=served,
        mean_ms=mean_ms,
        p50_ms=mean_ms,
        p95_ms=mean_ms,
        p99_ms=mean_ms,
        over=over,
    )


def test_stages_grow_by_the_step_up_to_the_maximum() -> None:
    steps = plan(start_users=4, add_users=4, max_users=18)
    assert [steps.users_of(k) for k in range(steps.stages)] == [4, 8, 12, 16]


def test_percentile_is_the_smallest_time_with_that_share_at_or_below_it() -> None:
    times = {10: 90, 20: 9, 900: 1}  # 100 requests
    assert percentile(times, 0.5) == 10
    assert percentile(times, 0.95) == 20
    assert percentile(times, 0.99) == 20
    assert percentile(times, 1.0) == 900
    assert percentile({}, 0.99) is None


def test_a_stage_counts_only_what_happened_between_its_two_snapshots() -> None:
    before = Counts(requests=100, failures=2, total_ms=2000.0, response_times={10: 90, 50: 10})
    after = Counts(requests=160, failures=5, total_ms=3800.0, response_times={10: 130, 50: 30})
    gained = between(before, after)
    assert (gained.requests, gained.failures, gained.total_ms) == (60, 3, 1800.0)
    assert gained.response_times == {10: 40, 50: 20}
    figures = stage_figures(plan(), 1, before, after, seconds=15.0)
    assert figures.users == 8
    assert figures.throughput == pytest.approx(4.0)
    assert figures.served == pytest.approx(57 / 15)
    assert figures.mean_ms == pytest.approx(30.0)
    assert (figures.p50_ms, figures.p99_ms) == (10, 50)
    assert figures.failure_ratio == pytest.approx(0.05)
    assert figures.over == ""  # 5 % is the limit, not past it


def test_a_stage_past_a_limit_says_which() -> None:
    empty = Counts(0, 0, 0.0, {})
    slow = Counts(requests=100, failures=0, total_ms=90_000.0, response_times={100: 90, 2000: 10})
    assert stage_figures(plan(), 0, empty, slow, 10.0).over == "p99 2000 ms > 500 ms"
    failing = Counts(requests=100, failures=10, total_ms=1000.0, response_times={10: 100})
    assert stage_figures(plan(), 0, empty, failing, 10.0).over == "failures 10.0% > 5%"
    assert stage_figures(plan(), 0, empty, empty, 10.0).over == "no request answered"


def test_the_knee_is_the_stage_of_highest_power_within_the_limits() -> None:
    stages = [
        stage(0, served=8.0, mean_ms=20.0),  # power 0.4
        stage(1, served=16.0, mean_ms=25.0),  # 0.64: the knee
        stage(2, served=20.0, mean_ms=60.0),  # 0.33: queueing
        stage(3, served=40.0, mean_ms=10.0, over="failures 9.0% > 5%"),  # never the knee
    ]
    assert knee(stages) == stages[1]
    assert knee([stages[3]]) is None


def test_the_steps_file_is_read_back_and_a_cut_line_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "load_steps.jsonl"
    first, second = stage(0, 8.0, 20.0), stage(1, 16.0, 25.0)
    path.write_text(first.line() + "\n" + second.line() + "\n" + second.line()[:20])
    assert read_stages(path) == [first, second]
    assert read_stages(tmp_path / "absent.jsonl") == []


def test_the_judged_request_is_the_transaction_when_that_task_runs() -> None:
    assert judged_name({"transaction": 1, "forged": 10}) == JUDGED_TRANSACTION
    assert judged_name({"status": 1}) == ALL_REQUESTS


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--step-users", "0"], "--step-users 0: at least 1"),
        (["--step-seconds", "1"], "--step-seconds 1: at least 2"),
        (["--step-settle", "20"], "--step-settle 20: at least 0 and below --step-seconds"),
        (["--max-users", "2"], "--max-users 2: at least --users (5)"),
        (["--p99-limit", "0"], "--p99-limit 0: above 0"),
        (["--failure-limit", "1.5"], "--failure-limit 1.5: between 0 and 1"),
        (["--user-rate", "0"], "--user-rate 0: above 0"),
        (["--nice", "25"], "--nice 25: between 0 and 19"),
    ],
)
def test_a_bad_step_flag_is_named_and_nothing_starts(
    flags: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["load", SPEC, "--out", str(out), "--users", "5", "--step", *flags])
    assert code == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_metrics_port_without_node_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["load", SPEC, "--out", str(tmp_path / "run"), "--metrics-port", "9300"])
    assert code == 2
    assert "--metrics-port is for --node" in capsys.readouterr().err
