"""Valid records to mutate, and engines in the states that receive them.

Everything is built once, at import, by running the real protocol on a tiny 15-weight model: a
DFL generator and receiver through one transaction, receipt, draft, confirmation and
finalization, and a BLADE-FL client through a round of models, mined blocks, votes and an
appended block. So every seed is a record some engine actually accepted, and every engine state
is one an engine can actually be in. The limit on message size is small (FUZZ_MAX_BYTES), so
inputs on either side of it stay cheap.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import Message

from node.learning.codec import LayerShapes, encode_safetensors
from node.ledger import records
from node.ledger.keys import NodeKey
from node.ledger.pow import MAX_NONCE, header_prefix, mine
from node.ledger.validation import ValidationPolicy
from node.protocol.blade import BladeConfig, BladeEngine
from node.protocol.dfl import DflConfig, DflEngine
from node.protocol.events import (
    ConfirmationsReceived,
    DraftBlockReceived,
    EvaluationDone,
    LocalModelReady,
    PersistBlock,
    PowBlockReceived,
    SamplesCollected,
    TrainingDone,
    TransactionReceived,
    VoteReceived,
)
from node.protocol.framing import frame_model
from proto.dfl.v1 import records_pb2 as pb

# The tiny model of tests/support.py (15 weights), built here because that module imports the
# in-memory runtime and with it most of node/, which atheris would then instrument for nothing.
TINY_LAYERS = (("fc.weight", (3, 4)), ("fc.bias", (3,)))


def key(name: str) -> NodeKey:
    return NodeKey.from_seed(name.encode())


def tiny_weights(value: float = 0.5, count: int = 15) -> bytes:
    return np.full(count, value, dtype="<f4").tobytes()


def _tiny_genesis(protocol: str, hyperparameters: dict[str, object]) -> pb.Genesis:
    return records.make_genesis(
        protocol=protocol,
        model_architecture="tiny",
        layers=TINY_LAYERS,
        hyperparameters=hyperparameters,
        seed=7,
    )


FUZZ_MAX_BYTES = 4096  # every seed fits; boundary inputs of this size parse in microseconds
SHAPES: LayerShapes = [(name, tuple(shape)) for name, shape in TINY_LAYERS]

DFL_GENESIS = _tiny_genesis("dfl", {"lr": 0.01, "batch_size": 4})
BLADE_GENESIS = _tiny_genesis("blade-fl", {"lr": 0.01, "pow_difficulty": 64})
DFL_POLICY = ValidationPolicy.for_genesis(DFL_GENESIS, max_message_bytes=FUZZ_MAX_BYTES)
BLADE_POLICY = ValidationPolicy.for_genesis(BLADE_GENESIS, max_message_bytes=FUZZ_MAX_BYTES)
DFL_CONFIG = DflConfig(
    batch_size=4,
    fedavg_buffer=2,
    transactions_per_block=1,
    ttl=1,
    transaction_lifetime=10.0,
    receipt_wait=2.0,
    confirmation_timeout=3.0,
    max_message_bytes=FUZZ_MAX_BYTES,
)
BLADE_CONFIG = BladeConfig(
    clients=4,
    rounds=5,
    local_iterations=2,
    dataset_size=64,
    collect_timeout=3.0,
    vote_timeout=2.0,
    max_message_bytes=FUZZ_MAX_BYTES,
)
NOW_MS = 1_000  # the DFL validator targets' clock: inside every seed transaction's lifetime


@dataclass(frozen=True)
class Scenario:
    """An engine in one state, the time at which it is handed an event, and what it trusts.

    `engine` is a template and never handles an event itself; `working()` gives a copy that may.
    A copy that refused an event is handed out again (its state was checked to be the template's,
    and deep copies are most of an engine input's cost); `discard()` drops one that accepted.
    `trusted` are the digests the engine verified while it was being built: by design
    (validation.check_signed) it does not check their signatures a second time.
    """

    name: str
    engine: Any  # DflEngine | BladeEngine
    now: float
    trusted: frozenset[bytes] = frozenset()
    _spare: list[Any] = field(default_factory=list, compare=False, repr=False)

    def working(self) -> Any:
        if not self._spare:
            clone = copy.copy(self.engine)
            clone.state = self.engine.snapshot()
            self._spare.append(clone)
        return self._spare[0]

    def discard(self) -> None:
        self._spare.clear()


def _template(name: str, engine: Any, now: float, trusted: set[bytes] | None = None) -> Scenario:
    """Freezes `engine`'s current state into a scenario (the engine itself goes on)."""
    frozen = copy.copy(engine)
    frozen.state = engine.snapshot()
    return Scenario(name, frozen, now, frozenset(trusted or ()))


def _wire(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


# --- DFL: one transaction from a to b and back, drafted, confirmed, finalized ------------------


def _build_dfl() -> dict[str, Any]:
    a = DflEngine(key("a"), DFL_GENESIS, DFL_CONFIG, peers=("b",))
    b = DflEngine(key("b"), DFL_GENESIS, DFL_CONFIG, peers=("a", "c"))
    receiver = _template("receiver", b, 0.2)
    a.handle(SamplesCollected(4), 0.0)
    (send,) = a.handle(TrainingDone(tiny_weights(0.25)), 0.1)
    tx = pb.Transaction.FromString(send.payload)
    generator = _template("generator", a, 0.3, {tx.digest})
    (evaluate,) = b.handle(TransactionReceived(send.payload, "a"), 0.2)
    (back,) = b.handle(EvaluationDone(evaluate.transaction_digest, 0.875), 0.2)
    with_receipt = pb.Transaction.FromString(back.payload)
    receipt = with_receipt.receipts[0]
    relay = _template("relay", b, 0.3, {tx.digest, receipt.digest})
    (_, draft) = a.handle(TransactionReceived(back.payload, "b"), 0.3)  # PersistDraft, Send
    drafted = _template("drafted", a, 0.5)
    (confirm,) = b.handle(DraftBlockReceived(draft.payload, "a"), 0.4)
    (persist, *_) = a.handle(ConfirmationsReceived(confirm.payload, "b"), 0.5)
    assert isinstance(persist, PersistBlock)

    from_c = records.without_model(tx)  # the copy c (b's other neighbour) sends back to b
    from_c.receipts.append(records.make_receipt(key("c"), tx, accuracy=0.5, now_ms=250))
    return {
        "tx": send.payload,
        "with_receipt": back.payload,
        "from_c": _wire(from_c),
        "draft": draft.payload,
        "confirmations": confirm.payload,
        "final": _wire(persist.block),
        "receiver": receiver,
        "generator": generator,
        "relay": relay,
        # b as it was when the draft came: its receipt written, not yet confirmed
        "confirming": Scenario("confirming", relay.engine, 0.4, relay.trusted),
        "drafted": drafted,
    }


def _receipt_chain() -> tuple[pb.Transaction, pb.Block]:
    """A ttl-3 transaction with two receipts in path order, finalized with both confirmed."""
    tx = records.make_transaction(
        key("gen"),
        genesis_digest=DFL_GENESIS.digest,
        weights=tiny_weights(0.5),
        now_ms=NOW_MS - 100,
        ttl=3,
        lifetime_ms=60_000,
    )
    for index, name in enumerate(("r1", "r2")):
        receipt = records.make_receipt(key(name), tx, accuracy=0.6 + index / 10, now_ms=NOW_MS)
        tx.receipts.append(receipt)
    draft = records.draft_block(
        key("gen"),
        height=1,
        previous_digest=DFL_GENESIS.digest,
        genesis_digest=DFL_GENESIS.digest,
        transactions=[tx],
        now_ms=NOW_MS,
    )
    confirmations = [
        records.make_confirmation(
            key(name),
            block_digest=draft.digest,
            transaction_digest=tx.digest,
            receipt_digest=receipt.digest,
        )
        for name, receipt in zip(("r1", "r2"), tx.receipts, strict=True)
    ]
    final = records.finalize_block(
        key("gen"), draft, confirmations=confirmations, now_ms=NOW_MS, quorum=0.6, timed_out=False
    )
    return tx, final


# --- BLADE-FL: round 1 collected, mined, voted and appended; round 2 collected --------------


def _pool_model(client: NodeKey, round: int, value: float) -> pb.Transaction:
    return records.make_transaction(
        client,
        genesis_digest=BLADE_GENESIS.digest,
        weights=tiny_weights(value),
        now_ms=1_000 * round,
        ttl=0,
        lifetime_ms=10_000,
        round=round,
    )


def _mined(miner: NodeKey, pool: list[pb.Transaction], height: int, previous: bytes) -> pb.PowBlock:
    ordered = sorted(pool, key=lambda tx: tx.body.generator.address)
    header = records.pow_header(
        height=height,
        previous_hash=previous,
        transactions=ordered,
        miner=miner.address,
        time_ms=2_000 * height,
    )
    nonce = mine(header_prefix(header), BLADE_POLICY.pow_target or b"", 0, MAX_NONCE).nonce
    assert nonce is not None
    return records.make_pow_block(miner, header, nonce, ordered)


def _build_blade() -> dict[str, Any]:
    n0 = BladeEngine(key("n0"), BLADE_GENESIS, BLADE_CONFIG, peers=("n1", "n2", "n3"))
    waiting = _template("waiting", n0, 1.1)
    n0.handle(SamplesCollected(BLADE_CONFIG.dataset_size), 0.0)
    (send, *_) = n0.handle(LocalModelReady(1, tiny_weights(0.1)), 1.0)
    pool1 = [pb.Transaction.FromString(send.payload)]
    pool1 += [_pool_model(key(name), 1, 0.2 + i / 10) for i, name in enumerate(("n1", "n2", "n3"))]
    for tx in pool1[1:3]:
        n0.handle(TransactionReceived(_wire(tx), "peer"), 1.1)
    collecting = _template("collecting", n0, 1.2)
    n0.handle(TransactionReceived(_wire(pool1[3]), "n3"), 1.2)
    mining = _template("mining", n0, 1.5)

    block1 = _mined(key("n1"), pool1, 1, BLADE_GENESIS.digest)
    rival1 = _mined(key("n2"), pool1, 1, BLADE_GENESIS.digest)
    votes1 = [
        records.make_vote(
            key(name), height=1, block_hash=block1.hash, genesis_digest=BLADE_GENESIS.digest
        )
        for name in ("n1", "n2")
    ]
    n0.handle(PowBlockReceived(_wire(block1), "n1"), 1.5)
    for vote in votes1:
        n0.handle(VoteReceived(_wire(vote), "peer"), 1.6)
    assert n0.state.height == 1
    (send2, *_) = n0.handle(LocalModelReady(2, tiny_weights(0.15)), 2.0)
    pool2 = [pb.Transaction.FromString(send2.payload)]
    pool2 += [_pool_model(key(name), 2, 0.3 + i / 10) for i, name in enumerate(("n1", "n2", "n3"))]
    for tx in pool2[1:]:
        n0.handle(TransactionReceived(_wire(tx), "peer"), 2.1)
    appended = _template("appended", n0, 2.5)
    block2 = _mined(key("n1"), pool2, 2, block1.hash)
    vote2 = records.make_vote(
        key("n2"), height=2, block_hash=block2.hash, genesis_digest=BLADE_GENESIS.digest
    )
    return {
        "pool1": pool1,
        "pool2": pool2,
        "blocks": [block1, rival1, block2],
        "votes": [votes1[0], vote2],
        "scenarios": {
            "waiting": waiting,
            "collecting": collecting,
            "mining": mining,
            "appended": appended,
        },
    }


DFL = _build_dfl()
RECEIPT_TX, RICH_FINAL = _receipt_chain()
BLADE = _build_blade()
BLOCK1, RIVAL1, BLOCK2 = BLADE["blocks"]


def _signed_digests(message: Message) -> set[bytes]:
    """The digest (or PoW hash) of every signed record inside `message`, itself included."""
    found: set[bytes] = set()
    names = message.DESCRIPTOR.fields_by_name
    if "signature" in names:
        found.add(message.hash if "hash" in names else message.digest)
    if "final_signature" in names and message.final_digest:
        found.add(message.final_digest)
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        for item in value if descriptor.is_repeated else [value]:
            found |= _signed_digests(item)
    return found


# --- seeds, by what decodes them ----------------------------------------------------------------

DFL_TRANSACTIONS = (DFL["tx"], DFL["with_receipt"], DFL["from_c"], _wire(RECEIPT_TX))
RECEIPTS = tuple(_wire(receipt) for receipt in RECEIPT_TX.receipts)
DRAFTS = (DFL["draft"], DFL["final"], _wire(RICH_FINAL))
FINALS = (DFL["final"], _wire(RICH_FINAL))
CONFIRMATION_BATCHES = (
    DFL["confirmations"],
    _wire(pb.ConfirmationBatch(confirmations=RICH_FINAL.finalization.confirmations)),
)
POOL_MODELS = tuple(_wire(tx) for tx in BLADE["pool1"] + BLADE["pool2"])
POW_BLOCKS = tuple(_wire(block) for block in BLADE["blocks"])
VOTES = tuple(_wire(vote) for vote in BLADE["votes"])
GENESES = (_wire(DFL_GENESIS), _wire(BLADE_GENESIS))
TRANSACTION_BATCHES = (
    _wire(pb.TransactionBatch(transactions=BLADE["pool1"])),
    _wire(pb.TransactionBatch(transactions=BLADE["pool2"])),
)
_EDGE_WEIGHTS = np.array([0.0, -0.0, 1.5, -3.4e38, 3.4e38, 1e-45, -1e-45, 1.0] * 2, "<f4")[:15]
F32LE = (tiny_weights(0.5), _EDGE_WEIGHTS.tobytes())
SAFETENSORS = (
    encode_safetensors(np.frombuffer(F32LE[0], "<f4"), SHAPES),
    encode_safetensors(_EDGE_WEIGHTS, SHAPES, metadata={"format": "pt"}),
)
FRAMES = (
    frame_model(key("n1").address, tiny_weights(0.5), round=1),
    frame_model(key("n2").address, tiny_weights(0.25)),
)
# A fetched chain (ChainFetched): block 1, block 2 and the models of round 2, as slots.
CHAIN_BLOCKS = (_wire(BLOCK1), _wire(BLOCK2))
CHAIN_MODELS = tuple(_wire(tx) for tx in BLADE["pool2"])

GENUINE: frozenset[bytes] = frozenset(
    digest
    for wires, kind in (
        (DFL_TRANSACTIONS, pb.Transaction),
        (DRAFTS, pb.Block),
        (CONFIRMATION_BATCHES, pb.ConfirmationBatch),
        (POOL_MODELS, pb.Transaction),
        (POW_BLOCKS, pb.PowBlock),
        (VOTES, pb.BlockVote),
    )
    for wire in wires
    for digest in _signed_digests(kind.FromString(wire))
)
"""Every digest a key in this corpus signed: anything an engine accepts must be among them."""
GENUINE_HEADERS: dict[bytes, pb.PowHeader] = {block.hash: block.header for block in BLADE["blocks"]}
"""A mined block's meaning is its header, and its hash is not a protobuf digest (pow.py packs
the header in a fixed layout): an accepted block must carry exactly the header that was mined."""
