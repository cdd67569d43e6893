"""How BLADE-FL clients settle on one chain: the votes of a height and a peer's chain checked whole.

Two rules. First, these are BLADE-FL's own rules, used by its engine (blade.py) and nowhere
else: which block of a height wins (most votes, then the lowest hash, the same rule at every
client, so clients that saw the same votes append the same block), and what a fetched chain must
be before a client switches to it (every block's work, link and height above the point where it
leaves ours, and the last round's models exactly those its last block names, each signed).
Second, they are pure functions of what they are given: no clock, no store, no engine state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.validation import ValidationPolicy, decode, validate_pool_model, validate_pow_block
from proto.dfl.v1 import records_pb2 as pb


@dataclass
class HeightVotes:
    """Candidates and votes for one height."""

    blocks: dict[bytes, pb.PowBlock] = field(default_factory=dict)  # by hash, valid ones
    voters: dict[bytes, bytes] = field(default_factory=dict)  # voter address -> block hash
    voted_by_peer: dict[bytes, str] = field(default_factory=dict)  # block hash -> a peer voting
    first_candidate_at: float | None = None

    def leader(self) -> tuple[bytes, int]:
        """The block hash ahead and its votes: most votes, then the lowest hash."""
        tally = Counter(self.voters.values())
        return min(tally.items(), key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True)
class FetchedChain:
    fork: int  # the first height at which the fetched chain differs from ours
    blocks: list[pb.PowBlock]  # from height 1
    pool: dict[bytes, pb.Transaction]  # the last block's models, by generator


def check_fetched_chain(
    chain: Sequence[bytes],
    blocks: Sequence[bytes],
    models: Sequence[bytes],
    policy: ValidationPolicy,
) -> FetchedChain:
    """Decodes and verifies a peer's chain against ours (`chain[h]`: our hash at height h)."""
    decoded = [decode(pb.PowBlock, data, policy.max_message_bytes) for data in blocks]
    height = len(chain) - 1
    fork = 1
    while fork <= height and decoded[fork - 1].hash == chain[fork]:
        fork += 1
    previous = chain[fork - 1]
    for at, block in enumerate(decoded[fork - 1 :], start=fork):
        validate_pow_block(block, policy, previous_hash=previous)
        if block.header.height != at:
            raise RecordRejected(RejectReason.BAD_LINK, f"block {at} out of order")
        previous = block.hash
    return FetchedChain(fork, decoded, _verified_pool(decoded[-1], models, policy))


def _verified_pool(
    block: pb.PowBlock, models: Sequence[bytes], policy: ValidationPolicy
) -> dict[bytes, pb.Transaction]:
    """The fetched models of `block`'s round, each signed and exactly those the block names."""
    wanted = {tx.digest for tx in block.transactions}
    pool: dict[bytes, pb.Transaction] = {}
    for data in models:
        tx = decode(pb.Transaction, data, policy.max_message_bytes)
        validate_pool_model(tx, policy)
        if tx.digest in wanted:
            pool[tx.body.generator.address] = tx
    if {tx.digest for tx in pool.values()} != wanted:
        raise RecordRejected(
            RejectReason.UNKNOWN_MODEL, "the fetched models are not those of the last block"
        )
    return pool
