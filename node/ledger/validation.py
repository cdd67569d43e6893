"""Validation of every record a node receives or reads back from its store.

Each check raises RecordRejected with a named reason before anything is changed. The order is
fixed: size and structure, then integrity (digest, address, signature), then meaning (genesis,
ttl, time, model). A record whose bytes were altered therefore reports the integrity failure, and
a record re-signed by a forger reports what is wrong with its content.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.hashing import DIGEST_SIZE, address_of, digest_message, model_digest
from node.ledger.keys import verify_signature
from node.ledger.pow import difficulty_of, header_hash, meets_target, models_digest, target_for
from node.ledger.records import MODEL_ENCODING, confirmed_fraction, parameter_count
from node.ledger.wire import split_model
from proto.dfl.v1 import records_pb2 as pb

M = TypeVar("M", bound=Message)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# "required": a first copy, which receivers evaluate; "optional": a copy that only brings receipts
# back to nodes that have the weights already; "absent": a transaction stored in a block.
Weights = Literal["required", "optional", "absent"]


@dataclass(frozen=True)
class ValidationPolicy:
    """What a node accepts. `max_ttl` None means "any" (used when auditing a stored chain)."""

    genesis_digest: bytes
    parameter_count: int
    max_ttl: int | None = 8
    max_clock_skew_ms: int = 5_000
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    pow_target: bytes | None = None  # BLADE-FL: what a block hash must stay below

    @classmethod
    def for_genesis(cls, genesis: pb.Genesis, **overrides: object) -> ValidationPolicy:
        """RecordRejected (malformed) for a genesis whose difficulty is not a number >= 1."""
        try:
            difficulty = difficulty_of(genesis)
            target = None if difficulty is None else target_for(difficulty)
        except ValueError as error:
            raise _reject(RejectReason.MALFORMED, f"genesis difficulty: {error}") from None
        return cls(  # type: ignore[arg-type]
            genesis.digest, parameter_count(genesis), pow_target=target, **overrides
        )

    @property
    def model_bytes(self) -> int:
        return self.parameter_count * 4


def _reject(reason: RejectReason, detail: str) -> RecordRejected:
    return RecordRejected(reason, detail)


@contextlib.contextmanager
def _signed_by(address: bytes) -> Iterator[None]:
    """Failures inside are of content `address` signed (its signature verified before)."""
    try:
        yield
    except RecordRejected as rejected:
        if rejected.signer is None:
            rejected.signer = address
        raise


def decode(message_type: type[M], data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> M:
    """Parses wire bytes, refusing oversized or undecodable input."""
    if len(data) > max_bytes:
        raise _reject(
            RejectReason.MESSAGE_TOO_LARGE,
            f"{message_type.DESCRIPTOR.name} of {len(data)} bytes exceeds {max_bytes}",
        )
    message = message_type()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise _reject(
            RejectReason.MALFORMED, f"{message_type.DESCRIPTOR.name} does not parse: {error}"
        ) from None
    return message


def decode_transaction(
    data: bytes, model_size: int, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[pb.Transaction, memoryview]:
    """A received transaction without its weights, and the weights (a view of `data` when they
    are `model_size` bytes at its end: node/ledger/wire.py says why); the same refusals as
    `decode`."""
    if len(data) > max_bytes:
        raise _reject(
            RejectReason.MESSAGE_TOO_LARGE, f"Transaction of {len(data)} bytes exceeds {max_bytes}"
        )
    try:
        return split_model(data, model_size)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise _reject(RejectReason.MALFORMED, f"Transaction does not parse: {error}") from None


def check_signed(
    record: Message, signer: pb.NodeInfo, what: str, trusted: Collection[bytes] = ()
) -> None:
    """Digest over the body, address = hash(public key), and the signer's signature.

    A record whose body hashes to a digest in `trusted` (one this node verified before, or
    signed itself) needs no second signature check: the signature covers nothing but the digest.
    """
    if not record.HasField("body"):
        raise _reject(RejectReason.MALFORMED, f"{what} has no body")
    if len(record.digest) != DIGEST_SIZE:
        raise _reject(RejectReason.MALFORMED, f"{what} digest is {len(record.digest)} bytes")
    if digest_message(record.body) != record.digest:
        raise _reject(RejectReason.DIGEST_MISMATCH, f"{what} body does not hash to its digest")
    if address_of(signer.public_key) != signer.address:
        raise _reject(RejectReason.ADDRESS_MISMATCH, f"{what} signer address is not hash(key)")
    if record.digest in trusted:
        return
    if not verify_signature(signer.public_key, record.digest, record.signature):
        raise _reject(RejectReason.BAD_SIGNATURE, f"{what} signature does not verify")


def check_model_bytes(weights: bytes | memoryview, policy: ValidationPolicy) -> None:
    """The weights are the genesis model's size and every value is finite."""
    if len(weights) != policy.model_bytes:
        raise _reject(
            RejectReason.MODEL_SHAPE_MISMATCH,
            f"model has {len(weights)} bytes, the genesis model needs {policy.model_bytes}",
        )
    check_finite_weights(weights)


