"""Carrying out an engine's actions: which host call answers which action, once per protocol.

An engine returns actions; something must turn each into work and the work's result into the
next event. That mapping is protocol knowledge (a Train is answered by TrainingDone with the
host's model, a failed evaluation by EvaluationFailed), and it is the same in a node process and
in the simulator, so it lives here. What differs between runtimes is only how the work runs and
how messages travel, behind `Effects`: a node runs ML on a worker thread and sends over gRPC,
the in-memory network runs ML inline and delivers in virtual time.

FedAvg has no dispatcher of its own making: its engine speaks BLADE-FL's actions to BLADE-FL's
host, and FedAvgDispatcher differs only in telling the engine the global model an aggregation
made (RoundAggregated), in its tasks, and in charging no engine work to the chain it lacks.

A `HostObserver` hears of finished ML work (a node updates its metrics and rounds.jsonl, the
simulator records reputations); it never changes what the engine is told.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from node.host.resemblance import Resemblance
from node.protocol.events import (
    Aggregate,
    AggregateRound,
    BlockMined,
    BufferedModel,
    ChainFetched,
    ConfirmationsReceived,
    DraftBlockReceived,
    Evaluate,
    EvaluationDone,
    EvaluationFailed,
    FetchChain,
    FetchFailed,
    GeneratorsRefused,
    LocalModelReady,
    Mine,
    PeersChanged,
    PersistBlock,
    PersistDraft,
    PersistPowBlock,
    Plagiarize,
    PoolModel,
    PowBlockReceived,
    RoundAggregated,
    SamplesCollected,
    Send,
    StopMining,
    Tick,
    Train,
    TrainingDone,
    TrainLocal,
    TransactionReceived,
    TruncateChain,
    VoteReceived,
)
from proto.dfl.v1 import records_pb2 as pb

T = TypeVar("T")


@runtime_checkable
class DflModelHost(Protocol):
    """What a DFL engine's actions need of the ML (node/host/dfl.py's DflHost, or a test's)."""

    def train(self, batch_size: int) -> bytes: ...

    def evaluate(self, model: bytes) -> float: ...

    def aggregate(self, models: Sequence[BufferedModel]) -> Mapping[str, float] | None: ...


@runtime_checkable
class BladeModelHost(Protocol):
    """What a BLADE-FL engine's actions need of the ML (node/host/blade.py's BladeHost)."""

    def train_local(self, round: int, iterations: int) -> bytes: ...

    def plagiarize(self, round: int, models: Sequence[bytes]) -> bytes: ...

    def aggregate_round(self, round: int, models: Sequence[PoolModel]) -> Any: ...

    def weights(self) -> bytes:
        """The global model, raw f32le: what FedAvg's aggregator sends its clients."""
        ...


class Effects(Protocol):
    """How one runtime runs work and moves messages for one node."""

    def run_ml(
        self,
        task: str,
        work: Callable[[], T],
        done: Callable[[T], Any],
        failed: Any | None = None,
        *,
        virtual_seconds: float = 0.0,
    ) -> None:
        """Runs `work` as ML of profiler task `task`; feeds the engine `done(result)` unless it
        is None, or `failed` if the work raised. `virtual_seconds` is how long the work takes
        in a simulated clock (BLADE-FL's alpha per epoch); real runtimes ignore it."""

    def send(self, to: tuple[str, ...], kind: Any, payload: bytes) -> None: ...

    def persist(self, block: pb.Block | pb.PowBlock) -> None: ...


class DflEffects(Effects, Protocol):
    """What DFL adds: keeping the draft it signed until the block is persisted."""

    def persist_draft(self, block: pb.Block) -> None:
        """Keeps a signed draft durably before returning: the engine sends the draft next, and
        a restarted node must find it (ChainStore.save_draft)."""


