"""Every event and action the protocol engines speak, DFL, BLADE-FL and FedAvg alike.

Two rules. First, this module is the whole vocabulary between an engine and its host: an event
is something the host tells an engine (samples arrived, a record came in, ML work finished, time
passed), an action is something an engine asks of its host (train, evaluate, send, persist), and
neither kind exists anywhere else. Second, nothing here knows where it runs: a gRPC node, the
simulator and a test build and read the same values, with `now` in seconds of whatever clock the
host keeps.

The first section is what every protocol shares (a host feeds any engine samples, records,
peers and ticks, and sends what any asks to send the same way); then each protocol's own.
FedAvg speaks BLADE-FL's vocabulary (the same ML host serves both) plus one event of its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from proto.dfl.v1 import records_pb2 as pb

# Weights as raw float32 bytes. A received model is a view into the payload it came in
# (node/ledger/wire.py), already checked by the ledger, so that no one copies 1.7 MB to read it.
ModelBytes = bytes | memoryview


def to_ms(now: float) -> int:
    """Engines keep time in seconds; records carry integer milliseconds."""
    return round(now * 1000)


# --- shared by both protocols ------------------------------------------------------------------


@dataclass(frozen=True)
class SamplesCollected:
    count: int


@dataclass(frozen=True)
class TransactionReceived:
    """A model record (DFL transaction or BLADE-FL pool model) as wire bytes, from `sender`."""

    payload: bytes
    sender: str


@dataclass(frozen=True)
class PeersChanged:
    peers: tuple[str, ...]


@dataclass(frozen=True)
class GeneratorsRefused:
    """Generators whose records the node now refuses outright (banned for misbehaviour by the
    service, node/service/admission.py): the engine checks before verifying anything."""

    generators: frozenset[bytes]


@dataclass(frozen=True)
class Tick:
    pass


class MessageKind(enum.Enum):
    """What a Send carries; each kind is one RPC of the node service."""

    TRANSACTION = "transaction"
    DRAFT_BLOCK = "draft_block"
    CONFIRMATIONS = "confirmations"
    POW_BLOCK = "pow_block"
    BLOCK_VOTE = "block_vote"


@dataclass(frozen=True)
class Send:
    to: tuple[str, ...]
    kind: MessageKind
    payload: bytes


# --- DFL events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingDone:
    """The host finished a Train action; `model` is the raw f32le weights to send."""

    model: bytes


@dataclass(frozen=True)
class EvaluationDone:
    transaction_digest: bytes
    accuracy: float


@dataclass(frozen=True)
class EvaluationFailed:
    """The host could not evaluate (e.g. no samples of its own yet): no receipt is written."""

    transaction_digest: bytes


@dataclass(frozen=True)
class DraftBlockReceived:
    payload: bytes
    sender: str


@dataclass(frozen=True)
class ConfirmationsReceived:
    payload: bytes
    sender: str


DflEvent = (
    SamplesCollected
    | TrainingDone
    | TransactionReceived
    | EvaluationDone
    | EvaluationFailed
    | DraftBlockReceived
    | ConfirmationsReceived
    | PeersChanged
    | GeneratorsRefused
    | Tick
)


# --- DFL actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Train:
    """Run one training step on `batch_size` collected samples, then report TrainingDone."""

    batch_size: int


@dataclass(frozen=True)
class Evaluate:
    """Measure this model's accuracy on the node's own samples, then report EvaluationDone."""

    transaction_digest: bytes
    generator: bytes
    model: ModelBytes
    created_at: float | None = None  # the generator's signed create time: the gossip latency


@dataclass(frozen=True)
class BufferedModel:
    transaction_digest: bytes
    generator: bytes
    accuracy: float
    model: ModelBytes


@dataclass(frozen=True)
class Aggregate:
    """The FedAvg buffer is full: merge these received models into the node's model."""

    models: tuple[BufferedModel, ...]


@dataclass(frozen=True)
class PersistDraft:
    """Keep this signed draft until its block is persisted. It comes before the Send of the
    draft, so a node restarted after sending it finalizes this draft (its neighbours hold its
    signature) instead of signing a different block at the same height."""

    block: pb.Block


@dataclass(frozen=True)
class PersistBlock:
    block: pb.Block


DflAction = Train | Send | Evaluate | Aggregate | PersistDraft | PersistBlock


# --- BLADE-FL events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModelReady:
    """The host trained (or, for a lazy client, copied) its model of `round`: raw f32le weights."""

    round: int
    model: bytes


@dataclass(frozen=True)
class BlockMined:
    height: int
    nonce: int


@dataclass(frozen=True)
class PowBlockReceived:
    payload: bytes
    sender: str


@dataclass(frozen=True)
class VoteReceived:
    payload: bytes
    sender: str


@dataclass(frozen=True)
class ChainFetched:
    """What FetchChain brought: the peer's blocks from height 1 and its last round's pool."""

    peer: str
    blocks: tuple[bytes, ...]
    models: tuple[bytes, ...]


@dataclass(frozen=True)
class FetchFailed:
    peer: str


BladeEvent = (
    SamplesCollected
    | LocalModelReady
    | TransactionReceived
    | BlockMined
    | PowBlockReceived
    | VoteReceived
    | ChainFetched
    | FetchFailed
    | PeersChanged
    | GeneratorsRefused
    | Tick
)


# --- BLADE-FL actions --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainLocal:
    """Train `iterations` local epochs from the current global model; report LocalModelReady."""

    round: int
    iterations: int


@dataclass(frozen=True)
class Plagiarize:
    """A lazy client's round: copy one of these peer models, add noise; report LocalModelReady."""

    round: int
    models: tuple[bytes, ...]


@dataclass(frozen=True)
class Mine:
    """Search nonces for this header prefix until one hashes below `target` (BlockMined)."""

    height: int
    prefix: bytes
    target: bytes


@dataclass(frozen=True)
class StopMining:
    height: int


@dataclass(frozen=True)
class PoolModel:
    """One model of a round; `transaction_digest` is empty where no record carried it."""

    generator: bytes
    transaction_digest: bytes
    model: ModelBytes


@dataclass(frozen=True)
class AggregateRound:
    """Block `round` is appended: average its models into the global model (paper step 6)."""

    round: int
    models: tuple[PoolModel, ...]


@dataclass(frozen=True)
class PersistPowBlock:
    block: pb.PowBlock


@dataclass(frozen=True)
class TruncateChain:
    """Drop every stored block above `height`: the client is switching to a longer fork."""

    height: int


@dataclass(frozen=True)
class FetchChain:
    """Ask `peer` for its chain from height 1 and its last round's models (ChainFetched)."""

    peer: str


BladeAction = (
    TrainLocal
    | Plagiarize
    | Mine
    | StopMining
    | Send
    | AggregateRound
    | PersistPowBlock
    | TruncateChain
    | FetchChain
)


# --- FedAvg events (its actions are BLADE-FL's: TrainLocal, AggregateRound, Send) --------------


@dataclass(frozen=True)
class RoundAggregated:
    """The host answered AggregateRound: `model` (raw f32le) is the global model of `round`.

    BLADE-FL's clients each average the block themselves and need nothing back; FedAvg's
    aggregator must send the one average to every client, so the engine has to hear it."""

    round: int
    model: bytes


FedAvgEvent = (
    SamplesCollected
    | LocalModelReady
    | TransactionReceived
    | RoundAggregated
    | PeersChanged
    | GeneratorsRefused
    | Tick
)
FedAvgAction = TrainLocal | Send | AggregateRound