def check_finite_weights(weights: bytes | memoryview) -> None:
    """Every float32 is finite. The one scan a received model gets: whoever decodes the weights
    after this (the ML host) takes them as checked.

    The largest and the smallest value are both finite exactly when all values are (a NaN
    anywhere makes both NaN). numpy's min and max reductions are SIMD loops without the
    temporary array `np.isfinite` needs: together 0.08 ms for LeNet here, against 0.10 ms for
    `np.isfinite(...).all()` and 0.16-0.19 ms for a sum (pairwise, not vectorised as widely).
    """
    if not weights_are_finite(weights):
        raise _reject(RejectReason.NON_FINITE_WEIGHTS, "model holds NaN or infinite weights")


def weights_are_finite(weights: bytes | memoryview) -> bool:
    """`check_finite_weights` as a test; ValueError if the bytes are not whole float32s."""
    values = np.frombuffer(weights, dtype="<f4")
    return not values.size or (math.isfinite(values.max()) and math.isfinite(values.min()))


def _check_model_record(
    tx: pb.Transaction,
    policy: ValidationPolicy,
    weights: Weights,
    trusted: Collection[bytes],
    model: bytes | memoryview | None = None,
) -> None:
    """What DFL transactions and BLADE-FL pool models share: signer, genesis, model ref, weights.

    `model` is the weights when they were cut out of the record (`decode_transaction`); None
    reads the record's own."""
    body = tx.body
    if not tx.HasField("body") or not body.HasField("generator") or not body.HasField("model"):
        raise _reject(RejectReason.MALFORMED, "transaction lacks body, generator or model ref")
    check_signed(tx, body.generator, "transaction", trusted)
    with _signed_by(body.generator.address):
        _check_signed_model(tx, policy, weights, model)


def _check_signed_model(
    tx: pb.Transaction,
    policy: ValidationPolicy,
    weights: Weights,
    model: bytes | memoryview | None,
) -> None:
    body = tx.body
    if body.genesis_digest != policy.genesis_digest:
        raise _reject(RejectReason.GENESIS_MISMATCH, "transaction is for another genesis")
    ref = body.model
    if ref.encoding != MODEL_ENCODING or ref.size_bytes != policy.model_bytes:
        raise _reject(
            RejectReason.MODEL_SHAPE_MISMATCH,
            f"model ref says {ref.size_bytes} bytes of {ref.encoding!r}, "
            f"the genesis model is {policy.model_bytes} bytes of {MODEL_ENCODING!r}",
        )
    if model is None:
        model = tx.model  # read once: every read of a bytes field copies it (1.7 MB for LeNet)
    if weights == "absent" and model:
        raise _reject(RejectReason.MALFORMED, "a block stores transactions without weights")
    if weights == "required" or model:
        if model_digest(model) != ref.digest:
            raise _reject(RejectReason.DIGEST_MISMATCH, "weights do not hash to the signed digest")
        check_model_bytes(model, policy)


def validate_transaction(
    tx: pb.Transaction,
    policy: ValidationPolicy,
    *,
    now_ms: int | None,
    weights: Weights = "required",
    trusted: Collection[bytes] = (),
    model: bytes | memoryview | None = None,
) -> None:
    """A transaction as received (receipts in path order) or as stored in a block.

    `now_ms` None skips the time window: a stored block's transactions expired long ago.
    `trusted` digests (of the transaction or its receipts) skip their signature check.
    `model`: the weights `decode_transaction` cut out of the record, if it did.
    """
    _check_model_record(tx, policy, weights, trusted, model)
    with _signed_by(tx.body.generator.address):
        _check_transaction_times(tx, policy, now_ms)
    validate_receipts(tx, path_ordered=weights != "absent", trusted=trusted)


