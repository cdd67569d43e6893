"""Property: changing any single signed field of any record makes validation fail, for the right
reason. Two attackers: one who changes a byte and leaves the digest (DIGEST_MISMATCH), and one who
also recomputes the digest but cannot sign (BAD_SIGNATURE, or ADDRESS_MISMATCH when the change is
to the signer's own identity)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from node.ledger import records
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.hashing import digest_message
from node.ledger.validation import (
    ValidationPolicy,
    validate_confirmation,
    validate_draft_block,
    validate_final_block,
    validate_receipt,
    validate_transaction,
)
from tests.support import key, tiny_genesis, tiny_weights

GENESIS = tiny_genesis()
POLICY = ValidationPolicy.for_genesis(GENESIS)
NOW_MS = 5_000_000

Step = tuple[str, int | None]
Path = tuple[Step, ...]


def _build() -> dict[str, Message]:
    tx = records.make_transaction(
        key("gen"),
        genesis_digest=GENESIS.digest,
        weights=tiny_weights(0.25),
        now_ms=NOW_MS,
        ttl=3,
        lifetime_ms=60_000,
    )
    tx.receipts.append(records.make_receipt(key("r1"), tx, accuracy=0.8, now_ms=NOW_MS + 1))
    tx.receipts.append(records.make_receipt(key("r2"), tx, accuracy=0.6, now_ms=NOW_MS + 2))
    draft = records.draft_block(
        key("gen"),
        height=1,
        previous_digest=GENESIS.digest,
        genesis_digest=GENESIS.digest,
        transactions=[tx],
        now_ms=NOW_MS + 3,
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
        key("gen"),
        draft,
        confirmations=confirmations,
        now_ms=NOW_MS + 4,
        quorum=0.6,
        timed_out=False,
    )
    return {"tx": tx, "draft": draft, "final": final, "confirmation": confirmations[0]}


RECORDS = _build()


@dataclass(frozen=True)
class Kind:
    """A record kind: its validator and its signed areas (area path, where its digest lives)."""

    record: str
    validate: Callable[[Message], None]
    areas: tuple[tuple[Path, Path, Path], ...]  # (area, digest field, signer NodeInfo)


KINDS = [
    Kind(
        "tx",
        lambda r: validate_transaction(r, POLICY, now_ms=NOW_MS),
        (
            ((("body", None),), (("digest", None),), (("body", None), ("generator", None))),
            (
                (("receipts", 1), ("body", None)),
                (("receipts", 1), ("digest", None)),
                (("receipts", 1), ("body", None), ("creator", None)),
            ),
        ),
    ),
    Kind(
        "receipt",
        lambda r: validate_receipt(r, RECORDS["tx"]),
        ((((("body", None),), (("digest", None),), (("body", None), ("creator", None)))),),
    ),
    Kind(
        "confirmation",
        lambda r: validate_confirmation(r, RECORDS["draft"]),
        ((((("body", None),), (("digest", None),), (("body", None), ("creator", None)))),),
    ),
    Kind(
        "draft",
        lambda r: validate_draft_block(r, POLICY),
        ((((("body", None),), (("digest", None),), (("body", None), ("creator", None)))),),
    ),
    Kind(
        "final",
        lambda r: validate_final_block(r, POLICY, height=1, previous_digest=GENESIS.digest),
        (
            ((("body", None),), (("digest", None),), (("body", None), ("creator", None))),
            ((("finalization", None),), (("final_digest", None),), ()),
        ),
    ),
]


def _record(kind: Kind) -> Message:
    if kind.record == "receipt":
        return RECORDS["tx"].receipts[0]
    return RECORDS[kind.record]


def _get(message: Message, path: Path):
    value = message
    for name, index in path:
        value = getattr(value, name) if index is None else getattr(value, name)[index]
    return value


def leaves(message: Message, prefix: Path = ()) -> Iterator[Path]:
    """Every scalar field under `message`, set or not (a default value is signed too)."""
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            for index, item in enumerate(value):
                step = (field.name, index)
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    yield from leaves(item, (*prefix, step))
                else:
                    yield (*prefix, step)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if message.HasField(field.name):
                yield from leaves(value, (*prefix, (field.name, None)))
        else:
            yield (*prefix, (field.name, None))


def mutate(record: Message, path: Path, position: int, mask: int) -> None:
    """Changes the value at `path` (one byte of bytes/strings, a small step for numbers)."""
    *parents, (name, index) = path
    holder = _get(record, tuple(parents))
    field = holder.DESCRIPTOR.fields_by_name[name]
    old = getattr(holder, name)[index] if index is not None else getattr(holder, name)
    if field.type == FieldDescriptor.TYPE_BYTES:
        if old:
            changed = bytearray(old)
            changed[position % len(old)] ^= mask
            new = bytes(changed)
        else:
            new = bytes([mask])
    elif field.type == FieldDescriptor.TYPE_STRING:
        new = (old or "x")[:-1] + ("a" if (old or "x")[-1] != "a" else "b")
    elif field.type == FieldDescriptor.TYPE_BOOL:
        new = not old
    elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        new = old + mask / 256
    else:
        new = old + mask
    if index is None:
        setattr(holder, name, new)
    else:
        getattr(holder, name)[index] = new


CASES = [
    (kind, area, digest_path, signer, leaf)
    for kind in KINDS
    for area, digest_path, signer in kind.areas
    for leaf in leaves(_get(_record(kind), area), area)
]


def _copy(kind: Kind) -> Message:
    original = _record(kind)
    copy = type(original)()
    copy.CopyFrom(original)
    return copy


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.record)
def test_untouched_records_validate(kind: Kind) -> None:
    kind.validate(_copy(kind))


def test_every_signed_field_is_enumerated() -> None:
    counts = {kind.record: sum(1 for c in CASES if c[0] is kind) for kind in KINDS}
    # receipt: creator (2), create_time, received_at_ttl, accuracy, transaction_digest;
    # confirmation: creator (2) and three digests; tx: 10 body fields + one receipt's 6.
    assert counts["receipt"] == 6 and counts["confirmation"] == 5 and counts["tx"] == 16
    assert counts["final"] > counts["draft"] > counts["tx"]


@settings(max_examples=400, deadline=None)
@given(
    case=st.sampled_from(CASES),
    position=st.integers(min_value=0, max_value=10_000),
    mask=st.integers(min_value=1, max_value=255),
)
def test_a_changed_signed_field_with_the_old_digest_is_a_digest_mismatch(
    case, position: int, mask: int
) -> None:
    kind, _, _, _, leaf = case
    record = _copy(kind)
    mutate(record, leaf, position, mask)
    with pytest.raises(RecordRejected) as rejected:
        kind.validate(record)
    assert rejected.value.reason is RejectReason.DIGEST_MISMATCH, (leaf, rejected.value)


@settings(max_examples=400, deadline=None)
@given(
    case=st.sampled_from(CASES),
    position=st.integers(min_value=0, max_value=10_000),
    mask=st.integers(min_value=1, max_value=255),
)
def test_a_changed_signed_field_with_a_recomputed_digest_fails_the_signature(
    case, position: int, mask: int
) -> None:
    kind, area, digest_path, signer, leaf = case
    record = _copy(kind)
    mutate(record, leaf, position, mask)
    *parents, (name, _) = digest_path
    setattr(_get(record, tuple(parents)), name, digest_message(_get(record, area)))
    with pytest.raises(RecordRejected) as rejected:
        kind.validate(record)
    changed_identity = signer and leaf[: len(signer)] == signer
    expected = RejectReason.ADDRESS_MISMATCH if changed_identity else RejectReason.BAD_SIGNATURE
    assert rejected.value.reason is expected, (leaf, rejected.value)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.record)
def test_a_changed_signature_byte_is_a_bad_signature(kind: Kind) -> None:
    for area, digest_path, _ in kind.areas:
        *parents, (name, _) = digest_path
        signature = (*parents, ("final_signature" if name == "final_digest" else "signature", None))
        for position in (0, 31, 63):
            record = _copy(kind)
            mutate(record, signature, position, 0x80)
            with pytest.raises(RecordRejected) as rejected:
                kind.validate(record)
            assert rejected.value.reason is RejectReason.BAD_SIGNATURE, (area, position)


def test_changed_weights_are_a_digest_mismatch_even_when_they_become_nan() -> None:
    record = _copy(KINDS[0])
    weights = bytearray(record.model)
    weights[3] = 0x7F
    weights[2] |= 0xC0  # exponent all ones: NaN
    record.model = bytes(weights)
    with pytest.raises(RecordRejected) as rejected:
        validate_transaction(record, POLICY, now_ms=NOW_MS)
    assert rejected.value.reason is RejectReason.DIGEST_MISMATCH
