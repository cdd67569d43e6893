"""The genesis of an experiment spec, as every node of it derives it (node/host/genesis.py).

A node builds its genesis from its config; whatever holds the spec itself (the simulator, a
test, an audit) builds it here, from the spec's canonical form, so the two agree by
construction.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.host.genesis import experiment_genesis, initial_learner
from node.learning.training import Learner
from orchestrator.spec import ExperimentSpec, canonical_spec_json
from proto.dfl.v1 import records_pb2 as pb


def spec_genesis(
    spec: ExperimentSpec,
    *,
    learner: Learner | None = None,
    extra: Mapping[str, object] | None = None,
) -> pb.Genesis:
    """`learner` holds the initial model when the caller has one already (else one is built);
    `extra` are the protocol's genesis parameters (BLADE-FL's difficulty and rounds)."""
    return experiment_genesis(
        protocol=spec.protocol,
        model=spec.model,
        seed=spec.seed,
        spec=canonical_spec_json(spec),
        learner=learner or initial_learner(spec.model, spec.seed),
        extra=extra,
    )