def _check_transaction_times(
    tx: pb.Transaction, policy: ValidationPolicy, now_ms: int | None
) -> None:
    body = tx.body
    if body.ttl < 1:
        raise _reject(RejectReason.TTL_MISMATCH, "transaction ttl must be at least 1")
    if policy.max_ttl is not None and body.ttl > policy.max_ttl:
        raise _reject(
            RejectReason.TTL_ABOVE_MAXIMUM, f"ttl {body.ttl} is above the maximum {policy.max_ttl}"
        )
    if body.expire_time_ms <= body.create_time_ms:
        raise _reject(RejectReason.MALFORMED, "transaction expires before it is created")
    if now_ms is not None:
        if body.create_time_ms > now_ms + policy.max_clock_skew_ms:
            raise _reject(
                RejectReason.FROM_FUTURE,
                f"created {body.create_time_ms - now_ms} ms in the future "
                f"(allowed skew {policy.max_clock_skew_ms} ms)",
            )
        if body.expire_time_ms <= now_ms:
            raise _reject(RejectReason.EXPIRED, f"expired {now_ms - body.expire_time_ms} ms ago")


def validate_receipt(
    receipt: pb.Receipt, tx: pb.Transaction, trusted: Collection[bytes] = ()
) -> None:
    if not receipt.HasField("body") or not receipt.body.HasField("creator"):
        raise _reject(RejectReason.MALFORMED, "receipt lacks body or creator")
    check_signed(receipt, receipt.body.creator, "receipt", trusted)
    if receipt.body.transaction_digest != tx.digest:
        raise _reject(RejectReason.DIGEST_MISMATCH, "receipt names another transaction")
    accuracy = receipt.body.accuracy
    if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
        raise _reject(RejectReason.MALFORMED, f"receipt accuracy {accuracy} is not in [0, 1]")


def validate_receipts(
    tx: pb.Transaction, *, path_ordered: bool, trusted: Collection[bytes] = ()
) -> None:
    """Every receipt is signed and names `tx`; their ttls follow eq. 1.

    In transit receipts arrive in the order they were appended along one path, so each ttl is
    exactly one below the smallest before it. A block merges receipts that came back along
    different paths, so there each ttl is only bounded by the transaction's.
    """
    remaining = tx.body.ttl
    creators: set[bytes] = set()
    for receipt in tx.receipts:
        validate_receipt(receipt, tx, trusted)
        ttl = receipt.body.received_at_ttl
        if path_ordered:
            if remaining < 1 or ttl != remaining - 1:
                raise _reject(
                    RejectReason.TTL_MISMATCH,
                    f"receipt ttl {ttl}, eq. 1 gives {remaining - 1}",
                )
            remaining = ttl
        elif ttl >= tx.body.ttl:
            raise _reject(RejectReason.TTL_MISMATCH, f"receipt ttl {ttl} >= tx ttl {tx.body.ttl}")
        creator = receipt.body.creator.address
        if creator in creators:
            raise _reject(RejectReason.DUPLICATE, "two receipts from one creator")
        creators.add(creator)


def validate_draft_block(
    block: pb.Block, policy: ValidationPolicy, *, contents: bool = True
) -> None:
    """A draft signed by its creator, holding the creator's own transactions.

    With `contents` False the transactions' and receipts' own signatures are not checked: the
    block's signature already fixes every byte of them, and a neighbour confirming its receipts
    vouches only for those, which it compares with what it wrote (an audit checks everything).
    """
    if not block.HasField("body") or not block.body.HasField("creator"):
        raise _reject(RejectReason.MALFORMED, "block lacks body or creator")
    body = block.body
    check_signed(block, body.creator, "block")
    if body.genesis_digest != policy.genesis_digest:
        raise _reject(RejectReason.GENESIS_MISMATCH, "block is for another genesis")
    if body.height < 1:
        raise _reject(RejectReason.BAD_LINK, "only the genesis block has height 0")
    seen: set[bytes] = set()
    for tx in body.transactions:
        if tx.body.generator.address != body.creator.address:
            raise _reject(
                RejectReason.WRONG_CREATOR, "a block holds only its creator's transactions"
            )
        if contents:
            validate_transaction(tx, policy, now_ms=None, weights="absent")
        if tx.digest in seen:
            raise _reject(RejectReason.DUPLICATE, "transaction twice in one block")
        seen.add(tx.digest)


