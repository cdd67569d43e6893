"""Digests of records and models.

BLAKE3, chosen by measurement (benchmarks/ledger_overhead.py): hashing the 1.7 MB LeNet weights
dominates a transaction's blockchain cost, and BLAKE3 does it 3-4x faster than SHA-256 and 7x
faster than BLAKE2b on these machines. Each record kind hashes under its own derived key, so the
body bytes of one kind can never pass for another kind's.
"""

from __future__ import annotations

from functools import cache

import blake3
from google.protobuf.message import Message

DIGEST_SIZE = 32


@cache
def _context_key(kind: str) -> bytes:
    return blake3.blake3(
        kind.encode(), derive_key_context="dfl-testbed 2026 record digest"
    ).digest()


def digest_bytes(kind: str, data: bytes) -> bytes:
    """The 32-byte digest of `data` in the domain `kind`."""
    return blake3.blake3(data, key=_context_key(kind)).digest()


def digest_message(message: Message) -> bytes:
    """Digest of a protobuf message: its full type name is the domain."""
    return digest_bytes(message.DESCRIPTOR.full_name, message.SerializeToString(deterministic=True))


def model_digest(weights: bytes) -> bytes:
    """Digest of model weight bytes (multi-threaded BLAKE3 is off: nodes keep one core each)."""
    return digest_bytes("model", weights)


def address_of(public_key: bytes) -> bytes:
    """A node's address: the hash of its public key (paper 4.1.1)."""
    return digest_bytes("address", public_key)
