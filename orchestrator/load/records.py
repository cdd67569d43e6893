"""What the load generator sends as records: virtual peers' transactions and forged ones.

A virtual peer is an extra identity under the experiment's genesis, derived from the experiment
seed like a node's (never one of the nodes' own), that sends what an honest neighbour would:
a transaction signed by its key, naming the node's genesis and carrying real weights, the
node's own current model with a little seeded noise, so evaluating it costs what a neighbour's
model costs and aggregating it does the node's learning no harm.

Forged records are what someone who cannot sign for anyone sends, at full model size where the
forgery allows it, so that refusing one costs the node what it would cost against an attacker.
Each kind is refused for its own reason (orchestrator/load/tasks.py FORGED_KINDS). Signed
forgeries (a wrong genesis, a wrong shape) get a fresh key each: the node scores the generator
of a record whose signature verified, and a reused key would soon be banned and refused before
its record were looked at, which would measure the ban, not the validation.

Building a record must cost the load generator little next to what it costs the node: the
model's signed reference is computed once per model, and the weights are appended to the
serialized signed part as their own encoded field (protobuf reads concatenated encodings as one
message), so no 1.7 MB message is built per request.
"""

from __future__ import annotations

import hashlib

import numpy as np

from node.ledger import records
from node.ledger.hashing import digest_message, model_digest
from node.ledger.keys import NodeKey
from proto.dfl.v1 import records_pb2 as pb

ANOTHER_GENESIS = hashlib.sha256(b"dfl-testbed/load/another experiment").digest()
WRONG_SHAPE_BYTES = 4000  # a signed model that is not the genesis model's size
GARBAGE_BYTES = 4096


def virtual_peer_key(seed: int, index: int) -> NodeKey:
    """Virtual peer `index`'s key for experiment `seed`: the same in every run of the spec, and
    in a domain of its own, so never a node's (node/seeds.py identity_seed)."""
    return NodeKey.from_seed(
        hashlib.sha256(f"dfl-testbed/load-peer/{seed}/{index}".encode()).digest()
    )


def perturbed(weights: bytes, rng: np.random.Generator, scale: float) -> bytes:
    """`weights` (little-endian float32) plus N(0, scale^2) noise, as the same encoding."""
    values = np.frombuffer(weights, dtype="<f4")
    noise = rng.normal(0.0, scale, size=values.shape).astype("<f4")
    return (values + noise).astype("<f4").tobytes()


class _Model:
    """One model's signed reference and its encoded `model` field, computed once."""

    def __init__(self, weights: bytes) -> None:
        self.size = len(weights)
        self.ref = pb.ModelRef(
            digest=model_digest(weights), size_bytes=len(weights), encoding=records.MODEL_ENCODING
        )
        self.field = pb.Transaction(model=weights).SerializeToString()


def _signed(key: NodeKey, body: pb.TransactionBody) -> pb.Transaction:
    digest = digest_message(body)
    return pb.Transaction(body=body, digest=digest, signature=key.sign(digest))


def _body(
    key: NodeKey, genesis: bytes, model: pb.ModelRef, now_ms: int, ttl: int, lifetime_ms: int
) -> pb.TransactionBody:
    return pb.TransactionBody(
        generator=records.node_info(key),
        create_time_ms=now_ms,
        expire_time_ms=now_ms + lifetime_ms,
        ttl=ttl,
        genesis_digest=genesis,
        model=model,
    )


class VirtualPeer:
    """One identity's transactions, each new (its own create time, so its own digest)."""

    def __init__(self, key: NodeKey, genesis: bytes, *, ttl: int, lifetime_ms: int) -> None:
        self.key = key
        self._genesis = genesis
        self._ttl = ttl
        self._lifetime_ms = lifetime_ms
        self._model: _Model | None = None
        self._last_ms = 0

    @property
    def has_model(self) -> bool:
        return self._model is not None

    def use_model(self, weights: bytes) -> None:
        """The weights the next transactions carry."""
        self._model = _Model(weights)

    def transaction(self, now_ms: int) -> bytes:
        """A SubmitTransaction payload. Two in one millisecond would be one transaction to the
        node (a duplicate), so create times step on by at least 1 ms."""
        if self._model is None:
            raise RuntimeError("use_model first: a transaction carries the node's model")
        self._last_ms = max(now_ms, self._last_ms + 1)
        body = _body(
            self.key, self._genesis, self._model.ref, self._last_ms, self._ttl, self._lifetime_ms
        )
        return _signed(self.key, body).SerializeToString() + self._model.field


class Forger:
    """Forged SubmitTransaction payloads of each kind in FORGED_KINDS, for one genesis."""

    def __init__(self, genesis: bytes, model_bytes: int, rng: np.random.Generator) -> None:
        self._genesis = genesis
        self._rng = rng
        self._zeros = _Model(bytes(model_bytes))
        self._short = _Model(bytes(WRONG_SHAPE_BYTES))
        self._key = NodeKey.generate()  # bad signatures score the connection, never a key

    def record(self, kind: str, now_ms: int) -> bytes:
        if kind == "garbage":
            return self._rng.bytes(GARBAGE_BYTES)
        if kind == "bad_signature":
            tx = _signed(
                self._key, self._forged_body(self._key, self._genesis, self._zeros, now_ms)
            )
            signature = bytearray(tx.signature)
            signature[5] ^= 0x40
            tx.signature = bytes(signature)
            return tx.SerializeToString() + self._zeros.field
        key = NodeKey.generate()
        if kind == "wrong_genesis":
            body = self._forged_body(
                key, ANOTHER_GENESIS[: len(self._genesis)], self._zeros, now_ms
            )
            return _signed(key, body).SerializeToString() + self._zeros.field
        if kind == "wrong_shape":
            body = self._forged_body(key, self._genesis, self._short, now_ms)
            return _signed(key, body).SerializeToString() + self._short.field
        raise ValueError(f"not a forged kind: {kind!r}")

    @staticmethod
    def _forged_body(
        key: NodeKey, genesis: bytes, model: _Model, now_ms: int
    ) -> pb.TransactionBody:
        return _body(key, genesis, model.ref, now_ms, ttl=1, lifetime_ms=120_000)