class BladeEffects(Effects, Protocol):
    """What BLADE-FL adds: mining, and rewinding or catching up the chain."""

    def mine(self, height: int, prefix: bytes, target: bytes) -> None: ...

    def stop_mining(self, height: int) -> None: ...

    def truncate(self, height: int) -> None: ...

    def fetch_chain(self, peer: str) -> None: ...


class HostObserver:
    """Hears of finished ML work; the default hears nothing."""

    def trained(self) -> None:
        """A training step finished (the host's local accuracy may have changed)."""

    def aggregated(
        self, models: Sequence[BufferedModel], reputation: Mapping[str, float] | None
    ) -> None:
        """Received models were merged; `reputation` is the host's after the merge (None for a
        host without reputations)."""

    def round_aggregated(
        self, round: int, models: Sequence[PoolModel], found: Sequence[Resemblance]
    ) -> None:
        """A BLADE-FL block's models became the global model."""


# The profiler task (the DFL paper's Tables 4 and 6) that handling each event is charged to.
DFL_TASK_OF_EVENT: dict[type, str] = {
    SamplesCollected: "generate_transaction",
    TrainingDone: "generate_transaction",
    TransactionReceived: "receive_transaction",
    EvaluationDone: "receive_transaction",
    EvaluationFailed: "receive_transaction",
    DraftBlockReceived: "generate_block",
    ConfirmationsReceived: "generate_block",
    Tick: "generate_block",
    PeersChanged: "other",
    GeneratorsRefused: "other",
}
BLADE_TASK_OF_EVENT: dict[type, str] = {
    SamplesCollected: "train",
    LocalModelReady: "train",  # signing and sending the model
    TransactionReceived: "verify_block",  # checking a pool model the block will hold
    BlockMined: "mine",
    PowBlockReceived: "verify_block",
    VoteReceived: "verify_block",
    ChainFetched: "verify_block",
    FetchFailed: "other",
    Tick: "mine",  # a tick starts mining once the collection times out
    PeersChanged: "other",
    GeneratorsRefused: "other",
}

# FedAvg: `aggregate` is its rounds' coordination (taking in models, the round timeout, sending
# the global model); the averaging itself is `update_model`, as for BLADE-FL's blocks.
FEDAVG_TASK_OF_EVENT: dict[type, str] = {
    SamplesCollected: "train",
    LocalModelReady: "train",  # framing and sending the client's model
    TransactionReceived: "aggregate",  # a client's model at the aggregator, the global at a client
    RoundAggregated: "aggregate",  # sending the global model, opening the next round
    Tick: "aggregate",  # the round timeout
    PeersChanged: "other",
    GeneratorsRefused: "other",
}


# Handling these is the engine's learning state (counting samples toward the next training),
# not ledger work: charged to "ml". Every other event's handling is "blockchain".
LEARNING_EVENTS: frozenset[type] = frozenset({SamplesCollected})


def engine_category(event: object) -> str:
    """The profiler category of an engine's handling of `event`, in every runtime."""
    return "ml" if type(event) in LEARNING_EVENTS else "blockchain"


# FedAvg's engine keeps no ledger: what it does is learning bookkeeping (samples, the round's
# timer) or moving models (framing, checking what came in, sending): "ml" or "network", never
# "blockchain", so its blockchain CPU is 0 by construction.
FEDAVG_LEARNING_EVENTS: frozenset[type] = frozenset({SamplesCollected, Tick})


def fedavg_engine_category(event: object) -> str:
    return "ml" if type(event) in FEDAVG_LEARNING_EVENTS else "network"


