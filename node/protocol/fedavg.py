"""Synchronous federated averaging with one aggregator: FedAvg as a baseline without a chain.

Two rules, as for every engine here. First, every rule of the protocol is in this file: a client
opens a round as BLADE-FL's clients do (blade_rounds.py: only on its whole dataset; K rounds end
the run), trains `local_iterations` epochs from the global model and sends its model to the
aggregator only; the aggregator (node 0, the star's centre, a client too) closes a round once it
holds every client's model of it, or `round_timeout` after the first model of the round came in
(the missing ones are counted), asks its host for their average (AggregateRound, in generator
order) and, told the average (RoundAggregated), sends that one global model to every client.
A client adopts it (an AggregateRound of one model: the host's average of it is the model) and
opens the next round once its host holds it. So each round costs one upload per client and one
global model per client, FedAvg's wire cost, and nothing else. Second, the engine does not know
where it runs: it speaks BLADE-FL's events and actions (plus RoundAggregated), so BLADE-FL's ML
host (node/host/blade.py) serves it unchanged in a process and in the simulator.

Models come from a real network in a process, so everything received is checked before it
touches state, and each refusal is a RecordRejected with a named reason (node/ledger/errors.py),
which the service counts and answers: a frame that does not parse (`malformed`), another
experiment's (`genesis_mismatch`), the wrong size or non-finite weights
(`model_shape_mismatch`, `non_finite_weights`), a round that is not the one open
(`wrong_round`), a model from a node that is not a client of this aggregator or a global model
from a node that is not this client's aggregator (`wrong_creator`), a client's second model of
a round (`duplicate`), a generator banned for misbehaviour (`refused_generator`).

Clients are the aggregator's peers and a client's aggregator is its peer (`sender` is the
transport's name of the node, as `Send.to` names it): in a star that is exactly FedAvg's roles.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.validation import ValidationPolicy, check_model_bytes
from node.protocol.blade_rounds import Phase, RoundEngine, check_config, open_round
from node.protocol.events import (
    AggregateRound,
    FedAvgAction,
    FedAvgEvent,
    GeneratorsRefused,
    LocalModelReady,
    MessageKind,
    ModelBytes,
    PeersChanged,
    PoolModel,
    RoundAggregated,
    SamplesCollected,
    Send,
    Tick,
    TransactionReceived,
)
from node.protocol.framing import FramedModel, frame_experiment_model, unframe_experiment_model

__all__ = ["FedAvgConfig", "FedAvgEngine", "FedAvgState", "Phase"]


@dataclass(frozen=True)
class FedAvgConfig:
    """Protocol parameters; times are seconds of whatever clock the host passes as `now`."""

    clients: int  # the models a round waits for: every client that trains, the aggregator's too
    rounds: int  # K: communication rounds
    local_iterations: int  # local epochs per round
    dataset_size: int = 512  # samples a client collects before its first round
    round_timeout: float = 30.0  # after the round's first model, how long the aggregator waits
    trains: bool = True  # False: the node only receives the global model (an observer)
    max_message_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        check_config(
            "FedAvg",
            self,
            ("round_timeout", self.round_timeout > 0),
            ("max_message_bytes", self.max_message_bytes > 0),
        )

    @property
    def lazy(self) -> bool:
        """Never: a FedAvg client has no peer's model to copy. A free rider (behaviours lazy,
        duplication) trains nothing and its host sends the global model back instead."""
        return False


@dataclass
class FedAvgState:
    peers: tuple[str, ...] = ()  # the aggregator's: its clients; a client's: its aggregator
    closed: int = 0  # rounds whose global model this node holds (or is being made)
    round: int = 0  # the round this node trains in
    phase: Phase = Phase.WAITING_FOR_DATA
    samples: int = 0
    first_peer_model_at: float | None = None  # RoundState's; FedAvg's timer is first_model_at
    # The aggregator's models of round closed + 1, by sender ("" for its own): generator, model
    pool: dict[str, tuple[bytes, ModelBytes]] = field(default_factory=dict)
    first_model_at: float | None = None  # when the pool's first model came in
    refused: frozenset[bytes] = frozenset()
    counters: Counter[str] = field(default_factory=Counter)


OWN = ""  # the aggregator's own model in its pool: no transport name


class FedAvgEngine(RoundEngine):
    """One node of a FedAvg star: the aggregator (`aggregator=True`, node 0) or a client.

    `address` is the node's ledger address (its generator id in frames and in the order of a
    round's models); `genesis` names the experiment and the model's size.
    """

    state: FedAvgState

    def __init__(
        self,
        address: bytes,
        genesis_digest: bytes,
        config: FedAvgConfig,
        *,
        model_bytes: int,
        aggregator: bool,
        peers: tuple[str, ...] = (),
        closed: int = 0,
    ) -> None:
        """`closed`: the rounds whose global model the node holds already (a restarted node
        resumes from its checkpoint's round: the aggregator takes that round's successor's
        models, a client any later global model)."""
        self.address = address
        self.genesis_digest = genesis_digest
        self.config = config
        self.aggregator = aggregator
        self.policy = ValidationPolicy(
            genesis_digest,
            model_bytes // 4,
            max_message_bytes=config.max_message_bytes,
        )
        self.state = FedAvgState(peers=tuple(peers), closed=closed, round=closed)
        if closed >= config.rounds:
            self.state.phase = Phase.DONE

    def handle(self, event: FedAvgEvent, now: float) -> list[FedAvgAction]:
        state = self.state
        match event:
            case SamplesCollected(count):
                if not self._collected(count):
                    return []
                return self._open(state.closed + 1)
            case LocalModelReady(round, model):
                return self._on_local_model(round, model, now)
            case TransactionReceived(payload, sender):
                return self._on_message(payload, sender, now)
            case RoundAggregated(round, model):
                return self._on_aggregated(round, model)
            case PeersChanged(peers):
                state.peers = tuple(peers)
                return []
            case GeneratorsRefused(generators):
                state.refused = generators
                return []
            case Tick():
                return self._maybe_close(now) if self.aggregator else []
        raise TypeError(f"not an event of the FedAvg engine: {event!r}")

    # --- rounds ----------------------------------------------------------------------------------

    def _open(self, round: int) -> list[FedAvgAction]:
        """BLADE-FL's rule for a round (blade_rounds.open_round); an observer only waits."""
        state = self.state
        if self.config.trains or round > self.config.rounds:
            return list(open_round(state, self.config, round, (), 0.0))
        state.round = round
        state.phase = Phase.COLLECTING
        return []

    def _on_local_model(self, round: int, model: bytes, now: float) -> list[FedAvgAction]:
        state = self.state
        if state.phase is not Phase.TRAINING or round != state.round or round <= state.closed:
            state.counters["local_models_late"] += 1  # the round closed while we trained
            return []
        state.counters["models_created"] += 1
        state.phase = Phase.COLLECTING
        if self.aggregator:
            self._pool(OWN, self.address, model, now)
            return self._maybe_close(now)
        state.counters["models_sent"] += len(state.peers)
        payload = frame_experiment_model(self.genesis_digest, self.address, model, round=round)
        return [Send(state.peers, MessageKind.TRANSACTION, payload)]

    def _pool(self, sender: str, generator: bytes, model: ModelBytes, now: float) -> None:
        state = self.state
        state.pool[sender] = (generator, model)
        if state.first_model_at is None:
            state.first_model_at = now

    def _maybe_close(self, now: float) -> list[FedAvgAction]:
        """The aggregator closes round closed + 1 with every client's model, or at the timeout."""
        state = self.state
        if state.first_model_at is None or state.phase is Phase.AGGREGATING:
            return []
        everyone = len(state.pool) >= self.config.clients
        if not (everyone or now >= state.first_model_at + self.config.round_timeout):
            return []
        round = state.closed + 1
        state.counters["models_missing"] += max(self.config.clients - len(state.pool), 0)
        if state.phase is Phase.TRAINING:
            state.counters["rounds_closed_without_own_model"] += 1
        models = tuple(
            PoolModel(generator, b"", model)
            for generator, model in sorted(state.pool.values(), key=lambda item: item[0])
        )
        state.pool, state.first_model_at = {}, None
        state.closed = round
        state.phase = Phase.AGGREGATING
        state.counters["aggregations"] += 1
        return [AggregateRound(round, models)]

    def _on_aggregated(self, round: int, model: bytes) -> list[FedAvgAction]:
        """The host holds the global model of `round`: the aggregator sends it to every client,
        and every node opens the next round (or is done after K)."""
        state = self.state
        if round < state.closed:  # a later global model came while the host adopted this one
            state.counters["global_models_overtaken"] += 1
            return []
        if state.phase is not Phase.AGGREGATING or round != state.closed:
            raise ValueError(f"RoundAggregated({round}) while not aggregating round {round}")
        actions: list[FedAvgAction] = []
        if self.aggregator and state.peers:
            state.counters["global_models_sent"] += len(state.peers)
            payload = frame_experiment_model(self.genesis_digest, self.address, model, round=round)
            actions.append(Send(state.peers, MessageKind.TRANSACTION, payload))
        state.phase = Phase.WAITING_FOR_DATA  # until _open says otherwise
        return [*actions, *self._open(round + 1)]

    # --- what arrives ----------------------------------------------------------------------------

    def _on_message(self, payload: bytes, sender: str, now: float) -> list[FedAvgAction]:
        """Every check comes before any change of state (RecordRejected leaves it as it was)."""
        framed = self._checked(payload, sender)
        state = self.state
        if self.aggregator:
            self._pool(sender, framed.generator, framed.model, now)
            state.counters["models_received"] += 1
            return self._maybe_close(now)
        # A client adopts the global model: its average of the one model is the model.
        state.counters["global_models_received"] += 1
        state.closed = framed.round
        state.phase = Phase.AGGREGATING
        model = PoolModel(framed.generator, b"", framed.model)
        return [AggregateRound(framed.round, (model,))]

    def _checked(self, payload: bytes, sender: str) -> FramedModel:
        state = self.state
        if len(payload) > self.config.max_message_bytes:
            raise _rejected(RejectReason.MESSAGE_TOO_LARGE, f"{len(payload)} bytes")
        try:
            genesis, framed = unframe_experiment_model(payload)
        except ValueError as error:
            raise _rejected(RejectReason.MALFORMED, str(error)) from None
        if genesis != self.genesis_digest:
            raise _rejected(RejectReason.GENESIS_MISMATCH, "a model of another experiment")
        if framed.generator in state.refused:
            raise _rejected(RejectReason.REFUSED_GENERATOR, "its generator is banned here")
        if sender not in state.peers:
            role = "a client of this aggregator" if self.aggregator else "this client's aggregator"
            raise _rejected(RejectReason.WRONG_CREATOR, f"{sender!r} is not {role}")
        # The aggregator takes the open round's models only; a client any later global model,
        # so that one it lost (the aggregator closed that round without it) does not stall it.
        expected = state.closed + 1
        late_ok = not self.aggregator and framed.round > expected
        if (framed.round != expected and not late_ok) or framed.round > self.config.rounds:
            raise _rejected(
                RejectReason.WRONG_ROUND,
                f"a model of round {framed.round}; round {expected} is open here"
                if expected <= self.config.rounds
                else f"a model of round {framed.round}; all {self.config.rounds} are done",
            )
        if self.aggregator:
            if framed.generator == self.address:
                raise _rejected(RejectReason.WRONG_CREATOR, "a model framed as the aggregator's")
            if sender in state.pool or any(g == framed.generator for g, _ in state.pool.values()):
                raise _rejected(
                    RejectReason.DUPLICATE, f"a second model of one client in round {framed.round}"
                )
        check_model_bytes(framed.model, self.policy)  # size, then the one finiteness scan
        return framed


def _rejected(reason: RejectReason, detail: str) -> RecordRejected:
    return RecordRejected(reason, detail)
