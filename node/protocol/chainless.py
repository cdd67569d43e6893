"""DFL without the ledger: the paper's own simulator (section 5.2), as an engine.

Two rules, as for every engine here. First, the protocol is DFL's: the paper's simulator
"removes the blockchain part", so a node trains, hands its model to its neighbours, each
neighbour measures it and buffers it, and a full buffer is aggregated, by the very rules the DFL
engine uses (dfl.py's `collect_samples` and `buffer_model`); nothing here decides when to train
or to aggregate. Second, the engine does not know where it runs; it speaks the DFL engine's
events and actions, so the simulator runs it in place of `DflEngine` (`dfl simulate --no-chain`)
with the same hosts, and the difference in cost between the two is the price of the chain.

Models travel as f32le bytes framed with their generator's address (framing.py) and no record
around them: nothing is signed, hashed or stored, and nothing is validated, because nothing but
the simulator ever feeds this engine. The framed address is what a receiver puts in `Evaluate`
and `BufferedModel`, so an aggregator keyed by generator sees the same ids with or without the
chain; the transport's `sender` is only the last hop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from node.ledger.validation import weights_are_finite
from node.protocol.dfl import DflConfig, buffer_model, collect_samples
from node.protocol.events import (
    BufferedModel,
    DflAction,
    DflEvent,
    Evaluate,
    EvaluationDone,
    EvaluationFailed,
    MessageKind,
    PeersChanged,
    SamplesCollected,
    Send,
    Tick,
    TrainingDone,
    TransactionReceived,
)
from node.protocol.framing import frame_model, unframe_model


@dataclass
class ChainlessState:
    peers: tuple[str, ...] = ()
    samples_pending: int = 0
    models_received: int = 0
    evaluations: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)  # generator, model
    buffer: list[BufferedModel] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)


class ChainlessDflEngine:
    """One node of the paper's simulator; `address` is its ledger address, its generator id."""

    def __init__(self, address: bytes, config: DflConfig) -> None:
        self.address = address
        self.config = config
        self.state = ChainlessState()

    def handle(self, event: DflEvent, now: float) -> list[DflAction]:
        state = self.state
        match event:
            case SamplesCollected(count):
                return collect_samples(state, self.config, count)
            case TrainingDone(model):
                state.counters["transactions_generated"] += 1
                if not state.peers:
                    return []
                state.counters["transactions_sent"] += len(state.peers)
                return [
                    Send(state.peers, MessageKind.TRANSACTION, frame_model(self.address, model))
                ]
            case TransactionReceived(payload, sender):
                framed = unframe_model(payload)
                # The one finiteness scan (the host reads the weights as checked), as a
                # chain's ledger does for a transaction; ValueError is this engine's refusal.
                if not weights_are_finite(framed.model):
                    raise ValueError("the model holds NaN or infinite weights")
                state.models_received += 1
                # No digest without a record: the key only has to tell evaluations apart.
                key = f"{sender}/{state.models_received}".encode()
                state.evaluations[key] = (framed.generator, framed.model)
                state.counters["transactions_received"] += 1
                return [Evaluate(key, framed.generator, framed.model)]
            case EvaluationDone(key, accuracy):
                generator, model = state.evaluations.pop(key)
                return buffer_model(
                    state, self.config, BufferedModel(key, generator, accuracy, model)
                )
            case EvaluationFailed(key):
                state.evaluations.pop(key, None)
                return []
            case PeersChanged(peers):
                state.peers = tuple(peers)
                return []
            case Tick():
                return []
        raise TypeError(f"not an event of the chainless DFL engine: {event!r}")
