"""The weights a BLADE-FL chain names but does not hold, recovered by re-running its spec.

A block stores each model's signed digest, not its weights (node/ledger/records.py:
`without_model`), so a chain alone cannot say how much one model resembles another. It does
carry everything needed to make them again: the genesis holds the canonical experiment spec,
and a simulated run is a function of its spec (one seed scheme for partitions, behaviours and
training, a virtual clock). So the simulator runs the chain's own spec once more, into a
scratch directory, and every model its blocks aggregate is kept under the digest of its bytes.
A model is then looked up by the digest the chain signed, so a replay that drifted from the
original in any weight simply has no entry for it: nothing the chain does not name is used.

Only a chain the simulator mined can be re-made this way: the simulator mines at a fixed
difficulty (`MINING_DIFFICULTY`), which the genesis records, while process runtimes calibrate
theirs to the machine; their clients wrote the tables to rounds.jsonl instead.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from node.host.dispatch import HostObserver
from node.host.resemblance import Resemblance
from node.ledger.hashing import model_digest
from node.ledger.pow import difficulty_of
from node.protocol.events import PoolModel
from proto.dfl.v1 import records_pb2 as pb


class NotReplayable(Exception):
    """The chain's models cannot be re-made by the simulator; the message says why."""


class _KeepModels(HostObserver):
    """Wraps the simulation's own round recorder, keeping each aggregated block's weights."""

    def __init__(self, inner: HostObserver) -> None:
        self.inner = inner
        self.models: dict[bytes, bytes] = {}

    @property
    def rounds(self) -> list[int]:  # the simulation counts its rounds through its recorder
        return self.inner.rounds  # type: ignore[attr-defined, no-any-return]

    def round_aggregated(
        self, round: int, models: Sequence[PoolModel], found: Sequence[Resemblance]
    ) -> None:
        for model in models:
            weights = bytes(model.model)
            self.models[model_digest(weights)] = weights
        self.inner.round_aggregated(round, models, found)


def replay_models(genesis: pb.Genesis, data_dir: str | Path | None = None) -> dict[bytes, bytes]:
    """Every model the replayed run's blocks held, by the digest of its weights."""
    from orchestrator.datasets import DatasetError, load_dataset
    from orchestrator.sim.blade import MINING_DIFFICULTY, BladeSimulation
    from orchestrator.spec import SpecError, parse_spec

    difficulty = difficulty_of(genesis)
    if difficulty != MINING_DIFFICULTY:
        raise NotReplayable(
            f"the chain was mined at difficulty {difficulty}, not the simulator's "
            f"{MINING_DIFFICULTY}: it comes from a process runtime, not `dfl simulate`"
        )
    if not genesis.body.spec:
        raise NotReplayable("the genesis records no experiment spec")
    try:
        spec = parse_spec(json.loads(genesis.body.spec), "the chain's genesis")
        dataset = load_dataset(spec.dataset, data_dir)
    except (SpecError, json.JSONDecodeError, DatasetError) as error:
        raise NotReplayable(str(error)) from None
    with tempfile.TemporaryDirectory(prefix="dfl-replay-") as scratch:
        simulation = BladeSimulation(spec, dataset, Path(scratch), progress=False)
        keeper = _KeepModels(simulation.recorder)
        simulation.recorder = keeper  # type: ignore[assignment]
        simulation.run()
        if simulation.genesis.digest != genesis.digest:
            raise NotReplayable("the replayed run has another genesis than the chain")
    return keeper.models
