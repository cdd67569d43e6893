"""Hypothesis strategies and protobuf mutations for fuzzing a node's RPCs (test_rpc_handlers.py).

Why structured mutations: random bytes rarely parse, and a byte flip in a parsed record mostly
breaks its signature, so neither reaches the checks behind it. A `Plan` mutates a valid message
field by field at any depth (clear, set to an edge value, flip a bit, duplicate, truncate, grow,
poison a float32 weight), optionally re-signs every signed part and re-mines a PoW block as a
forger holding the keys would (so the content checks run), then applies byte-level ops to the
wire form (so the parser's own edge cases run too). `seed` builds the valid requests, for a
node as it is at the time; the rest are strategies for the inputs that are not records:
random bytes, AddPeer's addresses, and control metadata that is not a valid signature.
"""

from __future__ import annotations

import random
import string
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from node.ledger import records
from node.ledger.hashing import digest_message, model_digest
from node.ledger.keys import NodeKey
from node.ledger.pow import header_hash, header_prefix, mine, models_digest
from node.service import control
from proto.dfl.v1 import node_pb2
from proto.dfl.v1 import records_pb2 as pb

Keys = dict[bytes, NodeKey]  # public key -> its key: the signers a forger holds
PIXELS = 28 * 28


def fuzz(examples: int) -> Callable[[Any], Any]:
    """Deterministic settings: CI runs the same examples every time."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


RAW = st.one_of(st.binary(max_size=64), st.binary(max_size=8192))  # short ones parse more often
PRINTABLE = st.text(string.ascii_letters + string.digits + string.punctuation, max_size=24)
PORTS = st.one_of(
    st.integers(0, 70000).map(str),
    st.text("0123456789", min_size=1, max_size=12),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=5),  # ², ١, ５...
    st.text(min_size=1, max_size=4),
    st.sampled_from(["", "+80", " 80", "8_0", "80 "]),
)
HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "node-3.example", "[", "a" * 254]),
    st.text("abcXYZ019._-[]:", max_size=20),
    st.text(max_size=12),
)


@st.composite
def forged_metadata(draw: st.DrawFn, served: Any, method: str) -> tuple | None:
    """Control metadata that is not the orchestrator's signature of `method` on the node
    `served` (a tests.served.ServedNode): none, a genuine signature of another control method,
    or the four headers (some missing) with the trusted key or another, the current time or
    any text, a nonce or any text, and a signature that is not one."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return None
    if choice == 1:
        others = sorted(control.CONTROL_METHODS - {method})
        return served.signed(draw(st.sampled_from(others)))
    nonce = st.binary(min_size=control.NONCE_BYTES, max_size=control.NONCE_BYTES).map(bytes.hex)
    headers = {
        control.KEY_HEADER: draw(st.one_of(st.just(served.control.key.public_key), st.binary())),
        control.TIME_HEADER: draw(st.one_of(st.just(str(now_ms())), PRINTABLE)),
        control.NONCE_HEADER: draw(st.one_of(nonce, PRINTABLE)),
        control.SIGNATURE_HEADER: draw(st.binary(max_size=70)),
    }
    dropped = draw(st.sets(st.sampled_from(sorted(headers)))) if choice == 2 else set()
    return tuple((k, v) for k, v in headers.items() if k not in dropped)


