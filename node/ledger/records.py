"""Building and signing the ledger records (paper section 4.2; DESIGN.md "The ledger").

Pure functions: given a key, the inputs and the time, they return protobuf records with their
digest and signature filled in. Validation of what others built lives in validation.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from node.ledger.hashing import digest_message, model_digest
from node.ledger.keys import NodeKey
from node.ledger.pow import header_hash, models_digest
from proto.dfl.v1 import records_pb2 as pb

MODEL_ENCODING = "f32le"


def node_info(key: NodeKey) -> pb.NodeInfo:
    return pb.NodeInfo(address=key.address, public_key=key.public_key)


def spec_digest(spec: str) -> bytes:
    """SHA-256 of a canonical experiment spec's text: which experiment a chain belongs to."""
    return hashlib.sha256(spec.encode()).digest()


def make_genesis(
    *,
    protocol: str,
    model_architecture: str,
    layers: Iterable[tuple[str, Sequence[int]]],
    hyperparameters: Mapping[str, object],
    seed: int,
    spec: str = "",
    initial_model_digest: bytes = b"",
) -> pb.Genesis:
    """The experiment's genesis block; every node given the same inputs gets the same digest.

    `spec` is the canonical experiment spec (its SHA-256 is recorded beside it), so that the
    genesis digest differs between any two experiments, not only between models and seeds.
    """
    body = pb.GenesisBody(
        protocol=protocol,
        model_architecture=model_architecture,
        layers=[pb.LayerShape(name=name, shape=list(shape)) for name, shape in layers],
        hyperparameters=[
            pb.Hyperparameter(name=name, value=str(hyperparameters[name]))
            for name in sorted(hyperparameters)
        ],
        seed=seed,
        spec_digest=spec_digest(spec) if spec else b"",
        spec=spec,
        initial_model_digest=initial_model_digest,
    )
    return pb.Genesis(body=body, digest=digest_message(body))


def parameter_count(genesis: pb.Genesis) -> int:
    total = 0
    for layer in genesis.body.layers:
        size = 1
        for dim in layer.shape:
            size *= dim
        total += size
    return total


def make_transaction(
    key: NodeKey,
    *,
    genesis_digest: bytes,
    weights: bytes,
    now_ms: int,
    ttl: int,
    lifetime_ms: int,
    round: int = 0,
    attach_weights: bool = True,
) -> pb.Transaction:
    """A signed transaction carrying `weights` (raw float32 in genesis order).

    BLADE-FL's pool models are transactions too, with `round` set and ttl 0 (they are never
    forwarded), so both protocols share one signed, weight-free-in-blocks model record.
    With `attach_weights` False the record names the weights but does not hold them: the sender
    joins them on the wire (node/ledger/wire.py) without copying them into protobuf first.
    """
    body = pb.TransactionBody(
        round=round,
        generator=node_info(key),
        create_time_ms=now_ms,
        expire_time_ms=now_ms + lifetime_ms,
        ttl=ttl,
        genesis_digest=genesis_digest,
        model=pb.ModelRef(
            digest=model_digest(weights), size_bytes=len(weights), encoding=MODEL_ENCODING
        ),
    )
    digest = digest_message(body)
    transaction = pb.Transaction(body=body, digest=digest, signature=key.sign(digest))
    if attach_weights:
        transaction.model = weights
    return transaction


def received_at_ttl(transaction: pb.Transaction) -> int:
    """Paper eq. 1: the ttl left for the next receipt, min(tx.ttl, receipts' ttls) - 1."""
    remaining = min([transaction.body.ttl, *(r.body.received_at_ttl for r in transaction.receipts)])
    return remaining - 1


def make_receipt(
    key: NodeKey, transaction: pb.Transaction, *, accuracy: float, now_ms: int
) -> pb.Receipt:
    """The receiver's signed statement of how well the model did on its own samples."""
    ttl = received_at_ttl(transaction)
    if ttl < 0:
        raise ValueError("the transaction's ttl is exhausted; no receipt may be appended")
    body = pb.ReceiptBody(
        creator=node_info(key),
        create_time_ms=now_ms,
        received_at_ttl=ttl,
        accuracy=accuracy,
        transaction_digest=transaction.digest,
    )
    digest = digest_message(body)
    return pb.Receipt(body=body, digest=digest, signature=key.sign(digest))


def without_model(transaction: pb.Transaction) -> pb.Transaction:
    """A copy without the weights: what blocks store (the signed ModelRef still names them)."""
    return pb.Transaction(
        body=transaction.body,
        digest=transaction.digest,
        signature=transaction.signature,
        receipts=transaction.receipts,
    )


