"""What every node process runs, whichever protocol: the gRPC server around a sans-IO engine.

One asyncio loop owns the engine, the chain store and the peer clients, so protocol state is
only ever touched from one thread. ML work runs on a single worker thread and reports back to the
loop. Record-carrying RPCs take raw bytes: the engine decodes and validates them itself, so even
bytes that do not parse are rejected with a named reason and counted, instead of failing inside
gRPC's deserializer.

CPU goes to the profiler by (task, category): engine calls are `blockchain`, ML calls are `ml`,
and what the loop thread spends otherwise (gRPC's Python side, sending and receiving) is
`network` of the task the coroutine serves (node/service/loopcpu.py): a model sent to the peers
is generate_transaction's, a receipt sent back receive_transaction's, the orchestrator's calls
and the idle loop are `observe`. gRPC's C threads are charged by bytes (Profiler.apportioned).

A protocol's node (server.py, blade_server.py, fedavg_server.py) supplies the engine, the ML host
and its dispatcher (node/host/: the same ones the simulator runs), the events its RPCs turn into
and the effects only a process has (sending over gRPC, mining on a thread); the rest is here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np

from node import seeds
from node.datadir import PROFILE_FILE, replace_text
from node.host.checkpoint import Checkpoint, CheckpointError, SavedModel
from node.host.dispatch import BladeDispatcher, DflDispatcher
from node.host.genesis import experiment_genesis
from node.learning.training import Learner
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.keys import KeyFileError, NodeKey
from node.protocol.events import (
    Evaluate,
    GeneratorsRefused,
    MessageKind,
    PeersChanged,
    SamplesCollected,
    Tick,
    TransactionReceived,
)
from node.service import health, loopcpu
from node.service.admission import GENERATOR_PREFIX, Admission, generator_peer
from node.service.chaindir import DataDirectoryError, open_chain
from node.service.config import NodeConfig
from node.service.control import ControlVerifier
from node.service.crashpoint import hold_inside_append
from node.service.metrics import NodeMetrics
from node.service.modelversion import ModelVersion
from node.service.netfault import IncomingFaults, NetworkFault, NetworkFaults, OutgoingFaults
from node.service.peers import (
    SENDER_METADATA,
    SERVICE,
    PeerClient,
    check_peer_address,
    server_options,
)
from node.service.profiler import Profiler
from node.service.rpc import Gate, Method, Refused
from node.service.tls import add_port
from proto.dfl.v1 import node_pb2

log = logging.getLogger(__name__)

IMAGE_PIXELS = 28 * 28
ACK = node_pb2.Ack().SerializeToString()
PROFILE_EVERY_TICKS = 20
MAX_PEERS = 256


class NodeBase:
    """Lifecycle, RPC plumbing, profiling and peers; subclasses set `engine`, `host`, `store`;
    `await node.start()`, then `await node.stop()`."""

    dispatch: DflDispatcher | BladeDispatcher

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        derived = config.identity == "derived"
        seed = seeds.identity_seed(config.seed, config.index) if derived else None
        try:
            self.key = NodeKey.load_or_create(config.data_dir, seed)
        except KeyFileError as error:
            raise DataDirectoryError(str(error)) from None
        self._task = "other"  # the task of the event whose actions are being carried out
        self._stopping = False
        self.profiler = Profiler()
        self.metrics = NodeMetrics(self.profiler)
        self.limits = config.admission_limits()
        self.admission = Admission(self.limits)
        verifier = ControlVerifier(config.control_keys(), self.key.address)
        self.gate = Gate(self.admission, verifier, self.metrics.rejected)
        self.network_faults = NetworkFaults(
            config.seed, config.index, on_fault=self.metrics.network_fault_message
        )
        self._ml = ThreadPoolExecutor(1, thread_name_prefix="ml")
        self._ml_pending = 0  # ML jobs submitted and not yet reported back
        self._peers: dict[str, PeerClient] = {}
        self._server: grpc.aio.Server | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_residual: loopcpu.LoopResidual | None = None  # set once the loop runs
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self.samples_injected = 0
        self.model_version = ModelVersion()

    def _open(self, learner: Learner, extra: Mapping[str, object] | None = None) -> None:
        """Called by the subclass once its host holds the initial model (`learner`): the
        experiment's genesis from the config, then the chain that continues it."""
        config = self.config
        genesis = experiment_genesis(
            protocol=config.protocol,
            model=config.model,
            seed=config.seed,
            spec=config.spec,
            learner=learner,
            extra=extra,
        )
        self.genesis = genesis
        self.store = self._open_store(genesis)
        if config.hold_append is not None:  # a test hook (NodeConfig's docstring)
            self.store.inside_append = hold_inside_append(config.hold_append)
        self.checkpoint = Checkpoint(config.data_dir, genesis)
        self.checkpoint_seconds: float | None = None  # how long the last save took
        self.metrics.set_info(self.key.address.hex(), genesis.digest.hex())
        self.metrics.set_chain_height(self.store.height)
        self.metrics.set_peers(self.config.peers)

    def _open_store(self, genesis: Any) -> Any:
        """The chain that continues `genesis` (a protocol without a chain returns a stand-in)."""
        return open_chain(self.config, self.key, genesis)

    def _saved_model(self) -> SavedModel | None:
        """The data directory's checkpoint, if any; one that does not fit this experiment stops
        the node (DataDirectoryError names the file and what to do)."""
        try:
            saved = self.checkpoint.load()
        except CheckpointError as error:
            self.store.close()
            raise DataDirectoryError(str(error)) from None
        if saved is not None:
            log.info("resuming from %s instead of the initial model", saved.summary())
        return saved

    def _save_model(self, weights: np.ndarray, reason: str, **metadata: object) -> None:
        """On the ML thread, or once it has stopped (the learner is then that thread's to read)."""
        self._save_with(lambda into: into.save(weights, reason=reason, **metadata), reason)

    def _save_with(self, save: Callable[[Checkpoint], float], reason: str) -> None:
        """Runs `save` on the checkpoint (it returns the seconds it took). A failed save (a full
        disk) is logged and leaves the previous checkpoint in place."""
        try:
            seconds = save(self.checkpoint)
        except OSError as error:
            log.warning("could not save the model to %s: %s", self.checkpoint.path, error)
            return
        self.checkpoint_seconds = seconds
        log.debug("model saved (%s) in %.1f ms", reason, seconds * 1000)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Bound before the server starts, so that its RPC tasks inherit it.
        loopcpu.bind(self.profiler, "observe")
        self._peers = {peer: self._client(peer) for peer in self.config.peers}
        server = grpc.aio.server(
            options=server_options(self.max_record_bytes),
            maximum_concurrent_rpcs=self.limits.max_concurrent_rpcs,
            interceptors=[IncomingFaults(self.network_faults)],
        )
        self._health = await health.NodeHealth.install(server, self._rpc_handler())
        self.port = add_port(server, f"{self.config.listen}:{self.config.port}", self.config.tls)
        if not self.port:
            raise OSError(f"cannot listen on {self.config.listen}:{self.config.port}")
        await server.start()
        self._server = server
        # Before the metrics server: a scrape must never see the start-up totals reset.
        self.profiler.mark_ready()
        if self.config.metrics_port:
            self._metrics_server = self.metrics.serve(
                self.config.metrics_port, host=self.config.listen
            )
            self.metrics_port = self.config.metrics_port
        self._loop_residual = loopcpu.LoopResidual(self.profiler)
        self._spawn(self._tick_forever())
        log.info(
            "node %s (%s) listening on %s:%s, chain height %d, peers %s",
            self.config.name,
            self.key.address.hex()[:16],
            self.config.listen,
            self.port,
            self.store.height,
            ", ".join(self.config.peers) or "none",
        )
        await self._health.serving(self.config, self.port)  # and the starting server lets go

    async def stop(self, grace: float = 1.0) -> None:
        self._stopping = True  # ML finishing from now on must not reach a closing store
        self.profiler.sample_native_threads()  # before gRPC's threads end with the server
        for task in list(self._background):
            task.cancel()
        if self._server is not None:
            await self._health.stop(grace)  # NOT_SERVING, then the server stops
        for client in self._peers.values():
            await client.close()
        self._stop_workers()
        self._claim_loop_residual()
        self.write_profile()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self.store.close()

    def _stop_workers(self) -> None:
        self._ml.shutdown(wait=True, cancel_futures=True)

    async def serve_until_signalled(self) -> None:
        """Runs until SIGTERM or SIGINT, then stops cleanly (the chain is always consistent)."""
        await self.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await stopping.wait()
        await self.stop()

    @property
    def max_record_bytes(self) -> int:
        """The largest record the protocol accepts: the bound of gossip requests."""
        return self.engine.config.max_message_bytes

    def _client(self, peer: str) -> PeerClient:
        return PeerClient(
            peer,
            self.config.address,
            timeout=self.config.peer_timeout,
            retries=self.config.peer_retries,
            on_failure=lambda target, code: self.metrics.send_failed(target, code),
            interceptors=[OutgoingFaults(self.network_faults, peer)],
            tls=self.config.tls,
        )

    def _spawn(self, coroutine: Any, charged_to: str = "observe") -> None:
        task = loopcpu.spawn(coroutine, charged_to)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tick_forever(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.config.tick_interval)
            self._handle_quietly(Tick())
            now = time.time()
            self.admission.forget_expired(now)
            self._sync_bans(now)
            self.metrics.ml_pending.set(self._ml_pending)
            self._claim_loop_residual()
            self.profiler.sample_native_threads()
            self.metrics.sync_engine_counters(self.engine.state.counters)
            ticks += 1
            if ticks % PROFILE_EVERY_TICKS == 0:
                self.write_profile()

    def write_profile(self) -> None:
        """profile.json in the data directory, replaced atomically (a killed node leaves one)."""
        replace_text(
            self.config.data_dir / PROFILE_FILE, json.dumps(self.profiler.snapshot(), indent=1)
        )

    def _claim_loop_residual(self) -> None:
        if self._loop_residual is not None:
            self._loop_residual.claim()

    # --- the engine ----------------------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        """Feeds the engine; raises RecordRejected (after counting it) for a bad record."""
        task = self.dispatch.task_of_event[type(event)]
        try:
            with self.profiler.measure(task, self.dispatch.engine_category(event)):
                actions = self.engine.handle(event, time.time())
        except RecordRejected as rejected:
            self.metrics.rejected(rejected.reason.label)
            raise
        for action in actions:
            self._task = task
            if isinstance(action, Evaluate) and action.created_at is not None:
                self.metrics.transaction_received(action.created_at, time.time())
            self.dispatch(action)

    def _handle_quietly(self, event: Any) -> None:
        try:
            self._handle(event)
        except RecordRejected as rejected:
            log.warning("engine refused %s: %s", type(event).__name__, rejected)

    # --- effects (node/host/dispatch.py: Effects) -----------------------------------------------

    def run_ml(
        self,
        task: str,
        work: Callable[[], Any],
        done: Callable[[Any], Any],
        failed: Any | None = None,
        *,
        virtual_seconds: float = 0.0,
    ) -> None:
        """On the ML worker thread; the engine hears the outcome back on the loop."""

        def measured() -> Any:
            with self.profiler.measure(task, "ml"):
                return work()

        self.model_version.ml_job(task)  # before it runs: a fetch racing it sees a new version

        future = self._ml.submit(measured)
        self._ml_pending += 1
        # Hearing the outcome back (the engine, what it sends next) is the same task's work;
        # a callback from the ML thread would otherwise run in that thread's empty context.
        context = loopcpu.context_for(task)
        future.add_done_callback(
            lambda finished: self._loop.call_soon_threadsafe(
                self._ml_done, finished, done, failed, context=context
            )
        )

    def send(self, to: tuple[str, ...], kind: MessageKind, payload: bytes) -> None:
        for peer in to:
            self._spawn(self._send(peer, kind, payload), self._task)

    def collect(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Injected samples reach the host."""
        raise NotImplementedError

    def _ml_done(self, future: Future[Any], done: Callable[[Any], Any], failed: Any) -> None:
        self._ml_pending -= 1
        if future.cancelled() or self._stopping:
            return
        error = future.exception()
        if error is not None:
            log.error("ML work failed", exc_info=error)
            event = failed
        else:
            event = done(future.result())
        if event is not None:
            self._handle_quietly(event)

    async def _send(self, peer: str, kind: MessageKind, payload: bytes) -> None:
        client = self._peers.get(peer)
        if client is None:
            return
        if await client.send(kind, payload):
            self.metrics.bytes_sent(kind.value, len(payload))
            loopcpu.moved(len(payload))

    # --- RPCs ----------------------------------------------------------------------------------

    def _record_methods(self) -> dict[str, Callable[[bytes, Any], Any]]:
        """The protocol's record-carrying RPCs (raw bytes in, Ack out), by method name."""
        return {"SubmitTransaction": self._submit_transaction}

    def _extra_methods(self) -> dict[str, Method]:
        """Protocol-specific RPCs that are not record submissions."""
        return {}

    def _methods(self) -> dict[str, Method]:
        limits, small = self.limits, self.limits.max_request_bytes
        records = self.max_record_bytes
        return {
            **{
                name: Method(handler, None, records)
                for name, handler in self._record_methods().items()
            },
            "InjectSamples": Method(
                self._inject, node_pb2.SampleBatch, limits.max_sample_batch_bytes, "stream_in"
            ),
            "GetStatus": Method(self._status, node_pb2.StatusRequest, small),
            "GetModel": Method(self._model, node_pb2.ModelRequest, small),
            "StreamChain": Method(self._stream_chain, node_pb2.ChainRequest, small, "stream_out"),
            "AddPeer": Method(self._add_peer, node_pb2.PeerRequest, small),
            "RemovePeer": Method(self._remove_peer, node_pb2.PeerRequest, small),
            "ListPeers": Method(self._list_peers, node_pb2.PeerRequest, small),
            "SetNetworkFault": Method(self._set_network_fault, node_pb2.NetworkFault, small),
            **self._extra_methods(),
        }

    def _rpc_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {name: self.gate.handler(name, method) for name, method in self._methods().items()},
        )

    @staticmethod
    def _sender(context: grpc.aio.ServicerContext) -> str:
        for key, value in context.invocation_metadata() or ():
            if key == SENDER_METADATA:
                return value
        return context.peer()

    async def _submit(self, event: Any, context: grpc.aio.ServicerContext) -> bytes:
        """Hands a record to the engine; a rejection scores whoever is to blame for it."""
        loopcpu.charge_to(self.dispatch.task_of_event[type(event)])
        loopcpu.moved(len(event.payload))
        try:
            self._handle(event)
            return ACK
        except RecordRejected as rejected:
            reason, detail, signer = rejected.reason, rejected.detail, rejected.signer
        # Answered outside the except block, with the event dropped: a caught exception's
        # traceback would keep the request's bytes alive until the garbage collector runs.
        del event
        now = time.time()
        self._penalize(context.peer(), reason, now)
        if signer is not None:
            self._penalize(generator_peer(signer), reason, now)
        await context.abort(grpc.StatusCode[reason.grpc_status], f"{reason.label}: {detail}")

    def _penalize(self, peer: str, reason: RejectReason, now: float) -> None:
        if self.admission.penalize(peer, reason, now):
            log.warning(
                "banned %s for %.0f s: its misbehaviour score passed %.0f (last: %s)",
                peer,
                self.limits.ban_seconds,
                self.limits.ban_score,
                reason.label,
            )
            self._sync_bans(now)

    def _sync_bans(self, now: float) -> None:
        """Banned generators reach the engine; scores and bans reach the metrics."""
        refused = frozenset(
            bytes.fromhex(peer.removeprefix(GENERATOR_PREFIX))
            for peer in self.admission.banned_peers(now)
            if peer.startswith(GENERATOR_PREFIX)
        )
        if refused != self.engine.state.refused:
            self._handle_quietly(GeneratorsRefused(refused))
        self.metrics.set_peer_scores(self.admission.scores(now), self.admission.banned_count(now))

    async def _submit_transaction(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """A model to evaluate, unless the node's ML queue or the caller's budget is spent: then
        refused before anything is verified, so a flood costs the node no more than this."""
        loopcpu.charge_to(self.dispatch.task_of_event[TransactionReceived])
        peer, now = context.peer(), time.time()
        if self._ml_pending >= self.limits.max_pending_ml:
            raise Refused(RejectReason.QUEUE_FULL, f"{self._ml_pending} ML jobs are queued")
        if not self.admission.can_evaluate(peer, now):
            raise Refused(
                RejectReason.EVALUATION_BUDGET,
                f"more than {self.limits.evaluations_per_minute:.0f} models a minute to evaluate",
            )
        pending = self._ml_pending
        ack = await self._submit(TransactionReceived(request, self._sender(context)), context)
        if self._ml_pending > pending:  # another node's model, seen first: one gossip hop
            self.admission.evaluated(peer, now, self._ml_pending - pending)
        return ack

    async def _inject(
        self, batches: AsyncIterator[node_pb2.SampleBatch], context: grpc.aio.ServicerContext
    ) -> node_pb2.InjectSummary:
        accepted = 0
        async for batch in batches:
            count = len(batch.samples)
            if count == 0:
                continue
            if any(len(sample.pixels) != IMAGE_PIXELS for sample in batch.samples):
                raise Refused(RejectReason.MALFORMED, f"a sample must have {IMAGE_PIXELS} pixels")
            pixels = b"".join(sample.pixels for sample in batch.samples)
            images = np.frombuffer(pixels, dtype=np.uint8).reshape(count, 28, 28)
            labels = np.fromiter((s.label for s in batch.samples), dtype=np.int64, count=count)
            if labels.max() > 9:
                raise Refused(RejectReason.MALFORMED, "a label above 9")
            self.collect(images, labels)
            accepted += count
            self.samples_injected += count
            self.metrics.samples_injected(count)
            self._handle_quietly(SamplesCollected(count))
        return node_pb2.InjectSummary(accepted=accepted)

    async def _status(
        self, request: node_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.NodeStatus:
        sent, received = self._transaction_counts()
        return node_pb2.NodeStatus(
            address=self.key.address,
            genesis_digest=self.genesis.digest,
            chain_height=self.store.height,
            local_accuracy=self.host.local_accuracy or 0.0,
            samples_collected=self.samples_injected,
            transactions_sent=sent,
            transactions_received=received,
            peers=list(self.engine.state.peers),
        )

    def _transaction_counts(self) -> tuple[int, int]:
        """(models this node created, new models it received), for the status RPC."""
        raise NotImplementedError

    async def _model(
        self, request: node_pb2.ModelRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.ModelWeights:
        """The model, unless the caller holds this version already: the orchestrator samples
        every node every few seconds, and 1.7 MB each time was most of an idle node's CPU."""
        version = self.model_version.current
        if request.known_version == version:
            return node_pb2.ModelWeights(
                genesis_digest=self.genesis.digest, version=version, unchanged=True
            )
        weights = await asyncio.wrap_future(self._ml.submit(self._observed_weights))
        return node_pb2.ModelWeights(
            genesis_digest=self.genesis.digest, weights=weights, version=version
        )

    def _observed_weights(self) -> bytes:
        """On the ML thread: the model for the orchestrator, which is the testbed's cost."""
        with self.profiler.measure("observe", "ml"):
            return self.host.weights()

    async def _stream_chain(
        self, request: node_pb2.ChainRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        start = min(max(1, request.from_height), self.store.height + 1)  # SQLite's int64
        for _, _, data in self.store.blocks(start):
            yield data

    def _set_peers(self, peers: tuple[str, ...]) -> node_pb2.PeerList:
        for peer in peers:
            if peer not in self._peers:
                self._peers[peer] = self._client(peer)
        for peer in set(self._peers) - set(peers):
            self._spawn(self._peers.pop(peer).close())
        self._handle_quietly(PeersChanged(peers))
        self.metrics.set_peers(peers)
        return node_pb2.PeerList(peers=list(peers))

    def _own_addresses(self) -> set[str]:
        port = self.port or self.config.port
        return {
            self.config.address,
            f"{self.config.listen}:{port}",
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"{socket.gethostname()}:{port}",
        }

    async def _add_peer(
        self, request: node_pb2.PeerRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.PeerList:
        check_peer_address(request.peer)
        if request.peer in self._own_addresses():
            raise Refused(RejectReason.BAD_PEER_ADDRESS, f"{request.peer} is this node itself")
        peers = self.engine.state.peers
        if request.peer in peers:
            raise Refused(
                RejectReason.BAD_PEER_ADDRESS, f"{request.peer} is a peer already", "ALREADY_EXISTS"
            )
        if len(peers) >= MAX_PEERS:
            raise Refused(RejectReason.BAD_PEER_ADDRESS, f"already {MAX_PEERS} peers")
        return self._set_peers((*peers, request.peer))

    async def _remove_peer(
        self, request: node_pb2.PeerRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.PeerList:
        if request.peer not in self.engine.state.peers:
            raise Refused(
                RejectReason.BAD_PEER_ADDRESS, f"{request.peer!r} is not a peer", "NOT_FOUND"
            )
        return self._set_peers(tuple(p for p in self.engine.state.peers if p != request.peer))

    async def _set_network_fault(
        self, request: node_pb2.NetworkFault, context: grpc.aio.ServicerContext
    ) -> node_pb2.NetworkFault:
        try:
            fault = NetworkFault.from_message(request)
        except ValueError as error:
            raise Refused(RejectReason.MALFORMED, str(error)) from None
        self.network_faults.fault = fault
        self.metrics.set_network_fault(fault.delay, fault.jitter, fault.loss, len(fault.cut))
        log.info("network fault now: %s", "none" if fault.healthy else fault)
        return fault.to_message()

    async def _list_peers(
        self, request: node_pb2.PeerRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.PeerList:
        return node_pb2.PeerList(peers=list(self.engine.state.peers))
