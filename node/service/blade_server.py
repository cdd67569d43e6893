"""The running BLADE-FL client: the BLADE-FL engine, its host (node/host/blade.py), a miner thread.

Mining is the one long CPU job of the protocol, so it runs on its own thread in bounded chunks
(`MINING_CHUNK` hashes, about 10 ms here): between chunks the loop checks whether the engine has
stopped the search, because a valid block from a peer arrived. Each chunk is profiled as task
`mine`, category `blockchain`, and counted in dfl_pow_hashes_total; the time from the start of a
search to its end (found, or stopped) goes to dfl_mining_seconds.

After each block, the client appends a line to `rounds.jsonl` in its data directory: the round,
the block's miner and, for every model in the block, the peer it resembles most (see
node/host/resemblance.py), which is how a run report shows lazy clients' plagiarism.

The global model survives a restart in the data directory's checkpoint (node/host/checkpoint.py):
saved after every round's aggregation, written on the ML thread so the loop never waits on the
disk, and once more on a clean stop; loaded at start after the genesis has been built from the
initial model, which must not change across restarts. A client killed between appending a block
and aggregating its round resumes from the round before (the log line says which).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc

from node.host.dispatch import BladeDispatcher
from node.host.genesis import blade_extras
from node.host.resemblance import Resemblance
from node.ledger.pow import MiningResult, mine
from node.protocol.blade import BladeEngine
from node.protocol.events import (
    BlockMined,
    ChainFetched,
    FetchFailed,
    PoolModel,
    PowBlockReceived,
    VoteReceived,
)
from node.service import loopcpu
from node.service.blade_host_node import BladeHostNode
from node.service.config import NodeConfig
from node.service.rpc import Method
from proto.dfl.v1 import node_pb2, records_pb2

log = logging.getLogger(__name__)

MINING_CHUNK = 25_000


class BladeNode(BladeHostNode):
    """Everything one BLADE-FL client process runs."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        protocol = self._start_host(
            config, lambda behaviour: config.blade_config(lazy=behaviour.copies_peers)
        )
        extras = blade_extras(
            difficulty=config.pow_difficulty,
            rounds=protocol.rounds,
            local_iterations=protocol.local_iterations,
            dataset_size=protocol.dataset_size,
            batch_size=config.local_batch_size,
        )
        self._open(self.host.learner, extras)  # the genesis, from the initial model every start
        self._resume()
        self.engine = BladeEngine(
            self.key,
            self.genesis,
            protocol,
            peers=config.peers,
            chain=[self.genesis.digest, *(digest for _, digest, _ in self.store.blocks())],
        )
        self.dispatch = BladeDispatcher(self.host, self, self)
        self._miner = ThreadPoolExecutor(1, thread_name_prefix="mine")
        self._mining: int | None = None  # the height being mined, None when idle
        self._mining_since = 0.0

    def _stop_workers(self) -> None:
        self._mining = None
        self._miner.shutdown(wait=True, cancel_futures=True)
        super()._stop_workers()
        self._save_model(self.host.global_weights, "stop", height=self.store.height)

    def _resume(self) -> None:
        saved = self._saved_model()
        if saved is not None:
            self.host.resume(saved.weights)

    # --- effects only a process has (node/host/dispatch.py: BladeEffects) ----------------------

    def persist(self, block: records_pb2.PowBlock) -> None:
        with self.profiler.measure(self._task, "blockchain"):
            self.store.append(block)
        self.metrics.block_finalized(self.store.height, len(block.transactions), 0)

    def truncate(self, height: int) -> None:
        with self.profiler.measure(self._task, "blockchain"):
            self.store.truncate(height)
        self.metrics.set_chain_height(height)

    def fetch_chain(self, peer: str) -> None:
        self._spawn(self._fetch(peer), "verify_block")  # catching up is checking blocks

    def mine(self, height: int, prefix: bytes, target: bytes) -> None:
        self._mining, self._mining_since = height, time.monotonic()
        self._mine_chunk(height, prefix, target, 0)

    def stop_mining(self, height: int) -> None:
        if self._mining == height:
            self._mining = None
            self.metrics.mining_finished(time.monotonic() - self._mining_since)

    # --- mining --------------------------------------------------------------------------------

    def _mine_chunk(self, height: int, prefix: bytes, target: bytes, start: int) -> None:
        def work() -> MiningResult:
            with self.profiler.measure("mine", "blockchain"):
                return mine(prefix, target, start, MINING_CHUNK)

        future = self._miner.submit(work)
        context = loopcpu.context_for("mine")  # what follows a chunk (next chunk, a block) too
        future.add_done_callback(
            lambda done: self._loop.call_soon_threadsafe(
                self._chunk_done, done, height, prefix, target, start, context=context
            )
        )

    def _chunk_done(
        self,
        future: Future[MiningResult],
        height: int,
        prefix: bytes,
        target: bytes,
        start: int,
    ) -> None:
        if future.cancelled() or self._stopping:
            return
        error = future.exception()
        if error is not None:
            log.error("mining failed at height %d", height, exc_info=error)
            self._mining = None
            return
        result = future.result()
        self.metrics.pow_hashes(result.attempts)
        if self._mining != height:
            return  # stopped: a peer's block won this height
        if result.nonce is None:
            self._mine_chunk(height, prefix, target, start + result.attempts)
            return
        self._mining = None
        self.metrics.mining_finished(time.monotonic() - self._mining_since)
        self._handle_quietly(BlockMined(height, result.nonce))

    # --- rounds and catching up ----------------------------------------------------------------

    def round_aggregated(
        self, round: int, models: Sequence[PoolModel], found: Sequence[Resemblance]
    ) -> None:
        def miner() -> dict[str, Any]:
            block = self.store.block(round) if self.store.height >= round else None
            return {"miner": block.header.miner.hex() if block is not None else None}

        self._round_done(round, models, found, {"height": self.store.height}, miner)
        if self.engine.finished:
            log.info("all %d rounds done", self.engine.config.rounds)

    async def _fetch(self, peer: str) -> None:
        client = self._peers.get(peer)
        if client is None:
            self._handle_quietly(FetchFailed(peer))
            return
        try:
            blocks, models = await client.fetch_chain()
        except grpc.aio.AioRpcError as error:
            log.warning("could not fetch the chain of %s: %s", peer, error.code().name)
            self._handle_quietly(FetchFailed(peer))
            return
        self._handle_quietly(ChainFetched(peer, blocks, models))

    # --- RPCs ----------------------------------------------------------------------------------

    def _record_methods(self) -> dict[str, Callable[[bytes, Any], Any]]:
        return {
            **super()._record_methods(),
            "SubmitPowBlock": self._submit_block,
            "SubmitBlockVote": self._submit_vote,
        }

    def _extra_methods(self) -> dict[str, Method]:
        return {
            "GetRoundModels": Method(
                self._round_models,
                node_pb2.RoundRequest,
                self.limits.max_request_bytes,
                task="verify_block",  # a peer catching up on a round's models
            )
        }

    async def _submit_block(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._submit(PowBlockReceived(request, self._sender(context)), context)

    async def _submit_vote(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._submit(VoteReceived(request, self._sender(context)), context)

    async def _round_models(
        self, request: node_pb2.RoundRequest, context: grpc.aio.ServicerContext
    ) -> records_pb2.TransactionBatch:
        return records_pb2.TransactionBatch(transactions=self.engine.round_models(request.round))

    def _transaction_counts(self) -> tuple[int, int]:
        counters = self.engine.state.counters
        return counters["models_created"], counters["models_received"]
