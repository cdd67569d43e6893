"""The running FedAvg node: the FedAvg engine and BLADE-FL's host (node/host/blade.py), no chain.

node/service/base.py holds what every node does (gRPC, peers, profiling, lifecycle); this file
holds what FedAvg adds, which is little: the engine (node/protocol/fedavg.py) in its role (the
star's centre aggregates, every other node is a client), BLADE-FL's ML host and FedAvg's
dispatcher (node/host/dispatch.py, the ones the simulator runs), and a stand-in for the chain
store it does not keep. Models travel as SubmitTransaction, the one record RPC every node has:
a client's model to the aggregator, the global model back; the engine refuses anything else
with a named reason, which the base counts and answers.

After each round every node appends a line to `rounds.jsonl` (the round, the models averaged,
the global model's accuracy on the node's own test shard), as a BLADE-FL client does per block,
and saves the global model to its checkpoint with the round, from which a restarted node
resumes (a client then takes the next global model it is sent, whichever round that is). The
host, that line and that save are BLADE-FL's own (node/service/blade_host_node.py), so the two
protocols' processes differ only in their engines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from node.host.dispatch import FedAvgDispatcher
from node.host.genesis import fedavg_extras
from node.host.resemblance import Resemblance
from node.learning.codec import encode_f32le
from node.protocol.events import PoolModel
from node.protocol.fedavg import FedAvgEngine
from node.service.blade_host_node import BladeHostNode
from node.service.config import NodeConfig

log = logging.getLogger(__name__)

ROUND_KEY = "round"  # the checkpoint metadata a restarted node resumes its rounds from


class NoChain:
    """What the node service asks of a chain store, for a protocol that keeps none: height 0,
    no blocks, nothing to close. The data directory gets no chain.sqlite."""

    height = 0

    def blocks(self, start: int = 1) -> Iterator[tuple[int, bytes, bytes]]:
        return iter(())

    def close(self) -> None:
        """Nothing is open."""


class FedAvgNode(BladeHostNode):
    """Everything one FedAvg node process runs: the aggregator or a client."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        protocol = self._start_host(
            config, lambda behaviour: config.fedavg_config(trains=behaviour.sends)
        )
        extras = fedavg_extras(
            rounds=protocol.rounds,
            local_epochs=protocol.local_iterations,
            dataset_size=protocol.dataset_size,
            batch_size=config.local_batch_size,
        )
        self._open(self.host.learner, extras)  # the genesis, from the initial model every start
        closed = self._resume()
        self.engine = FedAvgEngine(
            self.key.address,
            self.genesis.digest,
            protocol,
            model_bytes=len(encode_f32le(self.host.global_weights)),
            aggregator=config.fedavg_aggregator,
            peers=config.peers,
            closed=closed,
        )
        self.dispatch = FedAvgDispatcher(self.host, self, self)

    def _open_store(self, genesis: Any) -> NoChain:
        return NoChain()

    def _resume(self) -> int:
        """The rounds the saved global model has seen (0 without a checkpoint)."""
        saved = self._saved_model()
        if saved is None:
            return 0
        self.host.resume(saved.weights)
        try:
            return max(int(saved.metadata.get(ROUND_KEY, 0)), 0)
        except ValueError:
            return 0

    def _stop_workers(self) -> None:
        super()._stop_workers()
        closed = self.engine.state.closed
        self._save_model(self.host.global_weights, "stop", **{ROUND_KEY: closed})

    def persist(self, block: Any) -> None:
        raise TypeError("a FedAvg node keeps no chain")

    # --- what the host did (HostObserver) ------------------------------------------------------

    def round_aggregated(
        self, round: int, models: Sequence[PoolModel], found: Sequence[Resemblance]
    ) -> None:
        self._round_done(
            round, models, found, {ROUND_KEY: round}, lambda: {"aggregator": self.engine.aggregator}
        )
        if round >= self.engine.config.rounds:
            log.info("all %d rounds done", self.engine.config.rounds)

    def _transaction_counts(self) -> tuple[int, int]:
        counters = self.engine.state.counters
        received = counters["models_received"] + counters["global_models_received"]
        return counters["models_created"], received
