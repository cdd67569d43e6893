"""One spec under another protocol (orchestrator/spec/equal_terms.py): what stays equal, what the
rule derives, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.spec import ExperimentSpec, SpecError, load_spec, parse_yaml, with_overrides
from orchestrator.spec.equal_terms import (
    ALPHA_S,
    BETA_S,
    EQUAL_FIELDS,
    UnknownProtocol,
    dfl_steps,
    equal_fields,
    terms,
    under_protocol,
)

REPO = Path(__file__).resolve().parents[2]
PROTOCOLS = ("dfl", "blade-fl", "fedavg")
RUNTIMES = ("sim", "local")


@pytest.fixture(scope="module")
def smoke() -> ExperimentSpec:
    return load_spec(REPO / "experiments" / "smoke-dfl.yaml")


def _steps(spec: ExperimentSpec) -> int:
    """Local SGD steps per node of a round-based spec, from its own section."""
    if spec.protocol == "blade-fl":
        blade = spec.blade
        assert blade is not None
        return blade.rounds * blade.iterations * blade.dataset_size // blade.batch_size
    fedavg = spec.fedavg
    assert fedavg is not None
    return fedavg.rounds * fedavg.local_epochs * fedavg.dataset_size // fedavg.batch_size


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_everything_but_the_protocol_stays_equal(smoke: ExperimentSpec, runtime: str) -> None:
    specs = [under_protocol(smoke, p, runtime) for p in PROTOCOLS]
    assert [s.protocol for s in specs] == list(PROTOCOLS)
    assert equal_fields([smoke, *specs]) == dict.fromkeys(EQUAL_FIELDS, True)
    for spec in specs:
        assert spec.partition() == smoke.partition()
        assert [spec.behaviour_of(i) for i in range(4)] == [smoke.behaviour_of(i) for i in range(4)]
        assert spec.sim == smoke.sim and spec.dfl == smoke.dfl


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_derived_sections_validate_and_read_back(smoke: ExperimentSpec, runtime: str) -> None:
    for protocol in PROTOCOLS:
        spec = under_protocol(smoke, protocol, runtime)
        assert parse_yaml(spec.to_yaml()) == spec  # a file could hold it: it went through checks
    blade, fedavg = (under_protocol(smoke, p, runtime) for p in ("blade-fl", "fedavg"))
    assert blade.fedavg is None and fedavg.blade is None  # another protocol's section is dropped
    assert blade.topology.kind == "full"
    assert fedavg.topology.kind == "star" and (0, 1) in fedavg.edges()  # centre node 0


@pytest.mark.parametrize(("runtime", "expected"), [("sim", 18), ("local", 180)])
def test_the_rule_gives_equal_sgd_steps_at_equal_batch(
    smoke: ExperimentSpec, runtime: str, expected: int
) -> None:
    # DFL: 180 s x 64 samples/s / batch 64 in real time; 180 ticks / 10 (8-12) in the sim.
    assert dfl_steps(smoke, runtime) == expected
    blade, fedavg = (under_protocol(smoke, p, runtime) for p in ("blade-fl", "fedavg"))
    assert blade.blade is not None and fedavg.fedavg is not None
    assert _steps(blade) == _steps(fedavg) == expected
    assert blade.blade.batch_size == fedavg.fedavg.batch_size == smoke.dfl.batch_size
    assert (blade.blade.rounds, blade.blade.iterations, blade.blade.dataset_size) == (
        fedavg.fedavg.rounds,
        fedavg.fedavg.local_epochs,
        fedavg.fedavg.dataset_size,
    )
    # eq. 4 fits the run, after the local dataset has arrived at the injection rate
    collecting = 0 if runtime == "sim" else blade.blade.dataset_size / smoke.nodes.injection_rate
    section = blade.blade
    assert section.t_sum == section.rounds * (section.iterations * ALPHA_S + BETA_S)
    assert section.t_sum <= smoke.duration_seconds - collecting
    assert 4 <= section.dataset_size // section.batch_size <= 8  # a few batches, collected early


def test_steps_that_split_into_no_whole_epochs_come_as_close_as_one_epoch_allows(
    smoke: ExperimentSpec,
) -> None:
    spec = with_overrides(smoke, {"duration": 97})  # 97 steps: prime
    blade = under_protocol(spec, "blade-fl", "local")
    assert abs(_steps(blade) - 97) <= 4  # epochs of 8 batches: within half an epoch
    info = terms(spec, "blade-fl", "local")
    assert info.schedule is not None and info.steps == _steps(blade) and info.dfl_steps == 97


def test_dfl_keeps_the_spec_graph_and_round_based_protocols_replace_it(
    smoke: ExperimentSpec,
) -> None:
    ring = with_overrides(smoke, {"topology.kind": "ring"})
    assert under_protocol(ring, "dfl").topology.kind == "ring"
    assert under_protocol(ring, "blade-fl").topology.kind == "full"
    assert under_protocol(ring, "fedavg").topology.kind == "star"


def test_a_written_round_based_section_is_kept_and_copied_to_the_other() -> None:
    blade_spec = load_spec(REPO / "experiments" / "smoke-blade.yaml")
    assert under_protocol(blade_spec, "blade-fl") == blade_spec  # nothing to derive
    fedavg = under_protocol(blade_spec, "fedavg")
    blade, section = blade_spec.blade, fedavg.fedavg
    assert blade is not None and section is not None
    assert (section.rounds, section.local_epochs, section.dataset_size, section.batch_size) == (
        blade.rounds,
        blade.iterations,
        blade.dataset_size,
        blade.batch_size,
    )
    dfl = under_protocol(blade_spec, "dfl")
    assert dfl.blade is None and dfl.protocol == "dfl"
    assert "copied from the spec's `blade:`" in terms(blade_spec, "fedavg").source


def test_an_unknown_protocol_is_refused_with_the_known_ones(smoke: ExperimentSpec) -> None:
    with pytest.raises(UnknownProtocol, match="unknown protocol 'gossip'; known: dfl, blade-fl"):
        under_protocol(smoke, "gossip")
    with pytest.raises(UnknownProtocol, match="fedavg"):
        under_protocol(smoke, "gossip")
    assert under_protocol(smoke, "blade").protocol == "blade-fl"  # an alias is fine


def test_a_run_too_short_for_one_round_names_duration(smoke: ExperimentSpec) -> None:
    short = with_overrides(smoke, {"duration": 9, "nodes.injection_rate": 64})
    with pytest.raises(SpecError) as raised:
        under_protocol(short, "blade-fl", "local")
    assert raised.value.paths == ["duration"]
    assert "raise duration" in str(raised.value)


def test_a_spec_no_protocol_can_take_is_refused_naming_the_field(smoke: ExperimentSpec) -> None:
    observers = with_overrides(
        smoke, {f"nodes.behaviours.{i}": "observer" for i in range(smoke.nodes.count)}
    )
    with pytest.raises(SpecError) as raised:
        under_protocol(observers, "fedavg")
    assert "nodes.behaviours" in raised.value.paths


def test_blade_lazy_clients_stay_lazy_under_another_protocol() -> None:
    lazy = with_overrides(
        load_spec(REPO / "experiments" / "smoke-blade.yaml"), {"blade.lazy_clients": 1}
    )
    assert lazy.behaviour_of(3).name == "lazy"
    for protocol in ("dfl", "fedavg"):
        spec = under_protocol(lazy, protocol)
        assert spec.behaviour_of(3) == lazy.behaviour_of(3)  # variance included
        assert [spec.behaviour_of(i).name for i in range(3)] == ["normal"] * 3
        assert equal_fields([lazy, spec])["behaviours"]