FIELD_OPS = ("clear", "set", "flip", "duplicate", "truncate", "grow", "poison")
WIRE_OPS = ("flip", "cut", "insert", "delete", "append", "overwrite")
RANGES = {  # by FieldDescriptor.TYPE_*
    **dict.fromkeys((3, 16, 18), (-(2**63), 2**63 - 1)),  # int64, sfixed64, sint64
    **dict.fromkeys((4, 6), (0, 2**64 - 1)),  # uint64, fixed64
    **dict.fromkeys((5, 14, 15, 17), (-(2**31), 2**31 - 1)),  # int32, enum, sfixed32, sint32
    **dict.fromkeys((7, 13), (0, 2**32 - 1)),  # fixed32, uint32
}
EDGES = [0, 1, -1, 2, 9, 10, 255, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
GENOME_BYTES = 192  # three field ops and two byte ops at most: about 140 bytes
REALS = [0.0, -0.0, 1.0, 1.0000001, -1.0, 1e300, float("nan"), float("inf"), -float("inf")]


class Genome:
    """Reads a plan's parameters from bytes (past the end, zeros). One binary draw costs
    Hypothesis far less than a structure of many draws (about 1 ms against 4 here), and it
    still shrinks: toward zero bytes, which mean no ops and the seed itself."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.at : self.at + n]
        self.at += n
        return out.ljust(n, b"\0")

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def blob(self) -> bytes:
        return self.take(self.byte() % 25)

    def number(self) -> int:
        choice = self.byte()
        return EDGES[choice % len(EDGES)] if choice < 160 else self.int(8) - 2**63

    def real(self) -> float:
        choice = self.byte()
        return REALS[choice % len(REALS)] if choice < 160 else struct.unpack("<d", self.take(8))[0]


@dataclass(frozen=True)
class Plan:
    """How to mutate one valid request: which seed (`variant`), field ops (kind, pick, blob,
    number, real, text), re-signing and re-committing, then byte ops (kind, offset, blob)."""

    variant: int
    fields: tuple[tuple, ...]
    reseal: bool
    refresh: bool
    wire: tuple[tuple, ...]

    @classmethod
    def of(cls, data: bytes) -> Plan:
        g = Genome(data)
        variant, flags = g.int(2), g.byte()
        fields = tuple(
            (FIELD_OPS[g.byte() % len(FIELD_OPS)], g.int(2), (blob := g.blob()), g.number(),
             g.real(), blob.decode("utf-8", "ignore") or blob.decode("latin-1"))
            for _ in range(flags >> 2 & 3)  # none in a quarter of plans: the valid seed
        )  # fmt: skip
        wire = tuple(
            (WIRE_OPS[g.byte() % len(WIRE_OPS)], g.int(2) if g.byte() < 200 else g.int(3),
             g.blob() or b"\x00")
            for _ in range((flags >> 4 & 3) % 3)
        )  # fmt: skip
        return cls(variant, fields, bool(flags & 1), bool(flags & 2), wire)


# Fixed-size genomes: Hypothesis draws their bytes near uniformly (a short one would read mostly
# the zeros past its end, and every plan would clear the first field).
PLANS = st.binary(min_size=GENOME_BYTES, max_size=GENOME_BYTES).map(Plan.of)


def slots(message: Message) -> list[tuple[Message, Any]]:
    """Every (message, field) at any depth: set or not, scalar or not."""
    found = []
    for fd in message.DESCRIPTOR.fields:
        found.append((message, fd))
        if fd.type == fd.TYPE_MESSAGE:
            value = getattr(message, fd.name)
            if fd.is_repeated:
                found += [slot for part in value for slot in slots(part)]
            elif message.HasField(fd.name):
                found += slots(value)
    return found


def scalar(fd: Any, value: Any, op: tuple) -> Any:
    """`value` of field `fd` after `op`."""
    kind, pick, blob, number, real, text = op
    if fd.type == fd.TYPE_BYTES:
        data = bytearray(value)
        if kind == "flip" and data:
            data[pick % len(data)] ^= 1 << (pick % 8)
        elif kind == "poison" and len(data) >= 4:  # one float32 weight set to NaN, inf, ...
            at = 4 * (pick % (len(data) // 4))
            data[at : at + 4] = struct.pack("<f", float("inf") if abs(real) > 3e38 else real)
        edits = {"set": blob, "grow": data + blob, "duplicate": data * 2}
        return bytes(
            edits.get(kind, data[: pick % (len(data) + 1)] if kind == "truncate" else data)
        )
    if fd.type == fd.TYPE_STRING:
        edits = {"set": text, "grow": value + text, "duplicate": value * 2}
        return edits.get(kind, value[: pick % (len(value) + 1)] if kind == "truncate" else text)
    if fd.type == fd.TYPE_BOOL:
        return not value
    if fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
        return real
    low, high = RANGES[fd.type]
    edits = {"flip": value ^ (1 << pick % 64), "grow": value + 1, "truncate": value - 1}
    new = edits.get(kind, value * 2 if kind == "duplicate" else number)
    return low + (new - low) % (high - low + 1)


def mutate(message: Message, op: tuple) -> None:
    """Applies one field op to the field `op` picks among `slots(message)`."""
    kind, pick = op[0], op[1]
    candidates = slots(message)
    if not candidates:  # an empty message type: nothing to mutate
        return
    parent, fd = candidates[pick % len(candidates)]
    value = getattr(parent, fd.name)
    try:
        if fd.is_repeated:
            if kind == "clear" and value:
                del value[pick % len(value)]
            elif fd.type == fd.TYPE_MESSAGE:
                added = value.add()
                if kind == "duplicate" and len(value) > 1:
                    added.CopyFrom(value[pick % (len(value) - 1)])
            elif value:
                value[pick % len(value)] = scalar(fd, value[pick % len(value)], op)
        elif kind == "clear":
            parent.ClearField(fd.name)
        elif fd.type != fd.TYPE_MESSAGE:
            setattr(parent, fd.name, scalar(fd, value, op))
        elif kind == "flip":
            value.Clear()
        else:
            value.SetInParent()
    except (TypeError, ValueError):  # a value this field cannot hold: no mutation
        pass


def rewire(data: bytes, op: tuple) -> bytes:
    """One byte-level op on wire bytes."""
    kind, offset, blob = op
    at = offset if offset <= len(data) else offset % (len(data) + 1)
    if kind == "flip":
        if not data:
            return data
        at %= len(data)
        return data[:at] + bytes([data[at] ^ (1 << (offset % 8))]) + data[at + 1 :]
    return {
        "cut": data[:at],
        "insert": data[:at] + blob + data[at:],
        "delete": data[:at] + data[at + len(blob) :],
        "append": data + blob,
        "overwrite": data[:at] + blob + data[at + len(blob) :],
    }[kind]


def remine(block: pb.PowBlock, keys: Keys, target: bytes, fallback: NodeKey) -> None:
    """Work and the miner's signature for the header as it now is (difficulty 1000: ~1 ms)."""
    found = mine(header_prefix(block.header), target, 0, 1 << 20).nonce
    block.header.nonce = found or 0
    block.hash = header_hash(block.header)
    block.signature = keys.get(block.miner.public_key, fallback).sign(block.hash)


def reseal(
    message: Message, keys: Keys, *, refresh: bool, target: bytes, fallback: NodeKey
) -> None:
    """Re-signs every signed part, innermost first, with the key its signer names (`fallback`
    when unknown); `refresh` also re-commits to the weights (ModelRef) and a block's models."""
    for fd, value in message.ListFields():
        if fd.type == fd.TYPE_MESSAGE:
            for part in value if fd.is_repeated else (value,):
                reseal(part, keys, refresh=refresh, target=target, fallback=fallback)
    if refresh and isinstance(message, pb.Transaction) and message.model:
        message.body.model.digest = model_digest(message.model)
    if isinstance(message, pb.PowBlock) and message.HasField("header"):
        if refresh:
            message.header.models_digest = models_digest(t.digest for t in message.transactions)
        remine(message, keys, target, fallback)
    elif {"body", "digest", "signature"} <= set(message.DESCRIPTOR.fields_by_name) and (
        message.HasField("body")
    ):
        body: Message = message.body  # type: ignore[attr-defined]
        signer = [v for _, v in body.ListFields() if isinstance(v, pb.NodeInfo)]
        key = keys.get(signer[0].public_key, fallback) if signer else fallback
        message.digest = digest_message(body)  # type: ignore[attr-defined]
        message.signature = key.sign(message.digest)  # type: ignore[attr-defined]


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def pad(data: bytes, size: int) -> bytes:
    """`data` and one unknown length-delimited field (number 1000), `size` bytes in all: every
    parser keeps it, no digest covers it."""
    tag = varint(1000 << 3 | 2)
    for length in range(max(0, size - len(data) - len(tag) - 10), size):
        if len(data) + len(tag) + len(varint(length)) + length == size:
            return data + tag + varint(length) + bytes(length)
    raise ValueError(f"cannot pad {len(data)} bytes to {size}")


# --- valid requests to mutate --------------------------------------------------------------------

KEYS = [NodeKey.from_seed(b"rpc-fuzz-%d" % i) for i in range(8)]
KEY_OF = {key.public_key: key for key in KEYS}


def now_ms() -> int:
    return int(time.time() * 1000)


def transaction(fz: Any, key: NodeKey, *, ttl: int = 1, round: int = 0) -> pb.Transaction:
    """A genuine model record of `key` carrying the node's own weights."""
    return records.make_transaction(
        key,
        genesis_digest=fz.node.genesis.digest,
        weights=fz.weights,
        now_ms=now_ms() - random.randrange(1000),
        ttl=ttl,
        lifetime_ms=60_000,
        round=round,
    )


def seed(fz: Any, method: str, variant: int) -> tuple[list[Message], Keys]:
    """A valid request of `method` (which one: `variant`) for the node `fz` (a Fuzzed of
    test_rpc_handlers.py) as it is now (genesis, weights, heights), and the keys that signed it.
    "SubmitPoolModel" is SubmitTransaction on a BLADE-FL node."""
    rng, keys, genesis = random.Random(variant), dict(KEY_OF), fz.node.genesis.digest
    if method == "SubmitTransaction":  # a fresh generator each time: never a duplicate
        generator = NodeKey.generate()
        keys[generator.public_key] = generator
        tx = transaction(fz, generator, ttl=1 + variant % 2)
        if variant % 2:  # relayed once: a receipt of ttl 1 - 1
            tx.receipts.append(records.make_receipt(KEYS[1], tx, accuracy=0.5, now_ms=now_ms()))
        return [tx], keys
    if method == "SubmitDraftBlock":  # a neighbour's draft: nothing of ours to confirm
        if "drafted" not in fz.cache:
            fz.cache["drafted"] = [records.without_model(transaction(fz, KEYS[0])) for _ in "ab"]
        block = records.draft_block(
            KEYS[0], height=1 + variant % 2, previous_digest=genesis, genesis_digest=genesis,
            transactions=fz.cache["drafted"][: variant % 3], now_ms=now_ms(),
        )  # fmt: skip
        return [block], keys
    if method == "SubmitConfirmations":
        digests = [[rng.randbytes(32) for _ in "btr"] for _ in range(1 + variant % 3)]
        return [
            pb.ConfirmationBatch(
                confirmations=[
                    records.make_confirmation(
                        KEYS[0], block_digest=b, transaction_digest=t, receipt_digest=r
                    )
                    for b, t, r in digests
                ]
            )
        ], keys
    if method == "InjectSamples":
        sample = lambda: node_pb2.Sample(pixels=rng.randbytes(PIXELS), label=rng.randrange(10))  # noqa: E731
        return [
            node_pb2.SampleBatch(samples=[sample() for _ in range(1 + rng.randrange(3))])
            for _ in range(1 + variant % 2)
        ], keys
    state = fz.engine.state
    if method == "SubmitPowBlock":  # the next height (a candidate to vote for) or beyond it
        height = state.height + (1, 2, 5)[variant % 3]
        previous = state.chain[-1] if height == state.height + 1 else rng.randbytes(32)
        txs = []
        if variant % 4 == 3 and height > state.height + 1:  # models are checked when ahead
            txs = [records.without_model(transaction(fz, KEYS[2], ttl=0, round=height))]
        header = records.pow_header(
            height=height, previous_hash=previous, transactions=txs,
            miner=KEYS[3].address, time_ms=now_ms(),
        )  # fmt: skip
        block = records.make_pow_block(KEYS[3], header, 0, txs)
        remine(block, keys, fz.engine.target, KEYS[3])
        return [block], keys
    if method == "SubmitBlockVote":  # mostly a new voter; some that voted at the height before
        voter = KEYS[variant % 8] if variant % 4 == 0 else NodeKey.generate()
        keys[voter.public_key] = voter
        height = (state.height + 1, state.height + 2, 1, 1000)[variant // 4 % 4]
        hash = rng.randbytes(32)
        return [
            records.make_vote(voter, height=height, block_hash=hash, genesis_digest=genesis)
        ], keys
    if method == "SubmitPoolModel":  # three clients' models, of rounds open, closed or too far
        round = (1, 2, 3, 0)[variant // 3 % 4]
        return [transaction(fz, KEYS[5 + variant % 3], ttl=0, round=round)], keys
    small: dict[str, Message] = {
        "GetStatus": node_pb2.StatusRequest(),
        "GetModel": node_pb2.ModelRequest(),
        "ListPeers": node_pb2.PeerRequest(),
        "StreamChain": node_pb2.ChainRequest(from_height=variant % 3),
        "GetRoundModels": node_pb2.RoundRequest(round=variant % 4),
        "AddPeer": node_pb2.PeerRequest(peer=f"127.0.0.1:{1 + variant % 65535}"),
        "RemovePeer": node_pb2.PeerRequest(peer=f"127.0.0.1:{1 + variant % 2}"),
        "SetNetworkFault": node_pb2.NetworkFault(
            delay_ms=variant % 50, jitter_ms=variant % 7, loss=(variant % 5) / 8, cut=["a:1"]
        ),
    }
    return [small[method]], keys


def mutated(fz: Any, method: str, plan: Plan) -> bytes | list[bytes]:
    """The seed `plan` picks, mutated as it says."""
    messages, keys = seed(fz, method, plan.variant)
    target = messages[plan.variant % len(messages)]
    for op in plan.fields:
        mutate(target, op)
    if plan.reseal:
        work = getattr(fz.engine, "target", bytes(32))
        reseal(target, keys, refresh=plan.refresh, target=work, fallback=KEYS[4])
    chunks = [m.SerializeToString() for m in messages]
    for op in plan.wire:
        at = plan.variant % len(chunks)
        chunks[at] = rewire(chunks[at], op)
    return chunks if method == "InjectSamples" else chunks[0]