def draft_block(
    key: NodeKey,
    *,
    height: int,
    previous_digest: bytes,
    genesis_digest: bytes,
    transactions: Iterable[pb.Transaction],
    now_ms: int,
) -> pb.Block:
    """First phase of block generation (paper 4.1.3): the creator's signed draft."""
    body = pb.BlockBody(
        height=height,
        previous_digest=previous_digest,
        genesis_digest=genesis_digest,
        creator=node_info(key),
        time_ms=now_ms,
        transactions=[without_model(tx) for tx in transactions],
    )
    digest = digest_message(body)
    return pb.Block(body=body, digest=digest, signature=key.sign(digest))


def make_confirmation(
    key: NodeKey, *, block_digest: bytes, transaction_digest: bytes, receipt_digest: bytes
) -> pb.BlockConfirmation:
    body = pb.BlockConfirmationBody(
        creator=node_info(key),
        transaction_digest=transaction_digest,
        receipt_digest=receipt_digest,
        block_digest=block_digest,
    )
    digest = digest_message(body)
    return pb.BlockConfirmation(body=body, digest=digest, signature=key.sign(digest))


def finalize_block(
    key: NodeKey,
    draft: pb.Block,
    *,
    confirmations: Iterable[pb.BlockConfirmation],
    now_ms: int,
    quorum: float,
    timed_out: bool,
) -> pb.Block:
    """Second phase: append the confirmations; the final digest chains to the next block."""
    finalization = pb.BlockFinalization(
        block_digest=draft.digest,
        confirmations=list(confirmations),
        finalized_time_ms=now_ms,
        quorum=quorum,
        timed_out=timed_out,
    )
    final_digest = digest_message(finalization)
    block = pb.Block()
    block.CopyFrom(draft)
    block.finalization.CopyFrom(finalization)
    block.final_digest = final_digest
    block.final_signature = key.sign(final_digest)
    return block


def confirmable_receipts(block: pb.Block) -> set[bytes]:
    """Receipts that the creator's neighbours wrote, the only nodes that see its draft.

    Eq. 1 tells them apart offline: a receipt written on a copy straight from the generator has
    received_at_ttl = ttl - 1; one written further along the path has less.
    """
    return {
        receipt.digest
        for tx in block.body.transactions
        for receipt in tx.receipts
        if receipt.body.received_at_ttl == tx.body.ttl - 1
    }


def confirmed_fraction(block: pb.Block, confirmed: Iterable[bytes] | None = None) -> float:
    """Share of the confirmable receipts that are confirmed (1.0 when there are none).

    `confirmed` are receipt digests; by default those of the block's own confirmations.
    """
    confirmable = confirmable_receipts(block)
    if not confirmable:
        return 1.0
    if confirmed is None:
        confirmed = (c.body.receipt_digest for c in block.finalization.confirmations)
    return len(confirmable.intersection(confirmed)) / len(confirmable)


# --- BLADE-FL -----------------------------------------------------------------------------------


def pow_header(
    *,
    height: int,
    previous_hash: bytes,
    transactions: Sequence[pb.Transaction],
    miner: bytes,
    time_ms: int,
) -> pb.PowHeader:
    """The header a miner works on (nonce 0); `transactions` in block order."""
    return pb.PowHeader(
        height=height,
        previous_hash=previous_hash,
        models_digest=models_digest(tx.digest for tx in transactions),
        miner=miner,
        time_ms=time_ms,
    )


def make_pow_block(
    key: NodeKey, header: pb.PowHeader, nonce: int, transactions: Iterable[pb.Transaction]
) -> pb.PowBlock:
    """The mined block: the header with its winning nonce, the models without weights, signed."""
    mined = pb.PowHeader()
    mined.CopyFrom(header)
    mined.nonce = nonce
    block_hash = header_hash(mined)
    return pb.PowBlock(
        header=mined,
        miner=node_info(key),
        transactions=[without_model(tx) for tx in transactions],
        hash=block_hash,
        signature=key.sign(block_hash),
    )


def make_vote(
    key: NodeKey, *, height: int, block_hash: bytes, genesis_digest: bytes
) -> pb.BlockVote:
    body = pb.BlockVoteBody(
        voter=node_info(key), height=height, block_hash=block_hash, genesis_digest=genesis_digest
    )
    digest = digest_message(body)
    return pb.BlockVote(body=body, digest=digest, signature=key.sign(digest))
