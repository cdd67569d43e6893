"""The experiment spec: the smoke file, every kind of mistake, durations, overrides, round trips."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pydantic
import pytest

from node.learning import models
from node.protocol.dfl import DflConfig
from orchestrator import partition, topology
from orchestrator.spec import (
    MODELS,
    DflSection,
    ExperimentSpec,
    SpecError,
    canonical_spec_json,
    load_spec,
    parse_override,
    parse_seconds,
    parse_spec,
    parse_yaml,
    spec_digest,
    spec_to_dict,
    spec_to_yaml,
    with_overrides,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = REPO_ROOT / "experiments" / "smoke-dfl.yaml"

MINIMAL = """\
name: tiny
protocol: dfl
seed: 3
duration: 30
model: mlp
dataset: fashion-mnist
nodes:
  count: 5
"""


@pytest.fixture(scope="module")
def smoke() -> ExperimentSpec:
    return load_spec(SMOKE)


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> dict[str, str]:
    return {p.path: p.message for p in excinfo.value.problems}


# --- the smoke experiment -------------------------------------------------------------------------


def test_smoke_spec_has_the_documented_values(smoke: ExperimentSpec) -> None:
    assert (smoke.name, smoke.protocol, smoke.seed) == ("smoke-dfl", "dfl", 1)
    assert smoke.duration == 180.0
    assert (smoke.model, smoke.dataset) == ("lenet", "mnist")
    assert smoke.nodes.count == 4
    assert smoke.nodes.distribution == "iid"
    assert smoke.partition().kind == "iid"
    assert [smoke.injection_rate_of(k) for k in range(4)] == [64.0] * 4
    assert [smoke.behaviour(k).name for k in range(4)] == ["normal"] * 4
    assert smoke.edges() == ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
    assert smoke.neighbours()[2] == (0, 1, 3)
    assert smoke.dfl.aggregator.name == "reputation-0.05"
    assert smoke.dfl.test_batch == 100
    assert (smoke.evaluation.test_samples, smoke.evaluation.interval) == (1000, 10.0)


def test_smoke_spec_gives_the_engine_config(smoke: ExperimentSpec) -> None:
    config = smoke.dfl_config()
    assert isinstance(config, DflConfig)
    assert config == DflConfig(
        batch_size=64,
        fedavg_buffer=8,
        transactions_per_block=12,
        ttl=1,
        transaction_lifetime=120.0,
        receipt_wait=10.0,
        confirmation_quorum=0.6,
        confirmation_timeout=10.0,
    )


def test_smoke_spec_says_how_to_run_it() -> None:
    assert "dfl run experiments/smoke-dfl.yaml --runtime local --out runs/smoke" in (
        SMOKE.read_text()
    )


def test_minimal_spec_takes_the_papers_defaults() -> None:
    spec = parse_yaml(MINIMAL)
    assert spec.topology.kind == "full"
    assert spec.nodes.distribution == "iid"
    assert spec.dfl_config() == DflConfig()
    assert spec.dfl.aggregator.name == "reputation-0.05"


def test_dfl_section_defaults_are_the_engines() -> None:
    section, config = DflSection(), DflConfig()
    for field in dataclasses.fields(DflConfig):
        if field.name in DflSection.model_fields:
            assert getattr(section, field.name) == getattr(config, field.name), field.name


def test_model_names_match_the_model_registry() -> None:
    assert sorted(MODELS) == sorted(models.MODELS)


def test_spec_is_immutable(smoke: ExperimentSpec) -> None:
    with pytest.raises(pydantic.ValidationError):
        smoke.seed = 2  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        smoke.dfl.ttl = 3  # type: ignore[misc]


# --- mistakes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "problem_path", "needle"),
    [
        ("dfl.ttl", 0, "dfl.ttl", "must be >= 1"),
        ("dfl.ttl", 9, "dfl.ttl", "must be <= 8"),
        ("dfl.batch_size", "64", "dfl.batch_size", "must be an integer"),
        ("dfl.fedavg_buffer", 2.5, "dfl.fedavg_buffer", "must be an integer"),
        ("dfl.confirmation_quorum", 1.5, "dfl.confirmation_quorum", "must be <= 1"),
        ("dfl.receipt_wait", "0s", "dfl.receipt_wait", "must be > 0"),
        ("dfl.transaction_lifetime", "5s", "dfl.transaction_lifetime", "longer than receipt_wait"),
        ("dfl.aggregator", "nope", "dfl.aggregator", "unknown name"),
        ("dfl.aggregator", "no.such.module:Rule", "dfl.aggregator", "cannot import"),
        ("dfl.aggregator", {"name": "krum", "options": {"bogus": 1}}, "dfl.aggregator", "bogus"),
        ("dfl.aggregator", {"name": "krum", "opts": {}}, "dfl.aggregator.opts", "unknown key"),
        ("dfl.bogus", 1, "dfl.bogus", "unknown key"),
        ("nodes.count", 0, "nodes.count", "must be >= 1"),
        ("nodes.count", True, "nodes.count", "must be an integer"),
        ("nodes.count", None, "nodes.count", "required"),
        ("nodes.injection_rate", 0, "nodes.injection_rate", "must be > 0"),
        ("nodes.injection_rate", float("inf"), "nodes.injection_rate", "must be a finite number"),
        ("nodes.injection_rates.1", -1, "nodes.injection_rates.1", "must be >= 0"),
        ("nodes.injection_rates.4", 8, "nodes.injection_rates.4", "node 4 does not exist"),
        ("nodes.distribution", "zipf", "nodes.distribution", "expected iid, dirichlet:ALPHA"),
        ("nodes.distribution", "dirichlet:-1", "nodes.distribution", "must be positive"),
        ("nodes.distribution", "labels:11", "nodes.distribution", "must be 1..10"),
        ("nodes.behaviours.3", "evil", "nodes.behaviours.3", "unknown behaviour 'evil'"),
        ("nodes.behaviours.5", "observer", "nodes.behaviours.5", "node 5 does not exist"),
        (
            "nodes.behaviours.1",
            {"name": "random-model", "options": {"bogus": 1}},
            "nodes.behaviours.1",
            "does not take options",
        ),
        ("nodes.behaviours.1", {"name": "lazy", "x": 1}, "nodes.behaviours.1.x", "unknown key"),
        ("nodes.behaviours.1", 7, "nodes.behaviours.1", "behaviour name or a mapping"),
        ("nodes.behaviours", ["observer"], "nodes.behaviours", "must be a mapping"),
        ("topology.kind", "mesh", "topology.kind", "must be one of"),
        ("topology.degree", 3, "topology.degree", "only for kind random"),
        ("topology.edges", [[0, 1]], "topology.edges", "only for kind edges"),
        ("protocol", "blade-fl", "blade", "required for protocol blade-fl"),
        ("blade", {"rounds": 3, "local_iterations": 1}, "blade", "only for protocol blade-fl"),
        ("protocol", "raft", "protocol", "unknown protocol 'raft'; known: dfl, blade-fl"),
        ("model", "resnet", "model", "known: lenet, mlp"),
        ("dataset", "cifar10", "dataset", "known: mnist, fashion-mnist"),
        ("duration", "soon", "duration", "not a duration"),
        ("duration", 0, "duration", "must be > 0"),
        ("duration", True, "duration", "must be a duration"),
        ("seed", -1, "seed", "must be >= 0"),
        ("identity", "fresh", "identity", "must be one of 'derived' or 'random'"),
        ("name", "has space", "name", "not a usable name"),
        ("evaluation.test_samples", 20_000, "evaluation.test_samples", "must be <= 10000"),
        ("evaluation.interval", "-5s", "evaluation.interval", "not a duration"),
    ],
)
def test_bad_values_name_their_field(
    smoke: ExperimentSpec, path: str, value: Any, problem_path: str, needle: str
) -> None:
    with pytest.raises(SpecError) as excinfo:
        with_overrides(smoke, {path: value})
    problems = problems_of(excinfo)
    assert list(problems) == [problem_path], str(excinfo.value)
    assert needle in problems[problem_path]
    assert f"{problem_path}: " in str(excinfo.value)


def test_topology_that_cannot_be_built_names_the_field(smoke: ExperimentSpec) -> None:
    with pytest.raises(SpecError) as excinfo:
        with_overrides(smoke, {"topology.kind": "edges", "topology.edges": [[0, 1], [2, 3]]})
    assert "not connected" in problems_of(excinfo)["topology.edges"]
    with pytest.raises(SpecError) as excinfo:
        with_overrides(smoke, {"topology.kind": "random", "topology.degree": 4})
    assert "degree in 1..3" in problems_of(excinfo)["topology.degree"]
    with pytest.raises(SpecError) as excinfo:
        with_overrides(smoke, {"topology.kind": "random"})
    assert "required" in problems_of(excinfo)["topology.degree"]


def test_every_problem_in_a_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        MINIMAL.replace("seed: 3", "seed: -3")
        + "colour: blue\n"
        + "dfl:\n  ttl: 0\n  fedavg_bufer: 4\n"
        + "topology:\n  kind: ring\n  degree: 2\n"
    )
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    found = {p.path: p for p in excinfo.value.problems}
    assert set(found) == {"seed", "colour", "dfl.ttl", "dfl.fedavg_bufer", "topology.degree"}
    assert found["seed"].line == 3
    assert found["colour"].line == 9
    assert found["dfl.ttl"].line == 11
    assert "did you mean 'fedavg_buffer'" in found["dfl.fedavg_bufer"].message
    assert found["topology.degree"].line == 15
    message = str(excinfo.value)
    assert "(5 problems)" in message
    assert f"{path}:11: dfl.ttl: must be >= 1" in message
    assert [p.line for p in excinfo.value.problems] == sorted(p.line or 0 for p in found.values())


def test_unknown_top_level_key_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_yaml(MINIMAL + "durration: 5\n", "x.yaml")
    message = problems_of(excinfo)["durration"]
    assert "did you mean 'duration'" in message
    assert "known: blade, dataset, dfl, duration" in message


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (MINIMAL + "dfl: [1, 2\n", 10, "not valid YAML"),
        (MINIMAL + "  count: 6\n", 9, "given twice (first on line 8)"),
        ("name: x\n  protocol: dfl\n", 2, "not valid YAML"),
    ],
)
def test_yaml_errors_become_spec_errors_with_a_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_yaml(text, "y.yaml")
    (problem,) = excinfo.value.problems
    assert problem.line == line
    assert needle in problem.message
    assert f"y.yaml:{line}:" in str(excinfo.value)


@pytest.mark.parametrize(("text", "needle"), [("", "empty"), ("- 1\n- 2\n", "must be a mapping")])
def test_a_file_that_is_not_a_mapping_is_an_error(text: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        parse_yaml(text)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read it"):
        load_spec(tmp_path / "nope.yaml")


def test_parse_spec_rejects_non_mappings() -> None:
    with pytest.raises(SpecError, match="must be a mapping of fields"):
        parse_spec(["name", "x"])


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (2.5, 2.5), ("180", 180.0), ("180s", 180.0), ("3m", 180.0), ("2.5m", 150.0),
     ("1h30m", 5400.0), ("500ms", 0.5), (" 1m 30s ", 90.0)],
)  # fmt: skip
def test_durations(value: Any, seconds: float) -> None:
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value", ["3 weeks", "s", "1x", "m3", "", True, None, [3], "inf"])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_seconds(value)


# --- behaviours -----------------------------------------------------------------------------------


def test_behaviours_per_node(smoke: ExperimentSpec) -> None:
    spec = with_overrides(
        smoke,
        {
            "nodes.behaviours.1": "plagiarist",
            "nodes.behaviours.2": {"name": "random-model", "options": {"high": 0.01}},
            "nodes.behaviours.3": "observer",
            "nodes.injection_rates.3": 8,
        },
    )
    assert spec.behaviour(0).name == "normal"
    assert spec.nodes.behaviours[1].name == "lazy"  # aliases are stored by canonical name
    assert spec.behaviour(2).high == 0.01  # type: ignore[attr-defined]
    assert spec.injection_rate_of(3) == 8.0
    assert spec.injection_rate_of(2) == 64.0
    assert spec.dfl_config(3).trains is False  # an observer never trains nor sends
    assert spec.dfl_config(1).trains is True  # a lazy node sends (copies)
    assert spec.dfl_config(0).trains is True


# --- overrides and round trips --------------------------------------------------------------------


def test_overrides_return_a_new_validated_spec(smoke: ExperimentSpec) -> None:
    short = with_overrides(smoke, {"nodes.distribution": "labels:2", "duration": 30})
    assert short.duration == 30.0
    assert short.partition().per_node == 2
    assert smoke.duration == 180.0 and smoke.nodes.distribution == "iid"
    assert short.dfl == smoke.dfl


def test_override_with_none_restores_the_default(smoke: ExperimentSpec) -> None:
    changed = with_overrides(smoke, {"dfl.ttl": 3})
    assert changed.dfl.ttl == 3
    assert with_overrides(changed, {"dfl.ttl": None}).dfl.ttl == 1


def test_changing_the_topology_kind_drops_fields_of_the_old_kind(smoke: ExperimentSpec) -> None:
    random = with_overrides(smoke, {"topology.kind": "random", "topology.degree": 2})
    assert random.topology.degree == 2
    ring = with_overrides(random, {"topology.kind": "ring"})
    assert ring.topology.degree is None
    assert ring.edges() == ((0, 1), (0, 3), (1, 2), (2, 3))
    with pytest.raises(SpecError, match="only for kind random"):
        with_overrides(random, {"topology.kind": "ring", "topology.degree": 2})


def test_override_paths_must_lead_to_sections(smoke: ExperimentSpec) -> None:
    with pytest.raises(SpecError) as excinfo:
        with_overrides(smoke, {"duration.unit": "s", "dfl..ttl": 1})
    problems = problems_of(excinfo)
    assert "not a section" in problems["duration.unit"]
    assert "not a dotted field path" in problems["dfl..ttl"]


def test_random_topology_follows_the_spec_seed(smoke: ExperimentSpec) -> None:
    spec = with_overrides(
        smoke, {"nodes.count": 20, "topology.kind": "random", "topology.degree": 4}
    )
    reseeded = with_overrides(spec, {"seed": 2})
    assert reseeded.edges() != spec.edges()
    assert with_overrides(reseeded, {"seed": spec.seed}) == spec  # the same draw again
    assert all(len(peers) == 4 for peers in spec.neighbours())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"nodes.behaviours.2": {"name": "random-model", "options": {"high": 0.01}}},
        {"topology.kind": "edges", "topology.edges": [[0, 1], [1, 2], [2, 3]]},
        {"dfl.aggregator": {"name": "trimmed-mean", "options": {"trim_fraction": 0.25}}},
        {"topology.kind": "random", "topology.degree": 2, "nodes.injection_rates.0": 1.5},
    ],
)
def test_yaml_round_trip(smoke: ExperimentSpec, overrides: dict[str, Any]) -> None:
    spec = with_overrides(smoke, overrides)
    text = spec_to_yaml(spec)
    assert parse_yaml(text) == spec
    assert parse_spec(spec_to_dict(spec)) == spec


def test_round_trip_writes_short_names_when_there_are_no_options(smoke: ExperimentSpec) -> None:
    text = spec_to_yaml(with_overrides(smoke, {"nodes.behaviours.3": "observer"}))
    assert "aggregator: reputation-0.05\n" in text
    assert "3: observer\n" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("duration=30s", ("duration", "30s")),
        ("nodes.count=8", ("nodes.count", 8)),
        ("topology.edges=[[0, 1], [1, 2]]", ("topology.edges", [[0, 1], [1, 2]])),
        ("dfl.ttl=", ("dfl.ttl", None)),
        ("nodes.distribution=labels:2", ("nodes.distribution", "labels:2")),
    ],
)
def test_parse_override(text: str, expected: tuple[str, Any]) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["duration", "=3", "x=[1"])
def test_bad_override_arguments(text: str) -> None:
    with pytest.raises(SpecError):
        parse_override(text)


def test_node_config_helpers(smoke: ExperimentSpec) -> None:
    spec = with_overrides(smoke, {"nodes.behaviours.3": "observer"})
    assert spec.behaviour_of(3).name == "observer"
    assert spec.behaviour_of(0).name == "normal"
    fields = spec.dfl_config_fields(3)
    assert DflConfig(**fields) == spec.dfl_config(3)
    assert fields["trains"] is False and fields["fedavg_buffer"] == 8
    assert spec.duration_seconds == 180.0 and spec.evaluation.interval_seconds == 10.0
    assert parse_yaml(spec.to_yaml()) == spec
    assert str(SpecError("--set x: expected FIELD=VALUE")) == "--set x: expected FIELD=VALUE"


# --- parsed once ----------------------------------------------------------------------------------

RANDOM_GRAPH = {"nodes.count": 12, "topology.kind": "random", "topology.degree": 3}


def test_validation_draws_the_graph_once_and_the_spec_keeps_it(smoke: ExperimentSpec) -> None:
    with mock.patch.object(topology, "build_edges", wraps=topology.build_edges) as draw:
        spec = with_overrides(smoke, RANDOM_GRAPH)
        edges = spec.edges()
        assert spec.edges() is edges and spec.neighbours() is spec.neighbours()
        assert [len(peers) for peers in spec.neighbours()] == [3] * 12
    assert draw.call_count == 1  # the check and every runtime's read are one draw
    assert isinstance(edges, tuple)  # nobody can change the graph a runtime reads


def test_validation_parses_the_distribution_once(smoke: ExperimentSpec) -> None:
    with mock.patch(
        "orchestrator.spec.sections.parse_partition", wraps=partition.parse_partition
    ) as parse:
        spec = with_overrides(smoke, {"nodes.distribution": " dirichlet:0.5 "})
        assert spec.partition() is spec.partition()
        assert spec.partition() == partition.PartitionSpec("dirichlet", alpha=0.5)
    assert parse.call_count == 1
    assert spec.nodes.distribution == "dirichlet:0.5"


def test_behaviours_are_built_once_per_node(blade_smoke: ExperimentSpec) -> None:
    spec = with_overrides(blade_smoke, {"blade.lazy_clients": 2, "nodes.behaviours.0": "observer"})
    assert spec.behaviour(3) is spec.behaviour(3)
    assert spec.behaviour(3).name == "lazy" and spec.behaviour(0).name == "observer"
    assert spec.behaviour_of(2) == spec.behaviour_of(3)
    with pytest.raises(IndexError, match=r"node 4 does not exist \(nodes 0..3\)"):
        spec.behaviour_of(4)
    with pytest.raises(IndexError, match="node -1 does not exist"):
        spec.behaviour(-1)


def test_model_copy_validates_and_derives_again(smoke: ExperimentSpec) -> None:
    spec = with_overrides(smoke, RANDOM_GRAPH)
    copy = spec.model_copy(update={"seed": 2})
    assert copy == with_overrides(spec, {"seed": 2})  # not the old graph under a new seed
    assert spec.model_copy() == spec
    smaller = spec.model_copy(update={"nodes": spec.nodes.model_copy(update={"count": 4})})
    assert smaller.nodes.count == 4 and len(smaller.neighbours()) == 4
    with pytest.raises(pydantic.ValidationError, match="ttl"):
        spec.model_copy(update={"dfl": {"ttl": 0}})


# --- canonical form and identity ------------------------------------------------------------------


def test_node_identities_are_derived_unless_the_spec_asks_for_random_keys(
    smoke: ExperimentSpec,
) -> None:
    assert smoke.identity == "derived"
    deployed = with_overrides(smoke, {"identity": "random"})
    assert deployed.identity == "random"
    assert "identity: random\n" in spec_to_yaml(deployed)
    assert spec_digest(deployed) != spec_digest(smoke)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(RANDOM_GRAPH),
        {"nodes.behaviours.2": {"name": "random-model", "options": {"high": 0.01}}},
        {"nodes.injection_rates.3": 2, "nodes.count": 12, "nodes.injection_rates.10": 1e-05},
        {"dfl.aggregator": {"name": "trimmed-mean", "options": {"trim_fraction": 0.25}}},
        {"dfl.confirmation_quorum": 1e-05, "resources.cpus": 0.5, "identity": "random"},
    ],
)
def test_canonical_json_is_a_fixed_point_of_the_yaml_round_trip(
    smoke: ExperimentSpec, overrides: dict[str, Any]
) -> None:
    spec = with_overrides(smoke, overrides)
    text = canonical_spec_json(spec)
    again = parse_yaml(spec_to_yaml(spec))
    assert canonical_spec_json(again) == text
    assert spec_digest(again) == spec_digest(spec) == hashlib.sha256(text.encode()).digest()
    assert parse_yaml(text) == spec  # the canonical JSON is YAML that reads back to the spec
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_canonical_json_does_not_depend_on_how_the_file_was_written() -> None:
    terse = parse_yaml(MINIMAL)
    verbose = parse_yaml(
        "nodes: {distribution: iid, count: 5, injection_rate: 64}\n"
        "dataset: fashion-mnist\nmodel: mlp\nduration: 30s\nseed: 3\nprotocol: dfl\n"
        "name: tiny\ndfl: {ttl: 1, receipt_wait: 10000ms}\ntopology: {kind: full}\n"
    )
    assert canonical_spec_json(verbose) == canonical_spec_json(terse)
    assert spec_digest(verbose) == spec_digest(terse)
    keys = list(json.loads(canonical_spec_json(terse)))
    assert keys == sorted(keys) and "evaluation" in keys  # defaults are written out


def test_the_digest_names_the_experiment(smoke: ExperimentSpec) -> None:
    digest = spec_digest(smoke)
    assert len(digest) == 32
    assert spec_digest(with_overrides(smoke, {"dfl.ttl": 2})) != digest
    assert spec_digest(with_overrides(smoke, {"seed": 2})) != digest
    assert spec_digest(load_spec(SMOKE)) == digest


def test_exponent_floats_without_a_dot_are_numbers_in_yaml() -> None:
    spec = parse_yaml(MINIMAL + "dfl:\n  confirmation_quorum: 1e-5\n")
    assert spec.dfl.confirmation_quorum == 1e-5
    assert parse_override("nodes.injection_rate=2e1") == ("nodes.injection_rate", 20.0)


# --- BLADE-FL ------------------------------------------------------------------------------------


@pytest.fixture
def blade_smoke() -> ExperimentSpec:
    return load_spec(REPO_ROOT / "experiments" / "smoke-blade.yaml")


def test_blade_smoke_derives_tau_from_the_time_budget_and_marks_the_last_clients_lazy(
    blade_smoke: ExperimentSpec,
) -> None:
    blade = blade_smoke.blade
    assert blade is not None and blade_smoke.protocol == "blade-fl"
    expected = int((blade.t_sum / blade.rounds - blade.beta) / blade.alpha)
    assert blade.iterations == expected >= 1
    lazy = with_overrides(blade_smoke, {"blade.lazy_clients": 1, "blade.noise_variance": 0.3})
    assert lazy.behaviour_of(3).name == "lazy"
    assert lazy.behaviour_of(3).options == {"variance": 0.3}
    assert lazy.behaviour_of(2).name == "normal"


@pytest.mark.parametrize(
    ("overrides", "problem_path", "needle"),
    [
        ({"blade.local_iterations": 3}, "blade.local_iterations", "not both"),
        ({"blade.t_sum": 10}, "blade.t_sum", "leaves no time to train"),
        ({"blade.alpha": None}, "blade.alpha", "required unless local_iterations"),
        ({"blade.lazy_clients": 4}, "blade.lazy_clients", "must leave an honest client"),
        ({"topology.kind": "ring"}, "topology.kind", "use full"),
        ({"blade.difficulty": 0.5}, "blade.difficulty", "must be >= 1"),
    ],
)
def test_bad_blade_values_name_their_field(
    blade_smoke: ExperimentSpec, overrides: dict[str, Any], problem_path: str, needle: str
) -> None:
    with pytest.raises(SpecError) as excinfo:
        with_overrides(blade_smoke, overrides)
    problems = problems_of(excinfo)
    assert list(problems) == [problem_path], str(excinfo.value)
    assert needle in problems[problem_path]


def test_blade_section_gives_the_engine_config(blade_smoke: ExperimentSpec) -> None:
    blade = blade_smoke.blade
    assert blade is not None
    config = blade.config(clients=blade_smoke.nodes.count)
    assert (config.clients, config.rounds, config.local_iterations) == (
        blade_smoke.nodes.count,
        blade.rounds,
        blade.iterations,
    )
    assert (config.dataset_size, config.collect_timeout) == (
        blade.dataset_size,
        blade.collect_timeout,
    )
    assert not config.lazy and blade.config(clients=4, lazy=True, lazy_wait=0.5).lazy_wait == 0.5


def test_blade_spec_round_trips_through_yaml(blade_smoke: ExperimentSpec) -> None:
    from orchestrator.spec import parse_yaml

    assert parse_yaml(blade_smoke.to_yaml()) == blade_smoke


def test_resources_take_dockers_notation_and_name_the_field() -> None:
    spec = with_overrides(
        load_spec(SMOKE),
        {"resources.cpus": 0.5, "resources.memory": "768M"},
    )
    assert (spec.resources.cpus, spec.resources.memory) == (0.5, "768m")
    for field, value in (("resources.memory", "1.5g"), ("resources.cpus", 0)):
        with pytest.raises(SpecError, match=field):
            with_overrides(spec, {field: value})
