"""What a node running BLADE-FL's ML host (node/host/blade.py) does whichever protocol drives it.

BLADE-FL's clients (blade_server.py) and FedAvg's nodes (fedavg_server.py) run the same host:
one fixed local dataset of the protocol's size, trained in rounds, its global model saved after
each round and a line appended to `rounds.jsonl`. That part lives here once, so the two
protocols' processes cannot drift apart in how they train, checkpoint or log a round; what each
protocol adds (its engine, its store, the round line's own fields) stays in its own file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import numpy as np

from node.datadir import ROUNDS_FILE
from node.host.blade import BladeHost
from node.host.dispatch import HostObserver
from node.host.resemblance import Resemblance
from node.learning.behaviours import Behaviour, make_behaviour
from node.learning.training import configure_torch
from node.protocol.blade_rounds import RoundRules
from node.protocol.events import PoolModel
from node.service.base import NodeBase
from node.service.config import NodeConfig

Rules = TypeVar("Rules", bound=RoundRules)


class BladeHostNode(NodeBase, HostObserver):
    """A node whose ML host is BLADE-FL's; subclasses set `engine`, `store` and `dispatch`."""

    host: BladeHost

    def _start_host(self, config: NodeConfig, protocol_for: Callable[[Behaviour], Rules]) -> Rules:
        """The host, for the protocol config `protocol_for` makes of the node's behaviour (its
        dataset size is the host's); returns that config."""
        configure_torch(config.torch_threads)
        behaviour = make_behaviour(config.behaviour, **config.behaviour_options)
        protocol = protocol_for(behaviour)
        self.host = BladeHost(
            model=config.model,
            seed=config.seed,
            index=config.index,
            behaviour=behaviour,
            dataset_size=protocol.dataset_size,
            batch_size=config.local_batch_size,
            test_batch=config.test_batch,
        )
        return protocol

    def collect(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.host.collect(images, labels)
        self.host.sample_log.write(self.config.data_dir)

    def _round_done(
        self,
        round: int,
        models: Sequence[PoolModel],
        found: Sequence[Resemblance],
        checkpoint: dict[str, Any],
        line: Callable[[], dict[str, Any]],
    ) -> None:
        """After the host aggregated `round`: metrics, the global model saved with the
        `checkpoint` metadata, and the round's line in rounds.jsonl, with the protocol's own
        fields (`line()`, asked for after the accuracy metric) after the round and time."""
        self.metrics.round_completed()
        # The round's global model, taken now: the host replaces the array at each aggregation
        # and never writes into it, so a later round cannot change what is saved as this one.
        weights = self.host.global_weights
        self.run_ml(
            "other", lambda: self._save_model(weights, f"round {round}", **checkpoint), _nothing
        )
        if self.host.local_accuracy is not None:
            self.metrics.set_accuracy(self.host.local_accuracy, "local")
        fields = line()
        record = {
            "round": round,
            "time": time.time(),
            **fields,
            "models": [m.generator.hex() for m in models],
            "local_accuracy": self.host.local_accuracy,
            "resemblance": [asdict(r) for r in found],
        }
        with open(self.config.data_dir / ROUNDS_FILE, "a") as rounds:
            rounds.write(json.dumps(record) + "\n")


def _nothing(_: object) -> None:
    """A saved checkpoint tells the engine nothing."""
