"""Protocol engines wired together in one process: virtual time, in-memory transport, real ledger.

This is the seam the simulator builds on and what the engines' tests drive: messages are real
serialized records, blocks go to real chain stores, and each node's actions are carried out by
the same dispatcher a node process uses (node/host/dispatch.py); only the effects differ. ML runs
inline and takes no virtual time unless the dispatcher says how long it takes (BLADE-FL's alpha
per epoch). Events are processed in (time, order of scheduling) order, so a run is reproducible.

Every engine call and every piece of ML work is charged to a profiler by (task, category), the
tasks and categories a node's profiler uses, so a run reports the chain's share of the CPU the
way a node does.

Faults happen here as in a process, in virtual time: a node's network faults are the node's own
seeded `NetworkFaults` (node/service/netfault.py), applied to each message on the way out and on
the way in; a crashed node receives nothing (a message to it fails as a send would) until
`restart` hands it an engine rebuilt from its store, and what it had scheduled for itself before
the crash never arrives; a paused node holds what reaches it until it is resumed.

BLADE-FL's mining runs for real (the same `mine` as a node, at whatever difficulty the genesis
sets) and takes virtual time in proportion to the hashes it needed, at `hash_rate` per second, so
miners race as they would: the one that needed fewer hashes finds its block first.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.host.dispatch import (
    BladeDispatcher,
    BladeModelHost,
    DflDispatcher,
    DflModelHost,
    HostObserver,
)
from node.ledger.errors import RecordRejected
from node.ledger.pow import MAX_NONCE, mine
from node.ledger.store import ChainStore
from node.protocol.events import (
    BlockMined,
    ChainFetched,
    ConfirmationsReceived,
    DraftBlockReceived,
    FetchFailed,
    MessageKind,
    PeersChanged,
    PowBlockReceived,
    SamplesCollected,
    Tick,
    TransactionReceived,
    VoteReceived,
)
from node.service.netfault import NetworkFault, NetworkFaults
from node.service.profiler import Profiler
from proto.dfl.v1 import records_pb2 as pb

log = logging.getLogger(__name__)

_RECEIVED = {
    MessageKind.TRANSACTION: TransactionReceived,
    MessageKind.DRAFT_BLOCK: DraftBlockReceived,
    MessageKind.CONFIRMATIONS: ConfirmationsReceived,
    MessageKind.POW_BLOCK: PowBlockReceived,
    MessageKind.BLOCK_VOTE: VoteReceived,
}


@dataclass
class MemoryNode:
    name: str
    engine: Any  # a DFL or BLADE-FL engine, with or without the chain
    host: DflModelHost | BladeModelHost
    store: ChainStore | None = None
    observer: HostObserver | None = None
    epoch_seconds: float = 0.0  # BLADE-FL: virtual time per local epoch
    rejections: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    messages_sent: int = 0
    send_failures: int = 0  # messages lost to a fault or a crashed receiver (a failed send)
    fault_messages: Counter[str] = field(default_factory=Counter)  # "dropped", "delayed"
    status: str = "up"  # "down" (crashed) or "paused"
    incarnation: int = 0  # one more at every crash: what an earlier run scheduled is void
    peers: tuple[str, ...] = ()
    held: list[Any] = field(default_factory=list)  # events that reached it while paused
    # The dispatcher's class when the host's kind does not say (FedAvg runs BLADE-FL's host)
    dispatcher: type[BladeDispatcher] | None = None
    dispatch: DflDispatcher | BladeDispatcher = field(init=False, repr=False)
    network_faults: NetworkFaults = field(init=False, repr=False)


class MemoryEffects:
    """One node's effects on the in-memory network (node/host/dispatch.py: Effects)."""

    def __init__(self, network: MemoryNetwork, node: MemoryNode) -> None:
        self.network = network
        self.node = node

    def run_ml(
        self,
        task: str,
        work: Callable[[], Any],
        done: Callable[[Any], Any],
        failed: Any | None = None,
        *,
        virtual_seconds: float = 0.0,
    ) -> None:
        network = self.network
        try:
            with network.profiler.measure(task, "ml"):
                result = work()
        except Exception as error:
            if failed is None:
                raise  # a host bug: the simulation must not carry on without it
            log.warning("%s: ML work failed: %r", self.node.name, error)
            network.handle(self.node, failed)
            return
        event = done(result)
        if event is None:
            return
        if virtual_seconds > 0:
            network.schedule(
                network.now + virtual_seconds, self.node.name, event, self.node.incarnation
            )
        else:
            network.handle(self.node, event)

    def send(self, to: tuple[str, ...], kind: MessageKind, payload: bytes) -> None:
        node, network = self.node, self.network
        for peer in to:
            node.bytes_sent += len(payload)
            node.messages_sent += 1
            if (node.name, peer) in network.cut:
                continue
            held_back = network.transit(node, peer)
            if held_back is None:
                node.send_failures += 1
                continue
            event = _RECEIVED[kind](payload, node.name)
            network.schedule(network.now + network.latency + held_back, peer, event)

    def persist(self, block: pb.Block | pb.PowBlock) -> None:
        if self.node.store is not None:
            with self.network.profiler.measure("generate_block", "blockchain"):
                self.node.store.append(block)

    def persist_draft(self, block: pb.Block) -> None:
        if self.node.store is not None:
            with self.network.profiler.measure("generate_block", "blockchain"):
                self.node.store.save_draft(block)

    def mine(self, height: int, prefix: bytes, target: bytes) -> None:
        network = self.network
        with network.profiler.measure("mine", "blockchain"):
            result = mine(prefix, target, 0, MAX_NONCE)
        done = network.now + result.attempts / network.hash_rate
        event = BlockMined(height, result.nonce or 0)
        network.schedule(done, self.node.name, event, self.node.incarnation)

    def stop_mining(self, height: int) -> None:
        """The BlockMined already scheduled arrives late and the engine ignores it."""

    def truncate(self, height: int) -> None:
        if self.node.store is not None:
            self.node.store.truncate(height)

    def fetch_chain(self, peer: str) -> None:
        network = self.network
        fetched = network.fetch(self.node.name, peer)
        network.schedule(
            network.now + network.latency, self.node.name, fetched, self.node.incarnation
        )


