"""The genesis every node of an experiment derives alike, in every runtime.

It records the model (architecture, layer shapes, the digest of the initial weights), the
solver's hyperparameters, the seed, the protocol's own parameters (BLADE-FL's difficulty and
rounds) and the canonical experiment spec itself. Every record a node signs names this digest,
so nodes that disagree on any of it, down to a ttl or a topology, refuse each other's records
(`genesis_mismatch`), and any chain can be re-run from the spec it carries.
"""

from __future__ import annotations

from collections.abc import Mapping

from node import seeds
from node.learning.codec import encode_f32le, layer_shapes
from node.learning.training import Learner
from node.ledger import records
from node.ledger.hashing import model_digest
from node.ledger.pow import DIFFICULTY_PARAMETER
from proto.dfl.v1 import records_pb2 as pb


def initial_learner(model: str, seed: int, test_batch: int = 100) -> Learner:
    """A learner holding the experiment's initial model: the same weights in every process."""
    initial = seeds.integer(seed, seeds.Purpose.INITIAL_MODEL)
    return Learner(model, seed=initial, test_batch_size=test_batch)


def experiment_genesis(
    *,
    protocol: str,
    model: str,
    seed: int,
    spec: str,
    learner: Learner,
    extra: Mapping[str, object] | None = None,
) -> pb.Genesis:
    """The genesis of the experiment `spec` (its canonical JSON); `learner` holds the initial
    model, before any training."""
    solver = learner.solver_config
    hyperparameters: dict[str, object] = {
        name: getattr(solver, name) for name in sorted(type(solver).__dataclass_fields__)
    }
    hyperparameters.update(extra or {})
    return records.make_genesis(
        protocol=protocol,
        model_architecture=model,
        layers=layer_shapes(learner.module),
        hyperparameters=hyperparameters,
        seed=seed,
        spec=spec,
        initial_model_digest=model_digest(encode_f32le(learner.weights())),
    )


def blade_extras(
    *,
    difficulty: float,
    rounds: int,
    local_iterations: int,
    dataset_size: int,
    batch_size: int,
) -> dict[str, object]:
    """BLADE-FL's parameters that every client must agree on, as genesis hyperparameters."""
    return {
        DIFFICULTY_PARAMETER: difficulty,
        "rounds": rounds,
        "local_iterations": local_iterations,
        "dataset_size": dataset_size,
        "batch_size": batch_size,
    }


def fedavg_extras(
    *, rounds: int, local_epochs: int, dataset_size: int, batch_size: int
) -> dict[str, object]:
    """FedAvg's parameters that every node must agree on, as genesis hyperparameters (there is
    no chain to carry the genesis, but it names the experiment in every model's frame)."""
    return {
        "rounds": rounds,
        "local_epochs": local_epochs,
        "dataset_size": dataset_size,
        "batch_size": batch_size,
    }