def find_receipt(block: pb.Block, tx_digest: bytes, receipt_digest: bytes) -> pb.Receipt | None:
    for tx in block.body.transactions:
        if tx.digest == tx_digest:
            for receipt in tx.receipts:
                if receipt.digest == receipt_digest:
                    return receipt
    return None


def validate_confirmation(confirmation: pb.BlockConfirmation, draft: pb.Block) -> None:
    """Signed by the creator of the receipt it confirms, for this draft."""
    if not confirmation.HasField("body") or not confirmation.body.HasField("creator"):
        raise _reject(RejectReason.MALFORMED, "confirmation lacks body or creator")
    body = confirmation.body
    check_signed(confirmation, body.creator, "confirmation")
    if body.block_digest != draft.digest:
        raise _reject(RejectReason.BAD_LINK, "confirmation is for another block")
    receipt = find_receipt(draft, body.transaction_digest, body.receipt_digest)
    if receipt is None:
        raise _reject(RejectReason.UNKNOWN_RECEIPT, "confirmation names no receipt of the block")
    if receipt.body.creator.address != body.creator.address:
        raise _reject(RejectReason.WRONG_CREATOR, "only a receipt's creator may confirm it")


def validate_final_block(
    block: pb.Block,
    policy: ValidationPolicy,
    *,
    height: int,
    previous_digest: bytes,
    owner: bytes | None = None,
) -> None:
    """A finalized block at `height` of a chain whose previous final digest is `previous_digest`."""
    validate_draft_block(block, policy)
    body = block.body
    if owner is not None and body.creator.address != owner:
        raise _reject(RejectReason.WRONG_CREATOR, "block was created by another node")
    if body.height != height:
        raise _reject(RejectReason.BAD_LINK, f"block says height {body.height}, expected {height}")
    if body.previous_digest != previous_digest:
        raise _reject(RejectReason.BAD_LINK, "previous digest does not match the chain")
    if not block.HasField("finalization"):
        raise _reject(RejectReason.MALFORMED, "block is not finalized")
    final = block.finalization
    if digest_message(final) != block.final_digest:
        raise _reject(RejectReason.DIGEST_MISMATCH, "finalization does not hash to final digest")
    if not verify_signature(body.creator.public_key, block.final_digest, block.final_signature):
        raise _reject(RejectReason.BAD_SIGNATURE, "final signature does not verify")
    if final.block_digest != block.digest:
        raise _reject(RejectReason.BAD_LINK, "finalization is for another draft")
    confirmed: set[bytes] = set()
    for confirmation in final.confirmations:
        validate_confirmation(confirmation, block)
        if confirmation.body.receipt_digest in confirmed:
            raise _reject(RejectReason.DUPLICATE, "a receipt confirmed twice")
        confirmed.add(confirmation.body.receipt_digest)
    fraction = confirmed_fraction(block)
    if not final.timed_out and fraction < final.quorum:
        raise _reject(
            RejectReason.BELOW_QUORUM,
            f"{fraction:.2f} of receipts confirmed, quorum {final.quorum:.2f}",
        )


# --- BLADE-FL -----------------------------------------------------------------------------------


def validate_pool_model(
    tx: pb.Transaction,
    policy: ValidationPolicy,
    *,
    weights: Weights = "required",
    trusted: Collection[bytes] = (),
) -> None:
    """A client's model for one round: signed by its client, never forwarded, no receipts."""
    _check_model_record(tx, policy, weights, trusted)
    if tx.body.round < 1:
        raise _reject(RejectReason.WRONG_ROUND, "a pool model names its round (1 or more)")
    if tx.body.ttl != 0 or tx.receipts:
        raise _reject(RejectReason.MALFORMED, "a pool model has ttl 0 and no receipts")


