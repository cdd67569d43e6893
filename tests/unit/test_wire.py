"""A transaction's weights cut out of and joined onto the wire bytes, as protobuf would."""

from __future__ import annotations

import random

import pytest
from google.protobuf.message import DecodeError

from node.ledger import records
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.validation import decode_transaction
from node.ledger.wire import encode_varint, field_header, join_model, split_model
from proto.dfl.v1 import records_pb2 as pb
from tests.support import key, tiny_genesis, tiny_weights

GENESIS = tiny_genesis()
SIZE = len(tiny_weights())


def transaction(attach: bool = True) -> pb.Transaction:
    return records.make_transaction(
        key("generator"),
        genesis_digest=GENESIS.digest,
        weights=tiny_weights(),
        now_ms=1_000,
        ttl=2,
        lifetime_ms=10_000,
        attach_weights=attach,
    )


def with_receipt(tx: pb.Transaction) -> pb.Transaction:
    tx.receipts.append(records.make_receipt(key("receiver"), tx, accuracy=0.5, now_ms=1_001))
    return tx


def protobufs(payload: bytes) -> tuple[pb.Transaction, bytes]:
    whole = pb.Transaction.FromString(payload)
    model = whole.model
    whole.ClearField("model")
    return whole, model


def test_joined_weights_come_back_as_a_view_of_the_payload() -> None:
    tx = with_receipt(transaction())
    joined = join_model(records.without_model(tx), tx.model)
    assert pb.Transaction.FromString(joined) == tx
    record, model = split_model(joined, SIZE)
    assert isinstance(model, memoryview) and model.obj is joined  # no copy
    assert (record, bytes(model)) == protobufs(joined)


def test_protobufs_own_layout_gives_the_same_record_and_weights() -> None:
    for tx in (transaction(), with_receipt(transaction())):  # weights last, or receipts after
        payload = tx.SerializeToString()
        record, model = split_model(payload, SIZE)
        assert (record, bytes(model)) == protobufs(payload)


def test_of_two_copies_of_the_weights_the_last_one_wins_as_in_protobuf() -> None:
    tx = transaction()
    decoy = pb.Transaction(model=b"\x00" * SIZE).SerializeToString()
    payload = decoy + tx.SerializeToString()
    record, model = split_model(payload, SIZE)
    assert (record, bytes(model)) == protobufs(payload)
    assert bytes(model) == tx.model


def test_a_record_without_weights_splits_to_an_empty_view() -> None:
    record, model = split_model(records.without_model(transaction()).SerializeToString(), SIZE)
    assert len(model) == 0 and record.HasField("body")


def test_bytes_that_only_look_like_the_weights_field_are_parsed_whole() -> None:
    # A receipt's bytes end with what looks like the weights field: protobuf reads one receipt.
    inner = b"\x00" * 3 + field_header(SIZE) + b"\x01" * SIZE
    payload = bytes([0x2A]) + encode_varint(len(inner)) + inner  # receipts (field 5)
    try:
        expected: tuple[pb.Transaction, bytes] | None = protobufs(payload)
    except DecodeError:
        expected = None
    if expected is None:
        with pytest.raises(DecodeError):
            split_model(payload, SIZE)
    else:
        record, model = split_model(payload, SIZE)
        assert (record, bytes(model)) == expected


def test_mutated_payloads_split_exactly_as_protobuf_parses_them() -> None:
    rng = random.Random(7)
    genuine = [
        join_model(records.without_model(with_receipt(transaction())), tiny_weights()),
        transaction().SerializeToString(),
    ]
    for _ in range(2_000):
        data = bytearray(rng.choice(genuine))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            match rng.randrange(3):
                case 0:
                    data[at] = rng.randrange(256)
                case 1:
                    del data[at : at + rng.randint(1, 8)]
                case _:
                    data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        payload = bytes(data)
        try:
            expected = protobufs(payload)
        except DecodeError:
            with pytest.raises(DecodeError):
                split_model(payload, SIZE)
            continue
        record, model = split_model(payload, SIZE)
        assert (record, bytes(model)) == expected, payload.hex()


def test_join_refuses_a_record_that_still_holds_weights() -> None:
    with pytest.raises(ValueError):
        join_model(transaction(), b"")


def test_undecodable_bytes_are_malformed_and_oversized_ones_too_large() -> None:
    with pytest.raises(RecordRejected) as caught:
        decode_transaction(b"\x22\x10abc", SIZE)  # the weights field runs past the end
    assert caught.value.reason is RejectReason.MALFORMED
    with pytest.raises(RecordRejected) as caught:
        decode_transaction(b"\x00" * 101, SIZE, max_bytes=100)
    assert caught.value.reason is RejectReason.MESSAGE_TOO_LARGE