class DflDispatcher:
    """DFL's actions for one node: `dispatcher(action)` for each action the engine returns."""

    task_of_event = DFL_TASK_OF_EVENT
    engine_category = staticmethod(engine_category)  # the category of the engine's handling

    def __init__(
        self, host: DflModelHost, effects: DflEffects, observer: HostObserver | None = None
    ) -> None:
        self.host = host
        self.effects = effects
        self.observer = observer or HostObserver()

    def __call__(self, action: Any) -> None:
        host, effects = self.host, self.effects
        match action:
            case Train(batch_size):
                effects.run_ml(
                    "generate_transaction", lambda: host.train(batch_size), self._trained
                )
            case Evaluate(digest, _, model):
                effects.run_ml(
                    "receive_transaction",
                    lambda: host.evaluate(model),
                    lambda accuracy: EvaluationDone(digest, accuracy),
                    failed=EvaluationFailed(digest),
                )
            case Aggregate(models):
                effects.run_ml(
                    "update_model",
                    lambda: host.aggregate(models),
                    lambda reputation: self.observer.aggregated(models, reputation),
                )
            case Send(to, kind, payload):
                effects.send(to, kind, payload)
            case PersistDraft(block):
                effects.persist_draft(block)
            case PersistBlock(block):
                effects.persist(block)
            case _:
                raise TypeError(f"not a DFL action: {action!r}")

    def _trained(self, model: bytes) -> TrainingDone:
        self.observer.trained()
        return TrainingDone(model)


class BladeDispatcher:
    """BLADE-FL's actions for one client."""

    task_of_event = BLADE_TASK_OF_EVENT
    engine_category = staticmethod(engine_category)

    def __init__(
        self,
        host: BladeModelHost,
        effects: BladeEffects,
        observer: HostObserver | None = None,
        *,
        epoch_seconds: float = 0.0,
    ) -> None:
        self.host = host
        self.effects = effects
        self.observer = observer or HostObserver()
        self.epoch_seconds = epoch_seconds  # virtual time per local epoch (the simulator's alpha)

    def __call__(self, action: Any) -> None:
        host, effects = self.host, self.effects
        match action:
            case TrainLocal(round, iterations):
                effects.run_ml(
                    "train",
                    lambda: host.train_local(round, iterations),
                    lambda model: LocalModelReady(round, model),
                    virtual_seconds=iterations * self.epoch_seconds,
                )
            case Plagiarize(round, models):
                effects.run_ml(
                    "train",
                    lambda: host.plagiarize(round, models),
                    lambda model: LocalModelReady(round, model),
                )
            case AggregateRound(round, models):
                effects.run_ml(
                    "update_model",
                    lambda: host.aggregate_round(round, models),
                    lambda found: self.observer.round_aggregated(round, models, found or ()),
                )
            case Mine(height, prefix, target):
                effects.mine(height, prefix, target)
            case StopMining(height):
                effects.stop_mining(height)
            case Send(to, kind, payload):
                effects.send(to, kind, payload)
            case PersistPowBlock(block):
                effects.persist(block)
            case TruncateChain(height):
                effects.truncate(height)
            case FetchChain(peer):
                effects.fetch_chain(peer)
            case _:
                raise TypeError(f"not a BLADE-FL action: {action!r}")


class FedAvgDispatcher(BladeDispatcher):
    """FedAvg's actions for one node, on BLADE-FL's host: the same training and averaging, and
    the engine hears each aggregation's global model (RoundAggregated) to send or adopt it."""

    task_of_event = FEDAVG_TASK_OF_EVENT
    engine_category = staticmethod(fedavg_engine_category)

    def __call__(self, action: Any) -> None:
        match action:
            case AggregateRound(round, models):
                host = self.host
                self.effects.run_ml(
                    "update_model",
                    lambda: (host.aggregate_round(round, models), host.weights()),
                    lambda done: self._aggregated(round, models, *done),
                )
            case TrainLocal() | Send():
                super().__call__(action)
            case _:  # the chain's actions (mining, blocks) and copying a peer's model
                raise TypeError(f"not a FedAvg action: {action!r}")

    def _aggregated(
        self, round: int, models: Sequence[PoolModel], found: Any, weights: bytes
    ) -> RoundAggregated:
        self.observer.round_aggregated(round, models, found or ())
        return RoundAggregated(round, weights)
