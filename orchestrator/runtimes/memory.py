"""Protocol engines wired together in one process: virtual time, in-memory transport, real ledger.

This is the seam the simulator builds on and what the engines' tests drive: messages are real
serialized records, blocks go to real chain stores, and the only thing a host supplies is the ML
(a ModelHost for DFL, a RoundHost for BLADE-FL). Events are processed in (time, order of
scheduling) order, so a run is reproducible.

BLADE-FL's mining runs for real (the same `mine` as a node, at whatever difficulty the genesis
sets) and takes virtual time in proportion to the hashes it needed, at `hash_rate` per second, so
miners race as they would: the one that needed fewer hashes finds its block first.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from node.ledger.errors import RecordRejected
from node.ledger.pow import MAX_NONCE, mine
from node.ledger.store import ChainStore
from node.protocol import blade
from node.protocol.dfl import (
    Action,
    Aggregate,
    BufferedModel,
    ConfirmationsReceived,
    DflEngine,
    DraftBlockReceived,
    Evaluate,
    EvaluationDone,
    Event,
    MessageKind,
    PeersChanged,
    PersistBlock,
    SamplesCollected,
    Send,
    Tick,
    Train,
    TrainingDone,
    TransactionReceived,
)

_RECEIVED = {
    MessageKind.TRANSACTION: TransactionReceived,
    MessageKind.DRAFT_BLOCK: DraftBlockReceived,
    MessageKind.CONFIRMATIONS: ConfirmationsReceived,
    MessageKind.POW_BLOCK: blade.PowBlockReceived,
    MessageKind.BLOCK_VOTE: blade.VoteReceived,
}


class ModelHost(Protocol):
    """The ML a node's engine asks for; the engine never sees anything but weight bytes."""

    def train(self, batch_size: int) -> bytes: ...

    def evaluate(self, model: bytes) -> float: ...

    def aggregate(self, models: Sequence[BufferedModel]) -> None: ...


class RoundHost(Protocol):
    """The ML a BLADE-FL client's engine asks for."""

    def train_local(self, round: int, iterations: int) -> bytes: ...

    def plagiarize(self, round: int, models: Sequence[bytes]) -> bytes: ...

    def aggregate_round(self, round: int, models: Sequence[blade.PoolModel]) -> None: ...


@dataclass
class MemoryNode:
    name: str
    engine: DflEngine | blade.BladeEngine
    host: ModelHost | RoundHost
    store: ChainStore | None = None
    rejections: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    messages_sent: int = 0


