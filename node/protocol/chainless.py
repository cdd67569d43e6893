"""DFL without the ledger: the paper's own simulator (section 5.2), as an engine.

The DFL paper's simulator "removes the blockchain part": a node trains, hands its model to its
neighbours, each neighbour measures it and buffers it, and a full buffer is aggregated. This
engine does exactly that and nothing more, speaking the DFL engine's events and actions, so the
simulator runs it in place of `DflEngine` (`dfl simulate --no-chain`) with the same hosts, and
the difference in cost between the two is the price of the chain.

Models travel as raw f32le bytes with no record around them; nothing is signed, hashed or
stored, and nothing is validated, because nothing but the simulator ever feeds this engine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from node.protocol.common import (
    MessageKind,
    PeersChanged,
    SamplesCollected,
    Send,
    Tick,
    TransactionReceived,
)
from node.protocol.dfl import (
    Action,
    Aggregate,
    BufferedModel,
    DflConfig,
    Evaluate,
    EvaluationDone,
    EvaluationFailed,
    Event,
    Train,
    TrainingDone,
)


@dataclass
class ChainlessState:
    peers: tuple[str, ...] = ()
    samples_pending: int = 0
    models_received: int = 0
    evaluations: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)  # id: sender, model
    buffer: list[BufferedModel] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)


class ChainlessDflEngine:
    """One node of the paper's simulator. `generator` is this node's id in BufferedModel."""

    def __init__(self, name: str, config: DflConfig) -> None:
        self.name = name
        self.config = config
        self.state = ChainlessState()

    @property
    def address(self) -> bytes:
        return self.name.encode()

    def handle(self, event: Event, now: float) -> list[Action]:
        state = self.state
        match event:
            case SamplesCollected(count):
                if not self.config.trains:
                    return []
                state.samples_pending += count
                trains = state.samples_pending // self.config.batch_size
                state.samples_pending -= trains * self.config.batch_size
                return [Train(self.config.batch_size) for _ in range(trains)]
            case TrainingDone(model):
                state.counters["transactions_generated"] += 1
                if not state.peers:
                    return []
                state.counters["transactions_sent"] += len(state.peers)
                return [Send(state.peers, MessageKind.TRANSACTION, model)]
            case TransactionReceived(model, sender):
                state.models_received += 1
                key = f"{sender}/{state.models_received}".encode()
                state.evaluations[key] = (sender, model)
                state.counters["transactions_received"] += 1
                return [Evaluate(key, sender.encode(), model)]
            case EvaluationDone(key, accuracy):
                sender, model = state.evaluations.pop(key)
                state.buffer.append(BufferedModel(key, sender.encode(), accuracy, model))
                if len(state.buffer) < self.config.fedavg_buffer:
                    return []
                models, state.buffer = tuple(state.buffer), []
                state.counters["aggregations"] += 1
                return [Aggregate(models)]
            case EvaluationFailed(key):
                state.evaluations.pop(key, None)
                return []
            case PeersChanged(peers):
                state.peers = tuple(peers)
                return []
            case Tick():
                return []
        raise TypeError(f"not an event of the chainless DFL engine: {event!r}")
