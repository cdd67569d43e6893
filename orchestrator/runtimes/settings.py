"""What a node's config holds because of the experiment, whichever runtime starts the node.

The runtimes add only how the node is reached (listen address, ports, peers, data directory);
everything else comes from here, so a local process and a container of the same spec run the
same protocol with the same seeds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from node.ledger.pow import calibrate_difficulty, measure_hash_rate
from orchestrator.spec import ExperimentSpec, canonical_spec_json
from orchestrator.spec.experiment import FEDAVG_AGGREGATOR

log = logging.getLogger(__name__)


def experiment_settings(
    spec: ExperimentSpec, index: int, pow_difficulty: float | None
) -> dict[str, Any]:
    """Node config fields for node `index`: model, seeds, identity, behaviour, the experiment
    itself (the genesis carries it) and the protocol's part."""
    behaviour = spec.behaviour_of(index)
    return {
        "model": spec.model,
        "seed": spec.seed,
        "index": index,
        "identity": spec.identity,
        "spec": canonical_spec_json(spec),
        "behaviour": behaviour.name,
        "behaviour_options": dict(behaviour.options),
        "test_batch": spec.dfl.test_batch,
        **protocol_settings(spec, index, pow_difficulty),
    }


def protocol_settings(
    spec: ExperimentSpec, index: int, pow_difficulty: float | None
) -> dict[str, Any]:
    """The protocol's part: DFL's engine and aggregator, BLADE-FL's or FedAvg's rounds."""
    if spec.fedavg is not None:
        return {"protocol": "fedavg", "fedavg": fedavg_node_fields(spec, index)}
    if spec.blade is None:
        return {
            "protocol": "dfl",
            "aggregator": spec.dfl.aggregator.name,
            "aggregator_options": dict(spec.dfl.aggregator.options),
            "dfl": spec.dfl_config_fields(index),
        }
    return {"protocol": "blade-fl", "blade": blade_node_fields(spec, pow_difficulty)}


def difficulty_for(spec: ExperimentSpec) -> float:
    """BLADE-FL's difficulty: the spec's, or calibrated to `beta` from this machine's hash rate."""
    blade = spec.blade
    assert blade is not None
    if blade.difficulty is not None:
        return blade.difficulty
    rate = measure_hash_rate()
    difficulty = calibrate_difficulty(blade.beta, spec.nodes.count, os.cpu_count() or 1, rate)
    log.info(
        "difficulty %.3g: %.2f M hashes/s per core, %d clients, beta %.1f s",
        difficulty,
        rate / 1e6,
        spec.nodes.count,
        blade.beta,
    )
    return difficulty


def blade_node_fields(spec: ExperimentSpec, difficulty: float | None) -> dict[str, Any]:
    """A BLADE-FL client's `blade` settings (BladeConfig fields plus the host's)."""
    blade = spec.blade
    assert blade is not None and difficulty is not None
    fields = dataclasses.asdict(blade.config(clients=spec.nodes.count))
    del fields["lazy"]  # the node knows once it has built its behaviour
    return {**fields, "difficulty": difficulty, "batch_size": blade.batch_size}


def fedavg_node_fields(spec: ExperimentSpec, index: int) -> dict[str, Any]:
    """A FedAvg node's `fedavg` settings (FedAvgConfig fields plus the host's and its role)."""
    fedavg = spec.fedavg
    assert fedavg is not None
    fields = dataclasses.asdict(spec.fedavg_config(index))
    del fields["trains"]  # the node knows once it has built its behaviour
    return {
        **fields,
        "batch_size": fedavg.batch_size,
        "aggregator": index == FEDAVG_AGGREGATOR,
    }


def peer_names(spec: ExperimentSpec) -> dict[str, list[str]]:
    """Each node's peers by name (`node3`), as the container runtimes' nodes know each other."""
    return {
        f"node{index}": [f"node{peer}" for peer in sorted(peers)]
        for index, peers in enumerate(spec.neighbours())
    }


def container_ready_timeout(count: int) -> float:
    """Seconds to wait for `count` containers to answer: each imports torch on a shared host."""
    return 60.0 + 6.0 * count