class MemoryNetwork:
    """Nodes by name, a queue of timed events, and a transport with a fixed latency."""

    def __init__(
        self,
        *,
        latency: float = 0.01,
        tick_interval: float = 1.0,
        hash_rate: float = 1e4,
        seed: int = 0,
    ) -> None:
        self.nodes: dict[str, MemoryNode] = {}
        self.latency = latency
        self.tick_interval = tick_interval
        self.hash_rate = hash_rate
        self.profiler = Profiler()
        self.now = 0.0
        self.cut: set[tuple[str, str]] = set()  # (sender, receiver) links that drop everything
        self.seed = seed  # the experiment's: each node's network-fault draws derive from it
        self._next_tick = tick_interval
        # (time, order, node, event, incarnation): an incarnation that is no longer the node's
        # marks an event a crashed run of the node scheduled for itself
        self._queue: list[tuple[float, int, str, Any, int | None]] = []
        self._order = itertools.count()

    def add(self, node: MemoryNode) -> None:
        """Adds `node`; its index (for its seeded fault draws) is the order of adding."""

        def counted(direction: str, fate: str) -> None:
            node.fault_messages[fate] += 1

        node.network_faults = NetworkFaults(self.seed, len(self.nodes), on_fault=counted)
        self._wire(node)
        self.nodes[node.name] = node

    def _wire(self, node: MemoryNode) -> None:
        effects = MemoryEffects(self, node)
        if isinstance(node.host, BladeModelHost):
            node.dispatch = (node.dispatcher or BladeDispatcher)(
                node.host, effects, node.observer, epoch_seconds=node.epoch_seconds
            )
        else:
            node.dispatch = DflDispatcher(node.host, effects, node.observer)

    def connect(self, edges: Sequence[tuple[str, str]]) -> None:
        """Undirected edges; each node's peers become its neighbours' names."""
        peers: dict[str, list[str]] = {name: [] for name in self.nodes}
        for a, b in edges:
            peers[a].append(b)
            peers[b].append(a)
        for name, neighbours in peers.items():
            self.nodes[name].peers = tuple(sorted(neighbours))
            self.handle(self.nodes[name], PeersChanged(self.nodes[name].peers))

    def schedule(self, at: float, name: str, event: Any, incarnation: int | None = None) -> None:
        """`incarnation`: the node's own, for what it schedules for itself (lost if it crashes
        first); None for what reaches it from outside, whichever run of it is up then."""
        heapq.heappush(self._queue, (at, next(self._order), name, event, incarnation))

    # --- faults --------------------------------------------------------------------------------

    def transit(self, sender: MemoryNode, receiver: str) -> float | None:
        """Seconds a message is held back beyond the latency by the two ends' network faults,
        or None when it is lost: to a fault, or to a receiver that is down."""
        other = self.nodes[receiver]
        if other.status == "down":
            return None
        out = sender.network_faults.fate(receiver, "out")
        if out is None:
            return None
        into = other.network_faults.fate(sender.name, "in")
        return None if into is None else out + into

    def set_network_fault(self, name: str, fault: NetworkFault) -> None:
        """What the control call SetNetworkFault does to a node process."""
        self.nodes[name].network_faults.fault = fault

    def crash(self, name: str) -> None:
        """The node stops at once; it keeps its store on disk, the caller closes it."""
        node = self.nodes[name]
        node.status = "down"
        node.incarnation += 1
        node.held.clear()

    def restart(self, name: str, engine: Any, host: DflModelHost | BladeModelHost) -> None:
        """The node runs again with `engine` and `host`, rebuilt as a process rebuilds them
        (from its store and checkpoint), and learns its peers as a started node does."""
        node = self.nodes[name]
        node.engine, node.host, node.status = engine, host, "up"
        self._wire(node)
        self.handle(node, PeersChanged(node.peers))

    def pause(self, name: str) -> None:
        self.nodes[name].status = "paused"

    def resume(self, name: str) -> None:
        """Handles, now and in order, what reached the node while it was paused."""
        node = self.nodes[name]
        node.status = "up"
        held, node.held = node.held, []
        for event in held:
            self.handle(node, event)

    def run(self, until: float) -> None:
        """Processes every event up to `until`, with a Tick for every node each tick_interval."""
        while True:
            due = self._queue[0][0] if self._queue else float("inf")
            if min(due, self._next_tick) > until:
                break
            if self._next_tick <= due:
                self.now = self._next_tick
                for node in self.nodes.values():
                    if node.status == "up":  # a stopped process's clock does not fire
                        self.handle(node, Tick())
                self._next_tick += self.tick_interval
                continue
            self.now, _, name, event, incarnation = heapq.heappop(self._queue)
            node = self.nodes[name]
            if incarnation is None or incarnation == node.incarnation:
                self.handle(node, event)
        self.now = until

    def handle(self, node: MemoryNode, event: Any) -> None:
        """Feeds `node`'s engine and carries out what it asks; a rejected record is counted.
        A crashed node loses the event; a paused one holds it."""
        if node.status != "up":
            if node.status == "paused":
                node.held.append(event)
            return
        try:
            task = node.dispatch.task_of_event[type(event)]
            with self.profiler.measure(task, node.dispatch.engine_category(event)):
                actions = node.engine.handle(event, self.now)
        except RecordRejected as error:
            node.rejections[error.reason.label] += 1
            return
        for action in actions:
            node.dispatch(action)

    def fetch(self, name: str, peer: str) -> ChainFetched | FetchFailed:
        """What a peer's StreamChain and GetRoundModels would answer."""
        other = self.nodes[peer]
        if (
            (name, peer) in self.cut
            or (peer, name) in self.cut
            or other.store is None
            or other.status != "up"
            or self.transit(self.nodes[name], peer) is None
        ):
            return FetchFailed(peer)
        blocks = tuple(data for _, _, data in other.store.blocks())
        models = other.engine.round_models(other.store.height)
        return ChainFetched(
            peer, blocks, tuple(tx.SerializeToString(deterministic=True) for tx in models)
        )


def inject_steadily(
    network: MemoryNetwork, name: str, *, rate: float, batch: int, start: float, until: float
) -> None:
    """Schedules SamplesCollected(batch) for `name` so that `rate` samples arrive per second."""
    interval = batch / rate
    at = start
    while at <= until:
        network.schedule(at, name, SamplesCollected(batch))
        at += interval