class MemoryNetwork:
    """Nodes by name, a queue of timed events, and a transport with a fixed latency."""

    def __init__(
        self, *, latency: float = 0.01, tick_interval: float = 1.0, hash_rate: float = 1e4
    ) -> None:
        self.nodes: dict[str, MemoryNode] = {}
        self.latency = latency
        self.tick_interval = tick_interval
        self.hash_rate = hash_rate
        self.now = 0.0
        self.cut: set[tuple[str, str]] = set()  # (sender, receiver) links that drop everything
        self._next_tick = tick_interval
        self._queue: list[tuple[float, int, str, Event]] = []
        self._order = itertools.count()

    def add(self, node: MemoryNode) -> None:
        self.nodes[node.name] = node

    def connect(self, edges: Sequence[tuple[str, str]]) -> None:
        """Undirected edges; each node's peers become its neighbours' names."""
        peers: dict[str, list[str]] = {name: [] for name in self.nodes}
        for a, b in edges:
            peers[a].append(b)
            peers[b].append(a)
        for name, neighbours in peers.items():
            self._handle(self.nodes[name], PeersChanged(tuple(sorted(neighbours))))

    def schedule(self, at: float, name: str, event: Event) -> None:
        heapq.heappush(self._queue, (at, next(self._order), name, event))

    def run(self, until: float) -> None:
        """Processes every event up to `until`, with a Tick for every node each tick_interval.

        Before the clock moves on, `settle` runs: a host that defers work (the simulator batches
        the evaluations of one instant) hands its results back there, at the same `now`.
        """
        while True:
            due = self._queue[0][0] if self._queue else float("inf")
            if due > self.now and self.settle():
                continue
            if min(due, self._next_tick) > until:
                break
            if self._next_tick <= due:
                self.now = self._next_tick
                for node in self.nodes.values():
                    self._handle(node, Tick())
                self._next_tick += self.tick_interval
                continue
            self.now, _, name, event = heapq.heappop(self._queue)
            self._handle(self.nodes[name], event)
        self.now = until

    def settle(self) -> bool:
        """Work deferred to the end of the current instant; True if it scheduled or handled any."""
        return False

    def _handle(self, node: MemoryNode, event: Event) -> None:
        try:
            actions = self._engine_actions(node, event)
        except RecordRejected as error:
            node.rejections[error.reason.label] += 1
            return
        for action in actions:
            self._carry_out(node, action)

    def _engine_actions(self, node: MemoryNode, event: Event) -> list[Action]:
        return node.engine.handle(event, self.now)  # type: ignore[arg-type, return-value]

    def _carry_out(self, node: MemoryNode, action: Action) -> None:
        match action:
            case Train(batch_size):
                self._handle(node, TrainingDone(node.host.train(batch_size)))
            case Evaluate():
                self._evaluate(node, action)
            case Send(to, kind, payload):
                for peer in to:
                    node.bytes_sent += len(payload)
                    node.messages_sent += 1
                    if (node.name, peer) in self.cut:
                        continue
                    event = _RECEIVED[kind](payload, node.name)
                    self.schedule(self.now + self.latency, peer, event)
            case Aggregate(models):
                node.host.aggregate(models)
            case PersistBlock(block) | blade.PersistPowBlock(block):
                if node.store is not None:
                    node.store.append(block)
            case _:
                self._carry_out_round_action(node, action)

    def _carry_out_round_action(self, node: MemoryNode, action: blade.Action) -> None:
        host = node.host
        match action:
            case blade.TrainLocal():
                self._train_local(node, action)
            case blade.Plagiarize(round, models):
                copied = host.plagiarize(round, models)
                self._handle(node, blade.LocalModelReady(round, copied))
            case blade.Mine(height, prefix, target):
                result = mine(prefix, target, 0, MAX_NONCE)
                done = self.now + result.attempts / self.hash_rate
                self.schedule(done, node.name, blade.BlockMined(height, result.nonce or 0))
            case blade.StopMining():
                pass  # the BlockMined already scheduled arrives late and is ignored
            case blade.AggregateRound(round, models):
                host.aggregate_round(round, models)
            case blade.TruncateChain(height):
                if node.store is not None:
                    node.store.truncate(height)
            case blade.FetchChain(peer):
                self.schedule(self.now + self.latency, node.name, self._fetch(node.name, peer))

    def _evaluate(self, node: MemoryNode, action: Evaluate) -> None:
        """Inline by default; the simulator overrides this to batch evaluations."""
        accuracy = node.host.evaluate(action.model)
        self._handle(node, EvaluationDone(action.transaction_digest, accuracy))

    def _train_local(self, node: MemoryNode, action: blade.TrainLocal) -> None:
        """Inline and instant by default; the simulator batches clients and charges alpha."""
        trained = node.host.train_local(action.round, action.iterations)
        self._handle(node, blade.LocalModelReady(action.round, trained))

    def _fetch(self, name: str, peer: str) -> blade.ChainFetched | blade.FetchFailed:
        """What a peer's StreamChain and GetRoundModels would answer."""
        other = self.nodes[peer]
        if (name, peer) in self.cut or (peer, name) in self.cut or other.store is None:
            return blade.FetchFailed(peer)
        assert isinstance(other.engine, blade.BladeEngine)
        blocks = tuple(data for _, _, data in other.store.blocks())
        models = other.engine.round_models(other.store.height)
        return blade.ChainFetched(
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
