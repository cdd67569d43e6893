"""The `faults:` section: what each kind means to a runtime, and every rule a schedule must keep.

Each rule has its own test, and each asserts the field path the problem is filed under and that
the message says what to write instead: a schedule is refused before anything starts, with the
fix, like every other field of a spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.spec import (
    FAULT_KINDS,
    CrashFault,
    ExperimentSpec,
    FaultSpec,
    LatencyFault,
    LossFault,
    PartitionFault,
    PauseFault,
    SpecError,
    canonical_spec_json,
    load_spec,
    parse_spec,
    parse_yaml,
    spec_digest,
    spec_to_dict,
    spec_to_yaml,
    with_overrides,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

BASE = """\
name: faulty
protocol: dfl
seed: 3
duration: 300
model: mlp
dataset: fashion-mnist
nodes:
  count: 6
"""

EVERY_KIND = [
    "{at: 60s, kind: crash, nodes: [2], restart_after: 30s}",
    "{at: 90s, kind: partition, groups: [[0, 1, 2], [3, 4]], duration: 45s}",
    "{at: 30s, kind: latency, nodes: [1], delay: 200ms, jitter: 50ms, duration: 60s}",
    "{at: 30s, kind: loss, nodes: [3], probability: 0.2, duration: 60s}",
    "{at: 100s, kind: pause, nodes: [4], duration: 20s}",
    "{at: 200s, kind: crash, nodes: [5]}",
]


def spec_with(*faults: str, base: str = BASE) -> str:
    """The base spec with a `faults:` list, one flow mapping per line (so line = index + 10)."""
    return base + "faults:\n" + "".join(f"  - {fault}\n" for fault in faults)


def refused(*faults: str, base: str = BASE) -> dict[str, str]:
    """The problems of a spec with these faults, path -> message; it must be refused."""
    with pytest.raises(SpecError) as excinfo:
        parse_yaml(spec_with(*faults, base=base), "f.yaml")
    return {p.path: p.message for p in excinfo.value.problems}


def only(problems: dict[str, str], path: str) -> str:
    """The message of the one problem, which must be filed under `path`."""
    assert list(problems) == [path], problems
    return problems[path]


@pytest.fixture(scope="module")
def every_kind() -> ExperimentSpec:
    return parse_yaml(spec_with(*EVERY_KIND))


# --- what the runtimes read -----------------------------------------------------------------------


def test_every_kind_parses_to_its_model_with_start_end_nodes_and_kind(
    every_kind: ExperimentSpec,
) -> None:
    crash, partition, latency, loss, pause, for_good = every_kind.faults
    assert isinstance(crash, CrashFault) and isinstance(for_good, CrashFault)
    assert isinstance(partition, PartitionFault) and isinstance(latency, LatencyFault)
    assert isinstance(loss, LossFault) and isinstance(pause, PauseFault)
    assert all(isinstance(fault, FaultSpec) for fault in every_kind.faults)
    assert [f.kind for f in every_kind.faults] == [
        "crash", "partition", "latency", "loss", "pause", "crash"
    ]  # fmt: skip
    assert [(f.start, f.end) for f in every_kind.faults] == [
        (60.0, 90.0), (90.0, 135.0), (30.0, 90.0), (30.0, 90.0), (100.0, 120.0), (200.0, None)
    ]  # fmt: skip
    assert [f.nodes for f in every_kind.faults] == [(2,), (0, 1, 2, 3, 4), (1,), (3,), (4,), (5,)]
    assert (latency.delay, latency.jitter) == (0.2, 0.05)
    assert loss.probability == 0.2
    assert crash.restart_after == 30.0 and for_good.restart_after is None
    assert set(FAULT_KINDS) == {"crash", "partition", "latency", "loss", "pause"}


def test_latency_jitter_defaults_to_zero() -> None:
    spec = parse_yaml(spec_with("{at: 0, kind: latency, nodes: [0], delay: 1, duration: 5}"))
    (latency,) = spec.faults
    assert isinstance(latency, LatencyFault) and latency.jitter == 0.0


def test_a_spec_without_faults_has_none() -> None:
    spec = parse_yaml(BASE)
    assert spec.faults == () and spec.fault_timeline() == ()


def test_partition_cuts_only_links_between_different_groups(every_kind: ExperimentSpec) -> None:
    partition = every_kind.faults[1]
    assert isinstance(partition, PartitionFault)
    assert partition.cut(0, 3) and partition.cut(4, 2)  # across groups, either way round
    assert not partition.cut(0, 1) and not partition.cut(3, 4)  # within a group
    assert not partition.cut(5, 0) and not partition.cut(3, 5)  # node 5 is in no group
    assert not partition.cut(1, 1)
    assert (partition.group_of(2), partition.group_of(3), partition.group_of(5)) == (0, 1, None)


def test_the_timeline_orders_begins_and_ends_and_lifts_before_it_applies(
    every_kind: ExperimentSpec,
) -> None:
    steps = [(time, phase, fault.kind) for time, phase, fault in every_kind.fault_timeline()]
    assert steps == [
        (30.0, "begin", "latency"),
        (30.0, "begin", "loss"),
        (60.0, "begin", "crash"),
        (90.0, "end", "crash"),  # every end at 90 s comes before the partition begins
        (90.0, "end", "latency"),
        (90.0, "end", "loss"),
        (90.0, "begin", "partition"),
        (100.0, "begin", "pause"),
        (120.0, "end", "pause"),
        (135.0, "end", "partition"),
        (200.0, "begin", "crash"),  # never restarted: no end
    ]
    step = every_kind.fault_timeline()[0]
    assert (step.time, step.phase, step.fault) == (30.0, "begin", every_kind.faults[2])
    assert every_kind.fault_timeline() is every_kind.fault_timeline()  # ordered once


def test_back_to_back_windows_on_one_node_are_lifted_then_applied() -> None:
    spec = parse_yaml(
        spec_with(
            "{at: 60s, kind: latency, nodes: [1], delay: 1, duration: 30s}",
            "{at: 30s, kind: latency, nodes: [1], delay: 2, duration: 30s}",
        )
    )
    steps = [(s.time, s.phase, s.fault.delay) for s in spec.fault_timeline()]  # type: ignore[union-attr]
    assert steps == [(30.0, "begin", 2.0), (60.0, "end", 2.0), (60.0, "begin", 1.0),
                     (90.0, "end", 1.0)]  # fmt: skip


def test_blade_fl_specs_take_faults_too() -> None:
    blade = load_spec(REPO_ROOT / "experiments" / "smoke-blade.yaml")
    spec = with_overrides(
        blade,
        {
            "faults": [
                {"at": "30s", "kind": "crash", "nodes": [1], "restart_after": "20s"},
                {"at": "60s", "kind": "pause", "nodes": [1], "duration": "10s"},
            ]
        },
    )
    assert [f.kind for f in spec.faults] == ["crash", "pause"]
    assert spec.protocol == "blade-fl" and parse_yaml(spec.to_yaml()) == spec


# --- writing out ----------------------------------------------------------------------------------


def test_a_spec_with_faults_round_trips_to_an_equal_spec(every_kind: ExperimentSpec) -> None:
    text = spec_to_yaml(every_kind)
    assert "restart_after: 30.0\n" in text and "kind: partition\n" in text
    assert parse_yaml(text) == every_kind
    assert parse_spec(spec_to_dict(every_kind)) == every_kind
    canonical = canonical_spec_json(every_kind)
    assert parse_yaml(canonical) == every_kind
    assert canonical_spec_json(parse_yaml(text)) == canonical
    assert json.loads(canonical)["faults"][0] == {
        "at": 60.0, "kind": "crash", "nodes": [2], "restart_after": 30.0
    }  # fmt: skip
    assert every_kind.model_copy(update={"seed": 4}).faults == every_kind.faults


def test_the_digest_names_the_fault_schedule(every_kind: ExperimentSpec) -> None:
    plain = parse_yaml(BASE)
    assert spec_digest(every_kind) != spec_digest(plain)
    faults = spec_to_dict(every_kind)["faults"]
    moved = with_overrides(every_kind, {"faults": [*faults[:-1], {**faults[-1], "at": 201}]})
    assert spec_digest(moved) != spec_digest(every_kind)


def test_a_spec_without_faults_writes_no_faults_key() -> None:
    """So that specs (and recorded runs) from before faults keep their canonical JSON."""
    spec = parse_yaml(BASE)
    assert "faults" not in json.loads(canonical_spec_json(spec))
    assert "faults" not in spec_to_yaml(spec)
    assert canonical_spec_json(parse_yaml(BASE + "faults: []\n")) == canonical_spec_json(spec)


# --- the rules, one test each ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "path", "expected"),
    [
        ("{at: 1, kind: crash, nodes: [6]}", "faults.0.nodes", "node 6 does not exist"),
        ("{at: 1, kind: pause, nodes: [-1, 2], duration: 5}", "faults.0.nodes", "node -1 does"),
        ("{at: 1, kind: loss, nodes: [7, 9], probability: 1, duration: 5}", "faults.0.nodes",
         "nodes 7, 9 do not exist"),
        ("{at: 1, kind: partition, groups: [[0], [8]], duration: 5}", "faults.0.groups",
         "node 8 does not exist"),
    ],
)  # fmt: skip
def test_a_node_that_does_not_exist_is_refused(fault: str, path: str, expected: str) -> None:
    message = only(refused(fault), path)
    assert message.startswith(expected)
    assert message.endswith("nodes.count is 6, so write node indices 0..5")


def test_a_negative_at_is_refused() -> None:
    message = only(refused("{at: -5, kind: crash, nodes: [1]}"), "faults.0.at")
    assert message == "must be >= 0: seconds after the run starts (0 for at once)"


@pytest.mark.parametrize("at", ["300s", "5m", "400"])
def test_an_at_at_or_past_the_end_of_the_run_is_refused(at: str) -> None:
    message = only(refused(f"{{at: {at}, kind: crash, nodes: [1]}}"), "faults.0.at")
    assert message == (
        "is not before the end of the run: write an at below 300s, or raise the run's duration"
    )


@pytest.mark.parametrize(
    ("fault", "path", "expected"),
    [
        ("{at: 290s, kind: pause, nodes: [4], duration: 20s}", "faults.0.duration",
         "ends at 310s, after the run's duration (300s): write a duration of 10s or less, "
         "or start it earlier"),
        ("{at: 250s, kind: crash, nodes: [4], restart_after: 1m}", "faults.0.restart_after",
         "restarts at 310s, after the run's duration (300s): write a restart_after of 50s or "
         "less, or leave it out to stay down to the end"),
    ],
)  # fmt: skip
def test_a_fault_that_outlasts_the_run_is_refused(fault: str, path: str, expected: str) -> None:
    assert only(refused(fault), path) == expected
    # ending exactly at the end of the run is fine, and so is staying down without a restart
    parse_yaml(spec_with("{at: 280s, kind: pause, nodes: [4], duration: 20s}"))
    parse_yaml(spec_with("{at: 299s, kind: crash, nodes: [4]}"))


def test_overlapping_faults_of_one_kind_on_one_node_are_refused() -> None:
    message = only(
        refused(
            "{at: 10s, kind: latency, nodes: [1], delay: 1, duration: 60s}",
            "{at: 69s, kind: latency, nodes: [2, 1], delay: 1, duration: 60s}",
        ),
        "faults.1.at",
    )
    assert message == (
        "overlaps faults.0 (latency from 10s to 70s) on node 1: one latency fault per node at "
        "a time (one delay rule per link); start this one at 70s or later"
    )
    earlier = refused(
        "{at: 50s, kind: loss, nodes: [3], probability: 0.5, duration: 60s}",
        "{at: 20s, kind: loss, nodes: [3], probability: 0.5, duration: 60s}",
    )
    assert only(earlier, "faults.1.at").endswith("; end this one by 50s")
    split = refused(
        "{at: 10s, kind: partition, groups: [[0], [1, 2]], duration: 60s}",
        "{at: 20s, kind: partition, groups: [[2], [3]], duration: 10s}",
    )
    assert "on node 2: one partition per node at a time (merge them into one with more groups)" in (
        only(split, "faults.1.at")
    )
    # Back to back, on other nodes, or of different kinds: all fine.
    parse_yaml(
        spec_with(
            "{at: 10s, kind: latency, nodes: [1], delay: 1, duration: 60s}",
            "{at: 70s, kind: latency, nodes: [1], delay: 1, duration: 60s}",
            "{at: 10s, kind: latency, nodes: [2], delay: 1, duration: 60s}",
            "{at: 10s, kind: loss, nodes: [1], probability: 0.1, duration: 60s}",
            "{at: 20s, kind: crash, nodes: [1], restart_after: 5s}",
            "{at: 10s, kind: partition, groups: [[0], [1]], duration: 60s}",
            "{at: 10s, kind: partition, groups: [[3], [4]], duration: 60s}",
        )
    )


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("{at: 100s, kind: crash, nodes: [2]}", "{at: 150s, kind: pause, nodes: [2], duration: 5}",
         "overlaps faults.0 (crash from 100s to the end) on node 2: a node cannot be paused "
         "while it is down, nor crash while paused; give faults.0 a restart_after of 50s or less"),
        ("{at: 100s, kind: crash, nodes: [2], restart_after: 30s}",
         "{at: 120s, kind: crash, nodes: [2, 3]}",
         "overlaps faults.0 (crash from 100s to 130s) on node 2: a node that is down cannot "
         "crash again; start this one at 130s or later"),
        ("{at: 100s, kind: pause, nodes: [2], duration: 30s}",
         "{at: 90s, kind: crash, nodes: [2], restart_after: 20s}",
         "overlaps faults.0 (pause from 100s to 130s) on node 2: a node cannot be paused while "
         "it is down, nor crash while paused; end this one by 100s"),
    ],
)  # fmt: skip
def test_a_crash_that_overlaps_a_crash_or_a_pause_of_its_node_is_refused(
    first: str, second: str, expected: str
) -> None:
    assert only(refused(first, second), "faults.1.at") == expected
    parse_yaml(spec_with(first.replace("[2]", "[4]"), second))  # other nodes: fine


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ("[[0, 1, 2], [2, 3]]", "node 2 is in group 0 and in group 1: put each node in one group"),
        ("[[0, 1], []]", "group 1 is empty: give it a node or remove it"),
        ("[[0, 1, 2]]", "needs at least two groups, e.g. [[0, 1], [2, 3]] (nodes in no group "
         "keep every link)"),
        ("[]", "needs at least two groups"),
    ],
)  # fmt: skip
def test_partition_groups_must_be_two_or_more_of_distinct_nodes(groups: str, expected: str) -> None:
    fault = f"{{at: 10s, kind: partition, groups: {groups}, duration: 5s}}"
    assert only(refused(fault), "faults.0.groups").startswith(expected)


@pytest.mark.parametrize(
    ("fields", "path", "expected"),
    [
        ("delay: 0", "faults.0.delay", "must be > 0: the added delay, e.g. 200ms"),
        ("delay: -0.2", "faults.0.delay", "must be > 0: the added delay, e.g. 200ms"),
        ("delay: 100ms, jitter: -0.01", "faults.0.jitter",
         "must be >= 0 (0, the default, for a fixed delay)"),
        ("delay: 100ms, jitter: 150ms", "faults.0.jitter",
         "must be at most delay (0.1s), so that delay - jitter is never negative: write a "
         "jitter of 0.1s or less, or raise delay"),
    ],
)  # fmt: skip
def test_latency_needs_a_positive_delay_and_a_jitter_within_it(
    fields: str, path: str, expected: str
) -> None:
    fault = f"{{at: 10s, kind: latency, nodes: [1], {fields}, duration: 5s}}"
    assert only(refused(fault), path) == expected
    parse_yaml(spec_with("{at: 10s, kind: latency, nodes: [1], delay: 0.1, jitter: 0.1, "
                         "duration: 5}"))  # fmt: skip


@pytest.mark.parametrize("probability", ["0", "1.5", "-0.2"])
def test_loss_probability_must_be_in_0_exclusive_to_1(probability: str) -> None:
    fault = f"{{at: 10s, kind: loss, nodes: [1], probability: {probability}, duration: 5s}}"
    assert only(refused(fault), "faults.0.probability") == (
        "must be > 0 and <= 1: the chance that each message is lost, e.g. 0.2 (1 drops everything)"
    )
    parse_yaml(spec_with("{at: 10s, kind: loss, nodes: [1], probability: 1, duration: 5s}"))


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("{at: 10s, kind: flood, nodes: [1]}",
         "unknown fault kind 'flood'; known: crash, partition, latency, loss, pause"),
        ("{at: 10s, kind: [crash], nodes: [1]}",
         "unknown fault kind ['crash']; known: crash, partition, latency, loss, pause"),
        ("{at: 10s, nodes: [1]}", "required: one of crash, partition, latency, loss, pause"),
    ],
)  # fmt: skip
def test_an_unknown_or_missing_kind_lists_the_known_kinds(fault: str, expected: str) -> None:
    assert only(refused(fault), "faults.0.kind") == expected


def test_a_fault_that_is_not_a_mapping_shows_how_to_write_one() -> None:
    assert only(refused("crash"), "faults.0") == (
        "must be a mapping such as {at: 60s, kind: crash, nodes: [2]}"
    )
    with pytest.raises(SpecError) as excinfo:
        parse_yaml(BASE + "faults: {at: 1, kind: crash, nodes: [1]}\n")
    assert only({p.path: p.message for p in excinfo.value.problems}, "faults") == "must be a list"


@pytest.mark.parametrize(
    ("fault", "path", "expected"),
    [
        ("{at: 10s, kind: latency, nodes: [1], delay: 1, jiter: 1, duration: 5}",
         "faults.0.jiter", "unknown key for a latency fault (did you mean 'jitter'? known: "
         "at, delay, duration, jitter, kind, nodes)"),
        ("{at: 10s, kind: crash, nodes: [1], duration: 5}", "faults.0.duration",
         "unknown key for a crash fault (duration is for partition, latency, loss, pause "
         "faults; known: at, kind, nodes, restart_after)"),
        ("{at: 10s, kind: partition, groups: [[0], [1]], nodes: [2], duration: 5}",
         "faults.0.nodes", "unknown key for a partition fault (nodes is for crash, latency, "
         "loss, pause faults; known: at, duration, groups, kind)"),
    ],
)  # fmt: skip
def test_unknown_keys_are_refused_with_the_keys_of_the_faults_own_kind(
    fault: str, path: str, expected: str
) -> None:
    assert only(refused(fault), path) == expected


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [("[]", "must list at least one node, e.g. [0]"),
     ("[1, 2, 1]", "node 1 listed more than once: list each node once")],
)  # fmt: skip
def test_a_fault_lists_its_nodes_once_each(nodes: str, expected: str) -> None:
    fault = f"{{at: 10s, kind: pause, nodes: {nodes}, duration: 5s}}"
    assert only(refused(fault), "faults.0.nodes") == expected


@pytest.mark.parametrize("node", ['"1"', "true", "1.0"])
def test_node_indices_are_strict_integers(node: str) -> None:
    fault = f"{{at: 10s, kind: pause, nodes: [{node}], duration: 5s}}"
    assert only(refused(fault), "faults.0.nodes.0") == "must be an integer"


@pytest.mark.parametrize(
    ("fault", "path", "expected"),
    [
        ("{at: 10s, kind: pause, nodes: [1], duration: 0}", "faults.0.duration",
         "must be > 0: how long the fault lasts, e.g. 30s"),
        ("{at: 10s, kind: crash, nodes: [1], restart_after: 0}", "faults.0.restart_after",
         "must be > 0 (leave restart_after out to stay down to the end)"),
        ("{at: soon, kind: crash, nodes: [1]}", "faults.0.at",
         "'soon' is not a duration (seconds, or like 180s, 3m, 1h30m, 500ms)"),
        ("{at: 10s, kind: pause, nodes: [1]}", "faults.0.duration", "required"),
    ],
)  # fmt: skip
def test_durations_are_positive_seconds(fault: str, path: str, expected: str) -> None:
    assert only(refused(fault), path) == expected


def test_every_problem_is_reported_with_its_line() -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_yaml(
            spec_with(
                "{at: 10s, kind: pause, nodes: [9], duration: 5s}",
                "{at: 10s, kind: flood}",
                "{at: -1, kind: loss, nodes: [1], probability: 2, duration: 5s}",
            ).replace("seed: 3", "seed: -3"),
            "f.yaml",
        )
    found = {p.path: p.line for p in excinfo.value.problems}
    # A schedule check (node 9) needs every fault to parse first; the rest come at once.
    assert found == {
        "seed": 3,
        "faults.1.kind": 11,
        "faults.2.at": 12,
        "faults.2.probability": 12,
    }
    assert "f.yaml:12: faults.2.probability: must be > 0 and <= 1" in str(excinfo.value)
    with pytest.raises(SpecError) as excinfo:
        parse_yaml(
            spec_with("{at: 10s, kind: pause, nodes: [9], duration: 5s}").replace(
                "seed: 3", "seed: -3"
            )
        )
    assert {p.path: p.line for p in excinfo.value.problems} == {"seed": 3, "faults.0.nodes": 10}


def test_a_wrong_node_count_or_duration_skips_only_their_own_checks() -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_yaml(
            spec_with("{at: 10s, kind: pause, nodes: [9], duration: 500s}")
            .replace("count: 6", "count: 0")
            .replace("duration: 300", "duration: never")
        )
    assert sorted(p.path for p in excinfo.value.problems) == ["duration", "nodes.count"]


def test_faults_are_checked_again_when_the_run_changes(every_kind: ExperimentSpec) -> None:
    with pytest.raises(SpecError) as excinfo:
        with_overrides(every_kind, {"nodes.count": 5, "duration": 120})
    problems = {p.path: p.message for p in excinfo.value.problems}
    assert set(problems) == {"faults.1.duration", "faults.5.nodes", "faults.5.at"}
    assert problems["faults.5.nodes"].startswith("node 5 does not exist")
