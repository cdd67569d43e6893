"""BLADE-FL's proof of work: SHA-256 over a fixed-layout block header, below a target.

The header is packed in a fixed binary layout with the nonce last, so a miner hashes the constant
prefix once and, per attempt, only copies that state and feeds 8 nonce bytes. Digests compare as
big-endian integers, which for equal-length byte strings is plain `bytes` ordering, so the hot
loop never converts to `int`.

Difficulty is the expected number of hashes per block (the paper's kappa); the target is
2^256 / difficulty. Every client reads it from the genesis, so all agree on what counts as work;
`calibrate_difficulty` turns a wanted block time (the paper's beta) into a difficulty from the hash
rate measured on this machine.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from node.ledger.hashing import digest_bytes
from proto.dfl.v1 import records_pb2 as pb

HASH_SPACE = 1 << 256
DIFFICULTY_PARAMETER = "pow_difficulty"
_PREFIX = struct.Struct(">Q32s32s32sq")  # height, previous hash, models digest, miner, time
_NONCE = struct.Struct(">Q")
MAX_NONCE = (1 << 64) - 1


def target_for(difficulty: float) -> bytes:
    """The 32-byte big-endian bound a block hash must stay below."""
    if not difficulty >= 1:
        raise ValueError(f"difficulty must be >= 1 (expected hashes per block), not {difficulty}")
    return min(int(HASH_SPACE / difficulty), HASH_SPACE - 1).to_bytes(32, "big")


def difficulty_of(genesis: pb.Genesis) -> float | None:
    """The genesis's PoW difficulty; None for a genesis without one (a DFL experiment)."""
    for parameter in genesis.body.hyperparameters:
        if parameter.name == DIFFICULTY_PARAMETER:
            return float(parameter.value)
    return None


def models_digest(transaction_digests: Iterable[bytes]) -> bytes:
    """What the header commits to: the round's models, in block order."""
    return digest_bytes("pow-models", b"".join(transaction_digests))


def header_prefix(header: pb.PowHeader) -> bytes:
    """Everything the work covers except the nonce."""
    return _PREFIX.pack(
        header.height,
        header.previous_hash,
        header.models_digest,
        header.miner,
        header.time_ms,
    )


def header_hash(header: pb.PowHeader) -> bytes:
    return hashlib.sha256(header_prefix(header) + _NONCE.pack(header.nonce)).digest()


def meets_target(block_hash: bytes, target: bytes) -> bool:
    return block_hash < target


@dataclass(frozen=True)
class MiningResult:
    """`nonce` is None when `count` attempts found nothing; `attempts` were hashed either way."""

    nonce: int | None
    attempts: int


def mine(prefix: bytes, target: bytes, start: int, count: int) -> MiningResult:
    """Tries nonces start .. start+count-1; a bounded chunk, so the caller can stop between them."""
    base = hashlib.sha256(prefix)
    pack = _NONCE.pack
    end = min(start + count, MAX_NONCE + 1)
    for nonce in range(start, end):
        attempt = base.copy()
        attempt.update(pack(nonce))
        if attempt.digest() < target:
            return MiningResult(nonce, nonce - start + 1)
    return MiningResult(None, end - start)


def measure_hash_rate(seconds: float = 0.5) -> float:
    """Hashes per second of `mine` on one core of this machine (an impossible target)."""
    prefix = bytes(_PREFIX.size)
    impossible = bytes(32)
    attempts, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        attempts += mine(prefix, impossible, attempts, 20_000).attempts
    return attempts / elapsed


def calibrate_difficulty(block_seconds: float, miners: int, cores: int, hash_rate: float) -> float:
    """The difficulty at which `miners` clients sharing `cores` find a block every `block_seconds`.

    The paper's beta is the whole network's expected time per block (eq. 2: kappa * chi / f_bl),
    so the network's hash rate counts: one core's rate times the cores the miners can use at once.
    """
    network_rate = hash_rate * max(1, min(miners, cores))
    return max(1.0, block_seconds * network_rate)
