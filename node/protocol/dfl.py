"""The DFL protocol engine (paper section 4.1), sans-IO.

Two rules, after h11's state machine. First, every DFL protocol rule lives in this file: when to
train, what a transaction and a receipt are worth, when to forward, when to draft and finalize a
block. Second, the engine does not know where it runs: it never touches a socket, a thread, a
clock or a file. The host (a gRPC node, the simulator, a test) feeds it events with the current
time and carries out the actions it returns, including the ML work: the engine asks for a
training step or an evaluation and is told the result later, so a node can run the model off its
event loop and the simulator can run it inline.

Routing. A receiver evaluates a new transaction on its own samples, appends its signed receipt
and sends the transaction back to the peer it came from (so receipts find their way to the
generator) and, while the receipt's `received_at_ttl` (eq. 1) is above zero, on to its other
neighbours. A node that sees a known transaction with receipts it had not seen relays it one step
back along the way it first came. Copies sent back travel without the weights, which the nodes
upstream already have. The paper's nodes send every copy, weights and all, to every neighbour,
where all but the generator drop it as a duplicate; sending receipts back along the path delivers
the same receipts with a fraction of the bytes.

Blocks. An own transaction is settled once every neighbour has sent its receipt (with ttl 1, when
no one else can) or `receipt_wait` has passed; settled transactions without a single receipt
prove nothing and are dropped. With `transactions_per_block` settled ones the generator drafts a
block, asks the host to keep it (PersistDraft) and then sends it to its neighbours, which confirm
the receipts they wrote, once each. An engine built with a kept draft resumes it, so a restarted
node never signs a second, different draft at a height it already signed one for. The draft
finalizes at once when every receipt a neighbour wrote is confirmed; otherwise at the first tick
at least `quorum_grace` after the draft at which the confirmed fraction reaches the quorum (so a
neighbour that is merely slower than the others still gets its confirmations in), or at the
timeout, which is recorded.

Learning. Both DFL engines, this one and the chainless one (chainless.py), train once per full
batch of collected samples and aggregate once `fedavg_buffer` evaluated models are buffered;
those two rules are `collect_samples` and `buffer_model` below, the only place they exist.

Anything received that fails validation raises RecordRejected before any state changes.
"""

from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from node.ledger import records
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.hashing import digest_message
from node.ledger.keys import NodeKey
from node.ledger.validation import (
    ValidationPolicy,
    check_model_bytes,
    decode,
    decode_transaction,
    validate_confirmation,
    validate_draft_block,
    validate_transaction,
)
from node.ledger.wire import join_model
from node.protocol.events import (
    Aggregate,
    BufferedModel,
    ConfirmationsReceived,
    DflAction,
    DflEvent,
    DraftBlockReceived,
    Evaluate,
    EvaluationDone,
    EvaluationFailed,
    GeneratorsRefused,
    MessageKind,
    ModelBytes,
    PeersChanged,
    PersistBlock,
    PersistDraft,
    SamplesCollected,
    Send,
    Tick,
    Train,
    TrainingDone,
    TransactionReceived,
    to_ms,
)
from node.protocol.memory import ExpiringMemory
from proto.dfl.v1 import records_pb2 as pb

__all__ = ["DflConfig", "DflEngine", "DflState", "LearningState", "buffer_model", "collect_samples"]


@dataclass(frozen=True)
class DflConfig:
    """Protocol parameters; times are seconds of whatever clock the host passes as `now`."""

    batch_size: int = 64
    fedavg_buffer: int = 8
    transactions_per_block: int = 12
    ttl: int = 1
    transaction_lifetime: float = 120.0
    receipt_wait: float = 10.0
    confirmation_quorum: float = 0.6
    quorum_grace: float = 2.0  # once at the quorum, how long a draft still waits for the rest
    confirmation_timeout: float = 10.0
    confirmation_window: float = 900.0  # how long after writing a receipt we will confirm it
    seen_capacity: int = 10_000
    trains: bool = True  # False for an observer: it evaluates and aggregates, never trains or sends
    max_ttl: int = 8
    max_clock_skew: float = 5.0
    max_message_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("batch_size", self.batch_size >= 1),
                ("fedavg_buffer", self.fedavg_buffer >= 1),
                ("transactions_per_block", self.transactions_per_block >= 1),
                ("ttl", 1 <= self.ttl <= self.max_ttl),
                ("confirmation_quorum", 0.0 <= self.confirmation_quorum <= 1.0),
                ("transaction_lifetime", self.transaction_lifetime > self.receipt_wait > 0),
                ("confirmation_timeout", self.confirmation_timeout > 0),
                ("quorum_grace", 0 <= self.quorum_grace <= self.confirmation_timeout),
                ("confirmation_window", self.confirmation_window > 0),
                ("seen_capacity", self.seen_capacity >= 1),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"invalid DFL config field(s): {', '.join(problems)}")


