"""Every decoder, validator and engine handler that takes bytes from a peer, with its oracle.

A target's `run(data)` feeds `data` to one or more checks and returns, for each, whether it
accepted. It enforces the invariants itself, so the Hypothesis tests and the atheris target
share one definition of a bug:

- a refusal is `RecordRejected` (unframe_model and the chainless engines: `ValueError`, their
  documented contract); any other exception propagates as the finding it is;
- an engine that refuses leaves its state exactly as it was;
- an engine that accepts has accepted something genuine: every signed part hashes to its digest,
  that digest is one a key of the corpus signed (GENUINE), and the full audit passes, the same
  checks a node applies when it reads the record back from its store (so a signature the engine
  skipped must still verify, unless the engine had verified that very digest before).

An audit failure is an AssertionError, not a RecordRejected, so it can never pass as a refusal.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import Message

from node.learning.codec import decode_f32le, decode_safetensors
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.hashing import digest_message
from node.ledger.keys import verify_signature
from node.ledger.validation import (
    ValidationPolicy,
    decode,
    validate_confirmation,
    validate_draft_block,
    validate_final_block,
    validate_pool_model,
    validate_pow_block,
    validate_receipt,
    validate_transaction,
    validate_vote,
)
from node.protocol.blade_chainless import ChainlessBladeEngine
from node.protocol.blade_rounds import BladeConfig
from node.protocol.chainless import ChainlessDflEngine
from node.protocol.events import (
    ChainFetched,
    ConfirmationsReceived,
    DraftBlockReceived,
    PowBlockReceived,
    TransactionReceived,
    VoteReceived,
)
from node.protocol.framing import frame_model, unframe_model
from proto.dfl.v1 import records_pb2 as pb
from tests.fuzz import corpus as c
from tests.fuzz.corpus import FUZZ_MAX_BYTES, GENUINE, GENUINE_HEADERS, Scenario, key

Outcome = tuple[bool, ...]


@dataclass(frozen=True)
class Target:
    """`kind` tells the strategies how to mutate: "protobuf" (of `message`), "chain" (a slot
    selector byte, then a protobuf record), "safetensors", "f32le", "frame", or "mixed" for a
    group of targets of several formats (which only random inputs are made for)."""

    name: str
    run: Callable[[bytes], Outcome]
    seeds: tuple[bytes, ...]
    kind: str = "protobuf"
    message: type[Message] | None = None

    def __repr__(self) -> str:  # failure reports show the input, not kilobytes of seeds
        return f"<target {self.name}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what Hypothesis prints
        printer.text(repr(self))


def _accepts(check: Callable[[], object]) -> bool:
    try:
        check()
    except RecordRejected:
        return False
    return True


def _audit(what: str, check: Callable[[], object]) -> None:
    """A check an accepted record must pass; its RecordRejected is a finding, not a refusal."""
    try:
        check()
    except RecordRejected as error:
        raise AssertionError(f"{what}: accepted, but the full audit refuses it: {error}") from None


def _genuine(what: str, *digests: bytes) -> None:
    for digest in digests:
        assert digest in GENUINE, f"{what}: accepted a record no key signed ({digest.hex()})"


def _decoded(message: type[Message], data: bytes) -> Any:
    return decode(message, data, FUZZ_MAX_BYTES)


# --- ledger validators -------------------------------------------------------------------------


def _validator(
    message: type[Message], *checks: Callable[[Any], object]
) -> Callable[[bytes], Outcome]:
    """Decode, then each check on its own decoded copy (a check may not see another's edits)."""

    def run(data: bytes) -> Outcome:
        try:
            _decoded(message, data)
        except RecordRejected:
            return (False,) * len(checks)
        return tuple(
            _accepts(lambda check=check: check(_decoded(message, data))) for check in checks
        )

    return run


def _genesis_as_the_store_reads_it(genesis: pb.Genesis) -> None:
    """ChainStore.open's steps: decode, the digest over the body, then the policy it implies."""
    if digest_message(genesis.body) != genesis.digest:  # the store: ChainCorrupted at height 0
        raise RecordRejected(RejectReason.DIGEST_MISMATCH, "genesis body does not hash")
    ValidationPolicy.for_genesis(genesis)


def _transaction_batch(batch: pb.TransactionBatch) -> None:
    for tx in batch.transactions:  # what a client catching up does with GetRoundModels
        validate_pool_model(tx, c.BLADE_POLICY)


def _confirmations(batch: pb.ConfirmationBatch) -> None:
    for confirmation in batch.confirmations:
        validate_confirmation(confirmation, pb.Block.FromString(c.DFL["draft"]))


POOL1_SIGNATURES = {tx.digest: tx.signature for tx in c.BLADE["pool1"]}


# --- codecs and framing --------------------------------------------------------------------------


def _flat_model(decoder: Callable[[bytes, Any], np.ndarray]) -> Callable[[bytes], Outcome]:
    def run(data: bytes) -> Outcome:
        try:
            flat = decoder(data, c.SHAPES)
        except RecordRejected:
            return (False,)
        assert flat.shape == (15,) and flat.dtype == np.float32, flat.shape
        assert np.isfinite(flat).all(), "a decoded model holds non-finite weights"
        return (True,)

    return run


def _frame(data: bytes) -> Outcome:
    try:
        framed = unframe_model(data)
    except ValueError:  # its documented refusal: only the simulator feeds the chainless engines
        return (False,)
    assert frame_model(framed.generator, framed.model, round=framed.round) == data
    return (True,)


_CHAINLESS_BLADE = BladeConfig(clients=4, rounds=5, local_iterations=1, dataset_size=1)


def _chainless(data: bytes) -> Outcome:
    """Both chainless engines: they accept a frame or raise ValueError, as documented."""
    outcome = []
    for engine in (
        ChainlessDflEngine(key("n0").address, c.DFL_CONFIG),
        ChainlessBladeEngine(key("n0").address, _CHAINLESS_BLADE, peers=("n1",)),
    ):
        try:
            engine.handle(TransactionReceived(data, "n1"), 1.0)
        except ValueError:
            outcome.append(False)
        else:
            outcome.append(True)
    return tuple(outcome)


# --- engines ----------------------------------------------------------------------------------


def _engine(
    scenarios: Sequence[Scenario],
    event: Callable[[bytes], object],
    audit: Callable[[bytes, Scenario], None],
    same: Callable[[Any, Any], bool] = lambda after, before: after == before,
) -> Callable[[bytes], Outcome]:
    """Hands `event(data)` to each scenario's working engine and checks the outcome.

    `same` says whether a refusal left the state as it was (by default: equal to the template).
    """

    def run(data: bytes) -> Outcome:
        outcome = []
        for scenario in scenarios:
            engine = scenario.working()
            try:
                engine.handle(event(data), scenario.now)
            except RecordRejected as error:
                if engine.state != scenario.engine.state:
                    scenario.discard()  # the next input starts from the template again
                    assert same(engine.state, scenario.engine.state), (
                        f"{scenario.name}: state changed by a refused record ({error})"
                    )
                outcome.append(False)
            except BaseException:
                scenario.discard()
                raise
            else:
                scenario.discard()
                audit(data, scenario)
                outcome.append(True)
        return tuple(outcome)

    return run


def _audit_dfl_transaction(data: bytes, scenario: Scenario) -> None:
    tx = _decoded(pb.Transaction, data)
    what = f"dfl.transaction/{scenario.name}"
    parts = [(tx, tx.body.generator), *((r, r.body.creator) for r in tx.receipts)]
    for part, signer in parts:
        assert digest_message(part.body) == part.digest, f"{what}: body does not hash to digest"
        _genuine(what, part.digest)
        assert part.digest in scenario.trusted or verify_signature(
            signer.public_key, part.digest, part.signature
        ), f"{what}: accepted a signature that does not verify on a digest it had not seen"
    now_ms = round(scenario.now * 1000)
    _audit(
        what,
        lambda: validate_transaction(
            tx, c.DFL_POLICY, now_ms=now_ms, weights="optional", trusted=scenario.trusted
        ),
    )


def _audit_draft(data: bytes, scenario: Scenario) -> None:
    block = _decoded(pb.Block, data)
    _genuine("dfl.draft", block.digest)
    _audit("dfl.draft", lambda: validate_draft_block(block, c.DFL_POLICY, contents=True))


def _audit_confirmations(data: bytes, scenario: Scenario) -> None:
    batch = _decoded(pb.ConfirmationBatch, data)
    draft = scenario.engine.state.draft.block
    for confirmation in batch.confirmations:
        _genuine("dfl.confirmations", confirmation.digest)
        _audit("dfl.confirmations", lambda c=confirmation: validate_confirmation(c, draft))


def _audit_pool_model(data: bytes, scenario: Scenario) -> None:
    tx = _decoded(pb.Transaction, data)
    _genuine("blade.transaction", tx.digest)
    _audit("blade.transaction", lambda: validate_pool_model(tx, c.BLADE_POLICY))


def _audit_pow_block(data: bytes, scenario: Scenario) -> None:
    """What ChainStore.verify checks once the block is persisted (no pool: every signature)."""
    block = _decoded(pb.PowBlock, data)
    what = f"blade.pow_block/{scenario.name}"
    _genuine(what, block.hash, *(tx.digest for tx in block.transactions))
    assert block.header == GENUINE_HEADERS[block.hash], (
        f"{what}: accepted a header that is not the one mined, under the same hash and signature"
    )
    _audit(what, lambda: validate_pow_block(block, c.BLADE_POLICY, previous_hash=None))


def _audit_vote(data: bytes, scenario: Scenario) -> None:
    vote = _decoded(pb.BlockVote, data)
    _genuine("blade.vote", vote.digest)
    _audit("blade.vote", lambda: validate_vote(vote, c.BLADE_POLICY))


# A fetched chain travels as several byte strings; one input replaces (or adds) one of them.
CHAIN_SLOTS = (*c.CHAIN_BLOCKS, *c.CHAIN_MODELS)


def chain_event(data: bytes) -> ChainFetched:
    """data[0] picks a slot (blocks, then models); with its top bit the rest is inserted after
    that slot, else it replaces it. Empty data fetches an empty chain."""
    if not data:
        return ChainFetched("n1", (), ())
    slots = list(CHAIN_SLOTS)
    slot = data[0] % len(slots)
    if data[0] & 0x80:
        slots.insert(slot + 1, data[1:])
    else:
        slots[slot] = data[1:]
    blocks = len(c.CHAIN_BLOCKS) + (1 if data[0] & 0x80 and slot < len(c.CHAIN_BLOCKS) else 0)
    return ChainFetched("n1", tuple(slots[:blocks]), tuple(slots[blocks:]))


def _audit_chain(data: bytes, scenario: Scenario) -> None:
    event = chain_event(data)
    previous = c.BLADE_GENESIS.digest
    for height, wire in enumerate(event.blocks, start=1):
        block = _decoded(pb.PowBlock, wire)
        _genuine("blade.chain", block.hash)
        assert block.header == GENUINE_HEADERS[block.hash], "blade.chain: a header not mined"
        _audit(
            "blade.chain",
            lambda b=block, p=previous: validate_pow_block(b, c.BLADE_POLICY, previous_hash=p),
        )
        assert block.header.height == height, "blade.chain: accepted a block out of order"
        previous = block.hash
    for wire in event.models:
        tx = _decoded(pb.Transaction, wire)
        _genuine("blade.chain", tx.digest)
        _audit("blade.chain", lambda t=tx: validate_pool_model(t, c.BLADE_POLICY))


def _same_but_fetch_over(after: Any, before: Any) -> bool:
    """A fetch that brought a bad chain is still over: only its bookkeeping may change."""
    normalised = copy.copy(after)
    normalised.fetch_in_flight = before.fetch_in_flight
    normalised.next_fetch_at = before.next_fetch_at
    return normalised == before


_DFL = c.DFL
_BLADE = c.BLADE["scenarios"]

TARGETS: tuple[Target, ...] = (
    Target(
        "transaction",
        _validator(
            pb.Transaction,
            lambda tx: validate_transaction(tx, c.DFL_POLICY, now_ms=c.NOW_MS),
            lambda tx: validate_transaction(tx, c.DFL_POLICY, now_ms=None, weights="optional"),
        ),
        c.DFL_TRANSACTIONS,
        message=pb.Transaction,
    ),
    Target(
        "receipt",
        _validator(pb.Receipt, lambda receipt: validate_receipt(receipt, c.RECEIPT_TX)),
        c.RECEIPTS,
        message=pb.Receipt,
    ),
    Target(
        "draft_block",
        _validator(
            pb.Block,
            lambda block: validate_draft_block(block, c.DFL_POLICY, contents=False),
            lambda block: validate_draft_block(block, c.DFL_POLICY, contents=True),
        ),
        c.DRAFTS,
        message=pb.Block,
    ),
    Target(
        "final_block",
        _validator(
            pb.Block,
            lambda block: validate_final_block(
                block, c.DFL_POLICY, height=1, previous_digest=c.DFL_GENESIS.digest
            ),
        ),
        c.FINALS,
        message=pb.Block,
    ),
    Target(
        "confirmations",
        _validator(pb.ConfirmationBatch, _confirmations),
        c.CONFIRMATION_BATCHES,
        message=pb.ConfirmationBatch,
    ),
    Target(
        "pool_model",
        _validator(pb.Transaction, lambda tx: validate_pool_model(tx, c.BLADE_POLICY)),
        c.POOL_MODELS,
        message=pb.Transaction,
    ),
    Target(
        "pow_block",
        _validator(
            pb.PowBlock,
            lambda block: validate_pow_block(block, c.BLADE_POLICY, previous_hash=None),
            lambda block: validate_pow_block(
                block, c.BLADE_POLICY, previous_hash=c.BLADE_GENESIS.digest, pool=POOL1_SIGNATURES
            ),
        ),
        c.POW_BLOCKS,
        message=pb.PowBlock,
    ),
    Target(
        "vote",
        _validator(pb.BlockVote, lambda vote: validate_vote(vote, c.BLADE_POLICY)),
        c.VOTES,
        message=pb.BlockVote,
    ),
    Target(
        "genesis",
        _validator(pb.Genesis, _genesis_as_the_store_reads_it),
        c.GENESES,
        message=pb.Genesis,
    ),
    Target(
        "transaction_batch",
        _validator(pb.TransactionBatch, _transaction_batch),
        c.TRANSACTION_BATCHES,
        message=pb.TransactionBatch,
    ),
    Target("f32le", _flat_model(decode_f32le), c.F32LE, kind="f32le"),
    Target("safetensors", _flat_model(decode_safetensors), c.SAFETENSORS, kind="safetensors"),
    Target("frame", _frame, c.FRAMES, kind="frame"),
    Target("chainless.transaction", _chainless, c.FRAMES, kind="frame"),
    Target(
        "dfl.transaction",
        _engine(
            [_DFL["receiver"], _DFL["relay"], _DFL["generator"]],
            lambda data: TransactionReceived(data, "c"),
            _audit_dfl_transaction,
        ),
        c.DFL_TRANSACTIONS,
        message=pb.Transaction,
    ),
    Target(
        "dfl.draft",
        _engine([_DFL["confirming"]], lambda data: DraftBlockReceived(data, "a"), _audit_draft),
        c.DRAFTS,
        message=pb.Block,
    ),
    Target(
        "dfl.confirmations",
        _engine(
            [_DFL["drafted"]], lambda data: ConfirmationsReceived(data, "b"), _audit_confirmations
        ),
        c.CONFIRMATION_BATCHES,
        message=pb.ConfirmationBatch,
    ),
    Target(
        "blade.transaction",
        _engine(
            [_BLADE["waiting"], _BLADE["collecting"]],
            lambda data: TransactionReceived(data, "n3"),
            _audit_pool_model,
        ),
        c.POOL_MODELS,
        message=pb.Transaction,
    ),
    Target(
        "blade.pow_block",
        _engine(
            [_BLADE["waiting"], _BLADE["mining"], _BLADE["appended"]],
            lambda data: PowBlockReceived(data, "n1"),
            _audit_pow_block,
        ),
        c.POW_BLOCKS,
        message=pb.PowBlock,
    ),
    Target(
        "blade.vote",
        _engine(
            [_BLADE["mining"], _BLADE["appended"]],
            lambda data: VoteReceived(data, "n2"),
            _audit_vote,
        ),
        c.VOTES,
        message=pb.BlockVote,
    ),
    Target(
        "blade.chain",
        _engine([_BLADE["waiting"]], chain_event, _audit_chain, _same_but_fetch_over),
        tuple(bytes([slot]) + wire for slot, wire in enumerate(CHAIN_SLOTS)),
        kind="chain",
    ),
)
BY_NAME = {target.name: target for target in TARGETS}
ALL_SEEDS = tuple(dict.fromkeys(seed for target in TARGETS for seed in target.seeds))


def together(name: str, members: Sequence[Target]) -> Target:
    """One target feeding each input to every member, so one generated input counts for all.

    Every member runs even when an earlier one fails, then the first failure is raised, noted
    with the names of all that failed (Hypothesis shrinks on it like on any other).
    """

    def run(data: bytes) -> Outcome:
        outcome: list[bool] = []
        failures: list[tuple[str, Exception]] = []
        for member in members:
            try:
                outcome.extend(member.run(data))
            except Exception as error:  # re-raised below, once every member has run
                failures.append((member.name, error))
        if failures:
            first = failures[0][1]
            first.add_note(f"fuzz targets failing on this input: {[n for n, _ in failures]}")
            raise first
        return tuple(outcome)

    seeds = tuple(dict.fromkeys(seed for member in members for seed in member.seeds))
    kinds = {member.kind for member in members}
    messages = {member.message for member in members}
    if len(kinds) == 1 and len(messages) == 1:
        return Target(name, run, seeds, kinds.pop(), messages.pop())
    return Target(name, run, seeds, "mixed")


# Targets that read one format, mutated together (see together()); each target is in one.
_FAMILY_MEMBERS = (
    ("Transaction", ("transaction", "pool_model", "dfl.transaction", "blade.transaction")),
    ("Receipt", ("receipt",)),
    ("Block", ("draft_block", "final_block", "dfl.draft")),
    ("ConfirmationBatch", ("confirmations", "dfl.confirmations")),
    ("PowBlock", ("pow_block", "blade.pow_block")),
    ("BlockVote", ("vote", "blade.vote")),
    ("Genesis", ("genesis",)),
    ("TransactionBatch", ("transaction_batch",)),
    ("ChainFetched", ("blade.chain",)),
    ("safetensors", ("safetensors",)),
    ("f32le", ("f32le",)),
    ("frame", ("frame", "chainless.transaction")),
)
FAMILIES: tuple[Target, ...] = tuple(
    together(name, [BY_NAME[member] for member in members]) for name, members in _FAMILY_MEMBERS
)
FAMILY_OF = {member: name for name, members in _FAMILY_MEMBERS for member in members}
EVERYTHING = together("everything", TARGETS)  # for inputs that depend on no format
