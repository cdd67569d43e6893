"""`protocol: fedavg` in the spec: its section, its topology, its digest, and the node settings
every runtime derives from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.records import parameter_count
from node.protocol.events import PeersChanged, TransactionReceived
from node.protocol.fedavg import FedAvgEngine
from node.protocol.framing import frame_experiment_model
from node.service.config import load_node_config
from orchestrator.genesis import spec_genesis
from orchestrator.runtimes.settings import experiment_settings
from orchestrator.spec import (
    SpecError,
    load_spec,
    parse_spec,
    parse_yaml,
    spec_digest,
    with_overrides,
)

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke-fedavg.yaml"


def fedavg_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "fedavg-small",
        "protocol": "fedavg",
        "seed": 4,
        "duration": "2m",
        "model": "mlp",
        "dataset": "mnist",
        "nodes": {"count": 4},
        "topology": {"kind": "star"},
        "fedavg": {"rounds": 3, "local_epochs": 2, "round_timeout": "15s"},
    }
    spec.update(changes)
    return spec


def problems(spec: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as error:
        parse_spec(spec)
    return {p.path: p.message for p in error.value.problems}


def test_the_section_reads_with_its_defaults_and_builds_the_engines_config() -> None:
    spec = parse_spec(fedavg_spec())
    assert spec.fedavg is not None
    assert (spec.fedavg.rounds, spec.fedavg.local_epochs, spec.fedavg.round_timeout) == (3, 2, 15)
    assert (spec.fedavg.dataset_size, spec.fedavg.batch_size) == (512, 32)
    config = spec.fedavg_config(0)
    assert (config.clients, config.rounds, config.local_iterations) == (4, 3, 2)
    assert config.round_timeout == 15.0 and config.trains


def test_an_observer_is_not_waited_for() -> None:
    spec = parse_spec(fedavg_spec(nodes={"count": 4, "behaviours": {2: "observer"}}))
    assert spec.fedavg_config(0).clients == 3
    assert not spec.fedavg_config(2).trains and spec.fedavg_config(1).trains


def test_a_fedavg_run_needs_one_node_that_sends() -> None:
    everyone = {i: "observer" for i in range(4)}
    found = problems(fedavg_spec(nodes={"count": 4, "behaviours": everyone}))
    assert "sends" in found["nodes.behaviours"]


def test_the_section_is_required_for_fedavg() -> None:
    spec = fedavg_spec()
    del spec["fedavg"]
    assert problems(spec) == {"fedavg": "required for protocol fedavg (at least rounds)"}


@pytest.mark.parametrize("protocol", ["dfl", "blade-fl"])
def test_the_section_is_refused_for_another_protocol(protocol: str) -> None:
    extra = {"blade": {"rounds": 2, "local_iterations": 1}} if protocol == "blade-fl" else {}
    topology = {"kind": "full"}
    found = problems(fedavg_spec(protocol=protocol, topology=topology, **extra))
    assert found == {"fedavg": "only for protocol fedavg (remove it)"}


@pytest.mark.parametrize("kind", [{"kind": "full"}, {"kind": "ring"}, {"kind": "line"}])
def test_fedavg_needs_a_star_and_says_how_to_write_it(kind: dict[str, str]) -> None:
    found = problems(fedavg_spec(topology=kind))
    assert list(found) == ["topology.kind"]
    assert "topology: {kind: star}" in found["topology.kind"]
    assert "node 0" in found["topology.kind"]


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("rounds", 0, "fedavg.rounds"),
        ("local_epochs", 0, "fedavg.local_epochs"),
        ("dataset_size", 0, "fedavg.dataset_size"),
        ("batch_size", 0, "fedavg.batch_size"),
        ("round_timeout", "0s", "fedavg.round_timeout"),
        ("lazy_clients", 1, "fedavg.lazy_clients"),  # BLADE-FL's, not FedAvg's
    ],
)
def test_a_bad_field_is_named(field: str, value: Any, path: str) -> None:
    spec = fedavg_spec()
    spec["fedavg"] = {**spec["fedavg"], field: value}
    assert path in problems(spec)


def test_specs_without_the_section_keep_their_digest() -> None:
    """The digests of the shipped specs as they were before FedAvg existed: their genesis (and
    every chain recorded with it) must still match."""
    before = {
        "smoke-dfl.yaml": "77cafc941ac75c2bba65d5d7ab08c4166a84f056f47fabaf3a18999e30d73616",
        "smoke-blade.yaml": "84de15cb3573c62a52b2965f68f4b75f139d93a51e6087bbba3404b78224cdf9",
        "paper-4node.yaml": "106b478647c5df7a0dc8e83b9b732a5a5a1f2cb80b51cf27195853dcb03610f8",
    }
    for name, digest in before.items():
        assert spec_digest(load_spec(REPO / "experiments" / name)).hex() == digest, name


def test_the_smoke_spec_round_trips_and_its_digest_follows_its_fields() -> None:
    smoke = load_spec(SMOKE)
    assert smoke.protocol == "fedavg" and smoke.topology.kind == "star"
    again = parse_yaml(smoke.to_yaml(), "<yaml>")
    assert spec_digest(again) == spec_digest(smoke)
    assert spec_digest(with_overrides(smoke, {"fedavg.rounds": 11})) != spec_digest(smoke)
    assert parse_spec(fedavg_spec(protocol="fed-avg")).protocol == "fedavg"


def test_nodes_of_two_fedavg_experiments_refuse_each_others_models() -> None:
    one = parse_spec(fedavg_spec())
    other = with_overrides(one, {"fedavg.local_epochs": 3})
    mine, theirs = spec_genesis(one), spec_genesis(other)
    assert mine.digest != theirs.digest
    size = 4 * parameter_count(mine)
    engine = FedAvgEngine(
        b"\xaa" * 20, mine.digest, one.fedavg_config(0), model_bytes=size, aggregator=True
    )
    engine.handle(PeersChanged(("c1",)), 0.0)
    payload = frame_experiment_model(theirs.digest, b"\x01" * 20, bytes(size), round=1)
    with pytest.raises(RecordRejected) as refused:
        engine.handle(TransactionReceived(payload, "c1"), 0.0)
    assert refused.value.reason is RejectReason.GENESIS_MISMATCH
    ours = frame_experiment_model(mine.digest, b"\x01" * 20, bytes(size), round=1)
    assert engine.handle(TransactionReceived(ours, "c1"), 0.0) == []  # this experiment's: taken


def test_every_runtime_gives_a_node_the_same_fedavg_settings() -> None:
    """The settings local processes, containers and swarm services start nodes with."""
    spec = parse_spec(fedavg_spec(nodes={"count": 3, "behaviours": {1: "random-model"}}))
    centre = load_node_config(None, environ={}, **experiment_settings(spec, 0, None))
    leaf = load_node_config(None, environ={}, **experiment_settings(spec, 1, None))
    assert centre.protocol == leaf.protocol == "fedavg"
    assert centre.fedavg_aggregator and not leaf.fedavg_aggregator
    assert centre.fedavg_config() == spec.fedavg_config(0)
    assert leaf.behaviour == "random-model" and leaf.local_batch_size == 32
    assert centre.spec == leaf.spec  # the same experiment in the genesis