# --- the learning rules of both DFL engines ---------------------------------------------------


class LearningState(Protocol):
    """What a DFL engine keeps of its ML: samples not yet trained on, models not yet merged."""

    samples_pending: int
    buffer: list[BufferedModel]
    counters: Counter[str]


def collect_samples(state: LearningState, config: DflConfig, count: int) -> list[DflAction]:
    """One Train per full batch: the paper trains one SGD step on each 64 new samples."""
    if count < 0:
        raise ValueError("a sample count cannot be negative")
    if not config.trains:
        return []
    trains, state.samples_pending = divmod(state.samples_pending + count, config.batch_size)
    return [Train(config.batch_size) for _ in range(trains)]


def buffer_model(state: LearningState, config: DflConfig, model: BufferedModel) -> list[DflAction]:
    """Buffers an evaluated model; a full buffer is handed over whole, as the paper's FedAvg."""
    state.buffer.append(model)
    if len(state.buffer) < config.fedavg_buffer:
        return []
    models, state.buffer = tuple(state.buffer), []
    state.counters["aggregations"] += 1
    return [Aggregate(models)]


# --- state -------------------------------------------------------------------------------------


@dataclass
class SeenTransaction:
    upstream: str | None  # the peer it first came from; receipts travel back this way
    receipts: set[bytes]


@dataclass
class OwnTransaction:
    transaction: pb.Transaction  # without weights
    created_at: float
    expected_receipts: int | None  # None when receipts come from further than the neighbours
    receipts: dict[bytes, pb.Receipt] = field(default_factory=dict)  # by creator address


@dataclass
class DraftInProgress:
    block: pb.Block
    sent_at: float
    confirmations: dict[bytes, pb.BlockConfirmation] = field(default_factory=dict)  # by receipt


@dataclass
class DflState:
    peers: tuple[str, ...]
    height: int
    head_digest: bytes
    seen: ExpiringMemory[bytes, SeenTransaction]
    unconfirmed_receipts: ExpiringMemory[bytes, bool]  # receipts we wrote and may confirm once
    samples_pending: int = 0
    trainings_in_flight: int = 0
    # digest -> (the transaction without its weights, who sent it, the weights)
    evaluations: dict[bytes, tuple[pb.Transaction, str, ModelBytes]] = field(default_factory=dict)
    own: OrderedDict[bytes, OwnTransaction] = field(default_factory=OrderedDict)
    buffer: list[BufferedModel] = field(default_factory=list)
    draft: DraftInProgress | None = None
    counters: Counter[str] = field(default_factory=Counter)
    refused: frozenset[bytes] = frozenset()  # generators banned by the node (GeneratorsRefused)