def validate_pow_block(
    block: pb.PowBlock,
    policy: ValidationPolicy,
    *,
    previous_hash: bytes | None,
    pool: Mapping[bytes, bytes] | None = None,
) -> None:
    """A mined block: work, miner signature, link, and models (each once, of the block's round).

    `previous_hash` None skips the link (the caller has no block below it yet). With `pool` (the
    signatures of the models this client verified in the round, by digest) every model must be
    one of them, carrying that same signature and nothing else (neither the miner's signature
    nor the header covers a model's signature or weights, so a relay could otherwise alter
    them); without it (a stored chain, a client catching up) each model's signature is checked.
    """
    if policy.pow_target is None:
        raise _reject(RejectReason.GENESIS_MISMATCH, "the genesis sets no proof-of-work target")
    if not block.HasField("header") or not block.HasField("miner"):
        raise _reject(RejectReason.MALFORMED, "block lacks header or miner")
    header = block.header
    if header.height < 1:
        raise _reject(RejectReason.BAD_LINK, "only the genesis block has height 0")
    for name in ("previous_hash", "models_digest", "miner"):
        if len(getattr(header, name)) != DIGEST_SIZE:
            raise _reject(RejectReason.MALFORMED, f"header {name} is not {DIGEST_SIZE} bytes")
    bare = pb.PowHeader()
    bare.CopyFrom(header)
    bare.DiscardUnknownFields()
    if bare.ByteSize() != header.ByteSize():  # the hash covers the known fields only
        raise _reject(RejectReason.MALFORMED, "header carries fields the hash does not cover")
    if header_hash(header) != block.hash:
        raise _reject(RejectReason.DIGEST_MISMATCH, "header does not hash to the block hash")
    if not meets_target(block.hash, policy.pow_target):
        raise _reject(RejectReason.INSUFFICIENT_WORK, "block hash is above the target")
    if address_of(block.miner.public_key) != block.miner.address:
        raise _reject(RejectReason.ADDRESS_MISMATCH, "miner address is not hash(key)")
    if header.miner != block.miner.address:
        raise _reject(RejectReason.WRONG_CREATOR, "header names another miner")
    if not verify_signature(block.miner.public_key, block.hash, block.signature):
        raise _reject(RejectReason.BAD_SIGNATURE, "miner signature does not verify")
    if previous_hash is not None and header.previous_hash != previous_hash:
        raise _reject(RejectReason.BAD_LINK, "previous hash does not match the chain")
    if not block.transactions:
        raise _reject(RejectReason.MALFORMED, "a block holds the round's models, its miner's first")
    if models_digest(tx.digest for tx in block.transactions) != header.models_digest:
        raise _reject(RejectReason.DIGEST_MISMATCH, "models do not match the header")
    generators: list[bytes] = []
    for tx in block.transactions:
        if tx.body.round != header.height:
            raise _reject(
                RejectReason.WRONG_ROUND,
                f"block {header.height} holds a model of round {tx.body.round}",
            )
        if pool is not None:
            signature = pool.get(tx.digest)
            if signature is None:
                raise _reject(RejectReason.UNKNOWN_MODEL, "block holds a model not from the pool")
            if digest_message(tx.body) != tx.digest:
                raise _reject(RejectReason.DIGEST_MISMATCH, "model body does not hash to digest")
            if tx.signature != signature:
                raise _reject(RejectReason.BAD_SIGNATURE, "a model's signature is not the pool's")
            if tx.model or tx.receipts:
                raise _reject(RejectReason.MALFORMED, "a block stores models bare, as signed")
        else:
            validate_pool_model(tx, policy, weights="absent")
        generators.append(tx.body.generator.address)
    if generators != sorted(set(generators)):
        raise _reject(RejectReason.DUPLICATE, "models must be one per client, by address")


def validate_vote(vote: pb.BlockVote, policy: ValidationPolicy) -> None:
    if not vote.HasField("body") or not vote.body.HasField("voter"):
        raise _reject(RejectReason.MALFORMED, "vote lacks body or voter")
    check_signed(vote, vote.body.voter, "vote")
    if vote.body.genesis_digest != policy.genesis_digest:
        raise _reject(RejectReason.GENESIS_MISMATCH, "vote is for another genesis")
    if vote.body.height < 1 or len(vote.body.block_hash) != DIGEST_SIZE:
        raise _reject(RejectReason.MALFORMED, "vote names no block")
