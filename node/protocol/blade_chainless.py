"""BLADE-FL without the chain: the rounds of the paper's own code (section 5), as an engine.

Two rules, as for every engine here. First, the rounds are BLADE-FL's, from blade_rounds.py
(where a round opens, when a lazy client copies); what is left out is all the chain adds: no
signatures, no pool records, no mining, no votes, no time but `lazy_wait`. A round closes at a
client once it holds every client's model of the round, its own included; it asks for their
average (AggregateRound, models in generator-address order, so every client averages the same
sequence) and opens the next. Second, the engine does not know where it runs; it speaks
BladeEngine's events and actions, so a host runs either one, and the difference in cost between
the two is the chain's.

Models travel framed with their generator's address and round (framing.py): rounds overlap, as
a client that closed round k trains k+1 while a peer still waits for the last model of k. Nothing
is validated beyond the framing, because only the simulator feeds this engine; a second model of
one generator in a round is a bug of the host or transport and raises ValueError.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from node.protocol.blade_rounds import BladeConfig, Phase, RoundEngine, maybe_copy, open_round
from node.protocol.events import (
    AggregateRound,
    BladeAction,
    BladeEvent,
    LocalModelReady,
    MessageKind,
    PeersChanged,
    PoolModel,
    SamplesCollected,
    Send,
    Tick,
    TransactionReceived,
)
from node.protocol.framing import frame_model, unframe_model


@dataclass
class ChainlessBladeState:
    peers: tuple[str, ...] = ()
    closed: int = 0  # rounds aggregated
    round: int = 0
    phase: Phase = Phase.WAITING_FOR_DATA
    samples: int = 0
    pool: dict[int, dict[bytes, bytes]] = field(default_factory=dict)  # round: generator: model
    first_peer_model_at: float | None = None
    counters: Counter[str] = field(default_factory=Counter)


class ChainlessBladeEngine(RoundEngine):
    """One client of the paper's BLADE-FL code; `address`, its ledger address, is its model id."""

    state: ChainlessBladeState

    def __init__(self, address: bytes, config: BladeConfig, *, peers: tuple[str, ...] = ()) -> None:
        self.address = address
        self.config = config
        self.state = ChainlessBladeState(peers=tuple(peers))

    def handle(self, event: BladeEvent, now: float) -> list[BladeAction]:
        state = self.state
        match event:
            case SamplesCollected(count):
                if not self._collected(count) or state.samples < self.config.dataset_size:
                    return []
                return self._open(state.closed + 1, now)
            case LocalModelReady(round, model):
                return self._on_local_model(round, model, now)
            case TransactionReceived(payload, _):
                return self._on_model(payload, now)
            case PeersChanged(peers):
                state.peers = tuple(peers)
                return []
            case Tick():
                return self._maybe_copy(now) if state.phase is Phase.COPYING else []
        raise TypeError(f"not an event of the chainless BLADE-FL engine: {event!r}")

    def _open(self, round: int, now: float) -> list[BladeAction]:
        return open_round(self.state, self.config, round, self._peer_models(round), now)

    def _maybe_copy(self, now: float) -> list[BladeAction]:
        return maybe_copy(self.state, self.config, self._peer_models(self.state.round), now)

    def _peer_models(self, round: int) -> list[bytes]:
        """The round's models while ours is not among them, in generator order."""
        pool = self.state.pool.get(round, {})
        return [pool[generator] for generator in sorted(pool)]

    def _on_local_model(self, round: int, model: bytes, now: float) -> list[BladeAction]:
        state = self.state
        if state.phase is not Phase.TRAINING or round != state.round:
            state.counters["local_models_late"] += 1
            return []
        state.pool.setdefault(round, {})[self.address] = model
        state.counters["models_created"] += 1
        state.counters["models_sent"] += len(state.peers)
        state.phase = Phase.COLLECTING
        payload = frame_model(self.address, model, round=round)
        return [Send(state.peers, MessageKind.TRANSACTION, payload), *self._maybe_close(now)]

    def _on_model(self, payload: bytes, now: float) -> list[BladeAction]:
        state = self.state
        framed = unframe_model(payload)
        if framed.round <= state.closed:
            raise ValueError(f"a model of round {framed.round}, which is closed here")
        pool = state.pool.setdefault(framed.round, {})
        if framed.generator == self.address or framed.generator in pool:
            raise ValueError(f"our own model, or a second one of a peer, in round {framed.round}")
        pool[framed.generator] = framed.model
        state.counters["models_received"] += 1
        if framed.round != state.round:
            return []
        if state.first_peer_model_at is None:
            state.first_peer_model_at = now
        if state.phase is Phase.COPYING:
            return self._maybe_copy(now)
        if state.phase is Phase.COLLECTING:
            return self._maybe_close(now)
        return []

    def _maybe_close(self, now: float) -> list[BladeAction]:
        state = self.state
        pool = state.pool.get(state.round, {})
        if len(pool) < self.config.clients:
            return []
        del state.pool[state.round]
        state.closed = state.round
        models = tuple(PoolModel(generator, b"", pool[generator]) for generator in sorted(pool))
        return [AggregateRound(state.round, models), *self._open(state.round + 1, now)]