class DflEngine:
    """One DFL node's protocol state. `handle(event, now)` returns the actions to carry out."""

    def __init__(
        self,
        key: NodeKey,
        genesis: pb.Genesis,
        config: DflConfig,
        *,
        peers: tuple[str, ...] = (),
        height: int = 0,
        head_digest: bytes | None = None,
        draft: pb.Block | None = None,
    ) -> None:
        """`height`, `head_digest` and `draft` are what a restarted node's store kept: its head
        and the signed draft it had sent for the next height, if any (ChainStore.draft)."""
        self.key = key
        self.genesis = genesis
        self.config = config
        self.policy = ValidationPolicy.for_genesis(
            genesis,
            max_ttl=config.max_ttl,
            max_clock_skew_ms=to_ms(config.max_clock_skew),
            max_message_bytes=config.max_message_bytes,
        )
        self.state = DflState(
            peers=tuple(peers),
            height=height,
            head_digest=head_digest if head_digest is not None else genesis.digest,
            seen=ExpiringMemory(config.seen_capacity),
            unconfirmed_receipts=ExpiringMemory(config.seen_capacity),
        )
        if draft is not None:
            self._resume(draft)

    def _resume(self, draft: pb.Block) -> None:
        """The draft goes on from when it was made: the confirmations it had gathered were
        lost with the process, so it finalizes on those still to come or at the timeout."""
        state = self.state
        if (
            draft.body.height != state.height + 1
            or draft.body.previous_digest != state.head_digest
            or draft.body.creator.address != self.address
            or not draft.digest
            or draft.final_digest
        ):
            raise ValueError("the draft to resume is not our own draft of the next block")
        state.draft = DraftInProgress(draft, draft.body.time_ms / 1000)
        state.counters["drafts_resumed"] += 1

    @property
    def address(self) -> bytes:
        return self.key.address

    def snapshot(self) -> DflState:
        """A deep copy of the state, comparable with ==, for audits and tests.

        Received weights are views of immutable payloads (ModelBytes): the copy shares them,
        as it would share bytes (a memoryview cannot be copied, and need not be)."""
        state = self.state
        views = [w for _, _, w in state.evaluations.values()] + [m.model for m in state.buffer]
        shared: dict[int, object] = {id(v): v for v in views if isinstance(v, memoryview)}
        return copy.deepcopy(state, shared)

    def handle(self, event: DflEvent, now: float) -> list[DflAction]:
        match event:
            case SamplesCollected(count):
                return self._on_samples(count)
            case TrainingDone(model):
                return self._on_training_done(model, now)
            case TransactionReceived(payload, sender):
                return self._on_transaction(payload, sender, now)
            case EvaluationDone(digest, accuracy):
                return self._on_evaluation(digest, accuracy, now)
            case EvaluationFailed(digest):
                if self.state.evaluations.pop(digest, None) is not None:
                    self.state.counters["evaluations_failed"] += 1
                return []
            case DraftBlockReceived(payload, sender):
                return self._on_draft(payload, sender)
            case ConfirmationsReceived(payload, _):
                return self._on_confirmations(payload, now)
            case PeersChanged(peers):
                self.state.peers = tuple(peers)
                return []
            case GeneratorsRefused(generators):
                self.state.refused = generators
                return []
            case Tick():
                return self._on_tick(now)
        raise TypeError(f"not a DFL event: {event!r}")

    # --- training and sending ------------------------------------------------------------------

    def _on_samples(self, count: int) -> list[DflAction]:
        trains = collect_samples(self.state, self.config, count)
        self.state.trainings_in_flight += len(trains)
        return trains

    def _on_training_done(self, model: bytes, now: float) -> list[DflAction]:
        state = self.state
        if state.trainings_in_flight < 1:
            raise ValueError("TrainingDone without a Train action in flight")
        check_model_bytes(model, self.policy)  # a host bug must not reach the peers
        state.trainings_in_flight -= 1
        tx = records.make_transaction(
            self.key,
            genesis_digest=self.genesis.digest,
            weights=model,
            now_ms=to_ms(now),
            ttl=self.config.ttl,
            lifetime_ms=to_ms(self.config.transaction_lifetime),
            attach_weights=False,  # joined on the wire below: one copy of the weights, not two
        )
        expected = len(state.peers) if self.config.ttl == 1 else None
        state.own[tx.digest] = OwnTransaction(tx, now, expected)
        state.counters["transactions_generated"] += 1
        if not state.peers:
            return []
        state.counters["transactions_sent"] += len(state.peers)
        return [Send(state.peers, MessageKind.TRANSACTION, join_model(tx, model))]

    # --- receiving transactions ----------------------------------------------------------------

    def _on_transaction(self, payload: bytes, sender: str, now: float) -> list[DflAction]:
        tx, model = decode_transaction(
            payload, self.policy.model_bytes, self.policy.max_message_bytes
        )
        state = self.state
        if tx.body.generator.address in state.refused:
            raise RecordRejected(RejectReason.REFUSED_GENERATOR, "its generator is banned here")
        ours = tx.body.generator.address == self.address
        own = state.own.get(tx.digest) if ours else None
        seen = None if ours else state.seen.get(tx.digest, now)
        # Signatures this node checked (or made) before need no second check.
        trusted: set[bytes] = set()
        if own is not None:
            trusted = {tx.digest, *(r.digest for r in own.receipts.values())}
        elif seen is not None:
            trusted = {tx.digest, *seen.receipts}
        validate_transaction(
            tx, self.policy, now_ms=to_ms(now), weights="optional", trusted=trusted, model=model
        )
        if ours:
            return self._collect_receipts(tx, now)
        if seen is not None:
            return self._relay_receipts(tx, seen, sender)
        if not model:
            raise RecordRejected(
                RejectReason.MODEL_SHAPE_MISMATCH, "the first copy of a transaction lacks weights"
            )
        if records.received_at_ttl(tx) < 0:
            raise RecordRejected(RejectReason.TTL_MISMATCH, "ttl exhausted; it was not ours to get")
        state.seen.put(
            tx.digest,
            SeenTransaction(sender, {r.digest for r in tx.receipts}),
            expires_at=tx.body.expire_time_ms / 1000,
        )
        # The weights stay a view of the payload, checked once above: no copy while queued.
        state.evaluations[tx.digest] = (tx, sender, model)
        state.counters["transactions_received"] += 1
        created = tx.body.create_time_ms / 1000
        return [Evaluate(tx.digest, tx.body.generator.address, model, created)]

    def _collect_receipts(self, tx: pb.Transaction, now: float) -> list[DflAction]:
        own = self.state.own.get(tx.digest)
        if own is None:
            raise RecordRejected(
                RejectReason.DUPLICATE, "own transaction no longer awaits receipts"
            )
        new = [
            r
            for r in tx.receipts
            if r.body.creator.address not in own.receipts and r.body.creator.address != self.address
        ]
        if not new:
            raise RecordRejected(RejectReason.DUPLICATE, "no receipt we did not already have")
        for receipt in new:
            own.receipts[receipt.body.creator.address] = receipt
        self.state.counters["receipts_collected"] += len(new)
        return self._maybe_draft(now)

    def _relay_receipts(
        self, tx: pb.Transaction, seen: SeenTransaction, sender: str
    ) -> list[DflAction]:
        new = {r.digest for r in tx.receipts} - seen.receipts
        if not new:
            raise RecordRejected(RejectReason.DUPLICATE, "transaction already seen")
        seen.receipts |= new
        if seen.upstream is None or seen.upstream == sender:
            return []
        self.state.counters["transactions_relayed"] += 1
        receipts_only = tx.SerializeToString()  # decode_transaction took the weights out
        return [Send((seen.upstream,), MessageKind.TRANSACTION, receipts_only)]

    def _on_evaluation(self, digest: bytes, accuracy: float, now: float) -> list[DflAction]:
        state = self.state
        if digest not in state.evaluations:
            raise ValueError("EvaluationDone for a transaction that was not being evaluated")
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy {accuracy} is not in [0, 1]")
        tx, upstream, weights = state.evaluations.pop(digest)
        receipt = records.make_receipt(self.key, tx, accuracy=accuracy, now_ms=to_ms(now))
        tx.receipts.append(receipt)
        state.unconfirmed_receipts.put(receipt.digest, True, now + self.config.confirmation_window)
        seen = state.seen.get(digest, now)
        if seen is not None:
            seen.receipts.add(receipt.digest)
        state.counters["receipts_written"] += 1

        receipts_only = tx.SerializeToString()
        actions: list[DflAction] = [Send((upstream,), MessageKind.TRANSACTION, receipts_only)]
        onward = tuple(peer for peer in state.peers if peer != upstream)
        if receipt.body.received_at_ttl > 0 and onward:
            actions.append(Send(onward, MessageKind.TRANSACTION, join_model(tx, weights)))
            state.counters["transactions_forwarded"] += len(onward)
        model = BufferedModel(digest, tx.body.generator.address, accuracy, weights)
        return actions + buffer_model(state, self.config, model)

    # --- blocks --------------------------------------------------------------------------------

    def _settled(self, own: OwnTransaction, now: float) -> bool:
        everyone_answered = (
            own.expected_receipts is not None and len(own.receipts) >= own.expected_receipts
        )
        return everyone_answered or now >= own.created_at + self.config.receipt_wait

    def _maybe_draft(self, now: float) -> list[DflAction]:
        """Drafts a block from the oldest settled own transactions once there are enough."""
        state = self.state
        if state.draft is not None:
            return []
        for digest in [d for d, own in state.own.items() if not own.receipts]:
            if self._settled(state.own[digest], now):
                del state.own[digest]
                state.counters["transactions_without_receipts"] += 1
        settled = [own for own in state.own.values() if own.receipts and self._settled(own, now)]
        if len(settled) < self.config.transactions_per_block or not state.peers:
            return []
        chosen = settled[: self.config.transactions_per_block]
        transactions = []
        for own in chosen:
            tx = pb.Transaction()
            tx.CopyFrom(own.transaction)
            tx.receipts.extend(own.receipts.values())
            transactions.append(tx)
        block = records.draft_block(
            self.key,
            height=state.height + 1,
            previous_digest=state.head_digest,
            genesis_digest=self.genesis.digest,
            transactions=transactions,
            now_ms=to_ms(now),
        )
        for own in chosen:
            del state.own[own.transaction.digest]
        state.draft = DraftInProgress(block, now)
        state.counters["blocks_drafted"] += 1
        return [
            PersistDraft(block),  # kept before it leaves: a restart then resumes this one
            Send(state.peers, MessageKind.DRAFT_BLOCK, block.SerializeToString()),
        ]

    def _on_draft(self, payload: bytes, sender: str) -> list[DflAction]:
        block = decode(pb.Block, payload, self.policy.max_message_bytes)
        validate_draft_block(block, self.policy, contents=False)
        if block.body.creator.address == self.address:
            raise RecordRejected(RejectReason.WRONG_CREATOR, "a draft of our own came back")
        state = self.state
        ours = [
            (tx.digest, receipt.digest)
            for tx in block.body.transactions
            for receipt in tx.receipts
            if receipt.body.creator.address == self.address
        ]
        for tx in block.body.transactions:  # what we vouch for must be exactly what we wrote
            for receipt in tx.receipts:
                if receipt.body.creator.address == self.address and (
                    digest_message(receipt.body) != receipt.digest
                    or receipt.body.transaction_digest != tx.digest
                ):
                    raise RecordRejected(
                        RejectReason.DIGEST_MISMATCH, "a receipt of ours was altered in the draft"
                    )
        # Paper 4.3.3: a receipt is confirmed at most once, so a finalized block cannot be redone.
        to_confirm = [
            (tx_digest, receipt_digest)
            for tx_digest, receipt_digest in ours
            if state.unconfirmed_receipts.get(receipt_digest, float("-inf")) is not None
        ]
        if ours and not to_confirm:
            raise RecordRejected(RejectReason.DUPLICATE, "our receipts here are already confirmed")
        if not to_confirm:
            return []
        batch = pb.ConfirmationBatch()
        for tx_digest, receipt_digest in to_confirm:
            batch.confirmations.append(
                records.make_confirmation(
                    self.key,
                    block_digest=block.digest,
                    transaction_digest=tx_digest,
                    receipt_digest=receipt_digest,
                )
            )
            state.unconfirmed_receipts.pop(receipt_digest)
        state.counters["confirmations_sent"] += len(to_confirm)
        return [Send((sender,), MessageKind.CONFIRMATIONS, batch.SerializeToString())]

    def _on_confirmations(self, payload: bytes, now: float) -> list[DflAction]:
        batch = decode(pb.ConfirmationBatch, payload, self.policy.max_message_bytes)
        draft = self.state.draft
        if draft is None:
            raise RecordRejected(RejectReason.BAD_LINK, "no draft block awaits confirmations")
        new: dict[bytes, pb.BlockConfirmation] = {}
        for confirmation in batch.confirmations:
            validate_confirmation(confirmation, draft.block)
            receipt = confirmation.body.receipt_digest
            if receipt not in draft.confirmations:
                new[receipt] = confirmation
        if not new:
            raise RecordRejected(RejectReason.DUPLICATE, "no confirmation we did not already have")
        draft.confirmations.update(new)
        self.state.counters["confirmations_received"] += len(new)
        return self._maybe_finalize(now, on_tick=False)

    def _maybe_finalize(self, now: float, *, on_tick: bool) -> list[DflAction]:
        state = self.state
        draft = state.draft
        if draft is None:
            return []
        fraction = records.confirmed_fraction(draft.block, draft.confirmations.keys())
        timed_out = now >= draft.sent_at + self.config.confirmation_timeout
        complete = fraction >= 1.0
        quorum = (
            on_tick
            and fraction >= self.config.confirmation_quorum
            and now >= draft.sent_at + self.config.quorum_grace
        )
        if not (complete or timed_out or quorum):
            return []
        block = records.finalize_block(
            self.key,
            draft.block,
            confirmations=sorted(draft.confirmations.values(), key=lambda c: c.digest),
            now_ms=to_ms(now),
            quorum=self.config.confirmation_quorum,
            timed_out=timed_out and not complete and fraction < self.config.confirmation_quorum,
        )
        state.height += 1
        state.head_digest = block.final_digest
        state.draft = None
        state.counters["blocks_finalized"] += 1
        if block.finalization.timed_out:
            state.counters["blocks_timed_out"] += 1
        return [PersistBlock(block), *self._maybe_draft(now)]

    def _on_tick(self, now: float) -> list[DflAction]:
        state = self.state
        state.seen.purge(now)
        state.unconfirmed_receipts.purge(now)
        return [*self._maybe_finalize(now, on_tick=True), *self._maybe_draft(now)]
