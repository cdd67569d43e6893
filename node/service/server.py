"""The running DFL node: the DFL engine and its learning host inside the common node service.

node/service/base.py holds what every node does (gRPC, peers, profiling, lifecycle); this file
holds what DFL adds: the engine, the learning host, the draft and confirmation RPCs, and how each
engine action is carried out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from node.learning.aggregation import load_aggregator
from node.learning.behaviours import make_behaviour
from node.learning.training import configure_torch
from node.protocol.dfl import (
    Action,
    Aggregate,
    ConfirmationsReceived,
    DflEngine,
    DraftBlockReceived,
    Evaluate,
    EvaluationDone,
    EvaluationFailed,
    PeersChanged,
    PersistBlock,
    SamplesCollected,
    Send,
    Tick,
    Train,
    TrainingDone,
    TransactionReceived,
)
from node.service.base import NodeBase
from node.service.config import NodeConfig
from node.service.learning_host import DflLearningHost

log = logging.getLogger(__name__)

TASK_OF_EVENT: dict[type, str] = {
    SamplesCollected: "generate_transaction",
    TrainingDone: "generate_transaction",
    TransactionReceived: "receive_transaction",
    EvaluationDone: "receive_transaction",
    EvaluationFailed: "receive_transaction",
    DraftBlockReceived: "generate_block",
    ConfirmationsReceived: "generate_block",
    Tick: "generate_block",
    PeersChanged: "other",
}


class DflNode(NodeBase):
    """Everything one DFL node process runs. `await node.start()`, then `await node.stop()`."""

    task_of_event = TASK_OF_EVENT

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        configure_torch(config.torch_threads)
        self.host = DflLearningHost(
            model=config.model,
            seed=config.seed,
            node_seed=config.node_seed,
            aggregator=load_aggregator(config.aggregator, **config.aggregator_options),
            behaviour=make_behaviour(config.behaviour, **config.behaviour_options),
            test_batch=config.test_batch,
            sample_memory=config.sample_memory,
        )
        self._open(self.host.genesis)
        self.engine = DflEngine(
            self.key,
            self.genesis,
            config.dfl_config(),
            peers=config.peers,
            height=self.store.height,
            head_digest=self.store.head_digest,
        )

    def _carry_out(self, action: Action, task: str) -> None:
        match action:
            case Train(batch_size):
                self._run_ml(
                    "generate_transaction",
                    self.host.train,
                    batch_size,
                    then=lambda model: self._after_training(model),
                )
            case Evaluate(digest, _, model):
                self._run_ml(
                    "receive_transaction",
                    self.host.evaluate,
                    model,
                    then=lambda accuracy: self._handle_quietly(EvaluationDone(digest, accuracy)),
                    failed=lambda: self._handle_quietly(EvaluationFailed(digest)),
                )
            case Aggregate(models):
                self._run_ml(
                    "update_model",
                    self.host.aggregate,
                    models,
                    then=lambda _: self.metrics.set_reputations(self.host.reputation),
                )
            case Send(to, kind, payload):
                self._send_all(to, kind, payload)
            case PersistBlock(block):
                with self.profiler.measure("generate_block", "blockchain"):
                    self.store.append(block)
                self.metrics.block_finalized(
                    self.store.height,
                    len(block.body.transactions),
                    len(block.finalization.confirmations),
                )

    def _after_training(self, model: bytes) -> None:
        if self.host.local_accuracy is not None:
            self.metrics.set_accuracy(self.host.local_accuracy, "local")
        self._handle_quietly(TrainingDone(model))

    def _record_methods(self) -> dict[str, Callable[[bytes, Any], Any]]:
        return {
            **super()._record_methods(),
            "SubmitDraftBlock": self._submit_draft,
            "SubmitConfirmations": self._submit_confirmations,
        }

    async def _submit_draft(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._submit(DraftBlockReceived(request, self._sender(context)), context)

    async def _submit_confirmations(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        return await self._submit(ConfirmationsReceived(request, self._sender(context)), context)

    def _transaction_counts(self) -> tuple[int, int]:
        counters = self.engine.state.counters
        return counters["transactions_generated"], counters["transactions_received"]
