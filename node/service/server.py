"""The running DFL node: the DFL engine and its host (node/host/dfl.py) in the common node service.

node/service/base.py holds what every node does (gRPC, peers, profiling, lifecycle); this file
holds what DFL adds: the engine, its host and dispatcher (node/host/, shared with the simulator),
the draft and confirmation RPCs, and what a finished block or ML step means for the metrics.

The model survives a restart in the data directory's checkpoint (node/host/checkpoint.py): saved
after every aggregation, on the ML thread (the only one that may read the learner while the node
runs, and so the loop never waits on the disk), and once more on a clean stop; loaded at start
after the genesis has been built from the initial model, which must not change across restarts.
The draft block in progress survives it in the chain store: a restarted engine resumes the draft
it had signed and sent (ChainStore.draft) rather than signing another at the same height.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from node import seeds
from node.host.dfl import DflHost
from node.host.dispatch import DflDispatcher, HostObserver
from node.host.samples import InjectedSamples
from node.learning.aggregation import load_aggregator
from node.learning.behaviours import make_behaviour
from node.learning.training import configure_torch
from node.protocol.dfl import DflEngine
from node.protocol.events import BufferedModel, ConfirmationsReceived, DraftBlockReceived
from node.service.base import NodeBase
from node.service.config import NodeConfig
from proto.dfl.v1 import records_pb2

log = logging.getLogger(__name__)


class DflNode(NodeBase, HostObserver):
    """Everything one DFL node process runs. `await node.start()`, then `await node.stop()`."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        configure_torch(config.torch_threads)
        self.samples = InjectedSamples(
            seeds.stream(config.seed, seeds.Purpose.LOCAL_TEST, config.index),
            config.sample_memory,
        )
        self.host = DflHost(
            model=config.model,
            seed=config.seed,
            index=config.index,
            aggregator=load_aggregator(config.aggregator, **config.aggregator_options),
            behaviour=make_behaviour(config.behaviour, **config.behaviour_options),
            samples=self.samples,
            test_batch=config.test_batch,
        )
        self._open(self.host.learner)  # the genesis, from the initial model on every start
        self._resume()
        self.engine = DflEngine(
            self.key,
            self.genesis,
            config.dfl_config(),
            peers=config.peers,
            height=self.store.height,
            head_digest=self.store.head_digest,
            draft=self.store.draft(),  # signed and sent before a crash: finalized, not redone
        )
        self.dispatch = DflDispatcher(self.host, self, self)

    def _resume(self) -> None:
        saved = self._saved_model()
        if saved is not None:
            self.host.resume_from(saved)

    def _save_learner(self, reason: str, height: int) -> None:
        """On the ML thread, or once it has stopped: the learner is then this thread's."""
        self._save_with(lambda checkpoint: self.host.save(checkpoint, reason, height), reason)

    def _stop_workers(self) -> None:
        super()._stop_workers()
        self._save_learner("stop", self.store.height)  # the ML thread is gone: ours to read

    def collect(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.samples.collect(images, labels)

    def persist_draft(self, block: records_pb2.Block) -> None:
        """On the loop, before the draft is sent: the SQLite commit makes it durable."""
        with self.profiler.measure("generate_block", "blockchain"):
            self.store.save_draft(block)

    def persist(self, block: records_pb2.Block) -> None:
        with self.profiler.measure("generate_block", "blockchain"):
            self.store.append(block)
        self.metrics.block_finalized(
            self.store.height,
            len(block.body.transactions),
            len(block.finalization.confirmations),
        )

    # --- what the host did (HostObserver) ------------------------------------------------------

    def trained(self) -> None:
        if self.host.local_accuracy is not None:
            self.metrics.set_accuracy(self.host.local_accuracy, "local")
        self.host.sample_log.write(self.config.data_dir)

    def aggregated(
        self, models: Sequence[BufferedModel], reputation: Mapping[str, float] | None
    ) -> None:
        self.metrics.set_reputations(reputation or {})
        height = self.store.height  # the store is the loop's; the learner, the ML thread's
        self.run_ml("other", lambda: self._save_learner("aggregation", height), _nothing)

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


def _nothing(_: object) -> None:
    """A saved checkpoint tells the engine nothing."""
