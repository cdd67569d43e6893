"""Ledger records: protobuf round trips, digests that ignore receipts, the ttl rule (eq. 1)."""

from __future__ import annotations

import numpy as np
import pytest

from node.ledger import records
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.hashing import address_of, digest_message
from node.ledger.keys import KeyFileError, NodeKey, verify_signature
from node.ledger.validation import ValidationPolicy, check_finite_weights, validate_transaction
from proto.dfl.v1 import records_pb2 as pb
from tests.support import key, tiny_genesis, tiny_weights

GENESIS = tiny_genesis()
POLICY = ValidationPolicy.for_genesis(GENESIS)
NOW_MS = 1_000_000


def transaction(ttl: int = 3, generator: str = "gen") -> pb.Transaction:
    return records.make_transaction(
        key(generator),
        genesis_digest=GENESIS.digest,
        weights=tiny_weights(),
        now_ms=NOW_MS,
        ttl=ttl,
        lifetime_ms=60_000,
    )


def sample_records() -> list:
    tx = transaction()
    receipt = records.make_receipt(key("r1"), tx, accuracy=0.75, now_ms=NOW_MS + 5)
    tx.receipts.append(receipt)
    draft = records.draft_block(
        key("gen"),
        height=1,
        previous_digest=GENESIS.digest,
        genesis_digest=GENESIS.digest,
        transactions=[tx],
        now_ms=NOW_MS + 10,
    )
    confirmation = records.make_confirmation(
        key("r1"),
        block_digest=draft.digest,
        transaction_digest=tx.digest,
        receipt_digest=receipt.digest,
    )
    final = records.finalize_block(
        key("gen"),
        draft,
        confirmations=[confirmation],
        now_ms=NOW_MS + 20,
        quorum=0.6,
        timed_out=False,
    )
    return [
        GENESIS,
        tx,
        receipt,
        draft,
        confirmation,
        final,
        pb.ConfirmationBatch(confirmations=[confirmation]),
    ]


@pytest.mark.parametrize("record", sample_records(), ids=lambda r: r.DESCRIPTOR.name)
def test_every_record_round_trips_through_protobuf(record) -> None:
    wire = record.SerializeToString(deterministic=True)
    parsed = type(record)()
    parsed.ParseFromString(wire)
    assert parsed == record
    assert parsed.SerializeToString(deterministic=True) == wire
    if "digest" in record.DESCRIPTOR.fields_by_name:
        assert digest_message(parsed.body) == record.digest


def test_digests_are_domain_separated_by_record_type() -> None:
    body = pb.ReceiptBody(transaction_digest=b"x" * 32)
    same_bytes = pb.BlockConfirmationBody()
    same_bytes.ParseFromString(body.SerializeToString())  # unknown field, same wire bytes
    assert body.SerializeToString() == same_bytes.SerializeToString()
    assert digest_message(body) != digest_message(same_bytes)


def test_signatures_verify_and_address_is_hash_of_public_key() -> None:
    tx = transaction()
    generator = tx.body.generator
    assert generator.address == address_of(generator.public_key) == key("gen").address
    assert verify_signature(generator.public_key, tx.digest, tx.signature)
    assert not verify_signature(key("other").public_key, tx.digest, tx.signature)


def test_appending_receipts_keeps_the_transaction_digest_and_signature() -> None:
    tx = transaction(ttl=3)
    before = (tx.digest, tx.signature, digest_message(tx.body))
    for name in ("r1", "r2"):
        tx.receipts.append(records.make_receipt(key(name), tx, accuracy=0.5, now_ms=NOW_MS))
    assert (tx.digest, tx.signature, digest_message(tx.body)) == before
    validate_transaction(tx, POLICY, now_ms=NOW_MS)


def test_ttl_rule_eq1_counts_down_from_the_smallest_ttl_seen() -> None:
    tx = transaction(ttl=3)
    assert records.received_at_ttl(tx) == 2
    ttls = []
    for name in ("r1", "r2", "r3"):
        receipt = records.make_receipt(key(name), tx, accuracy=0.5, now_ms=NOW_MS)
        tx.receipts.append(receipt)
        ttls.append(receipt.body.received_at_ttl)
    assert ttls == [2, 1, 0]
    assert records.received_at_ttl(tx) == -1
    with pytest.raises(ValueError, match="exhausted"):
        records.make_receipt(key("r4"), tx, accuracy=0.5, now_ms=NOW_MS)


def test_ttl_rule_takes_the_minimum_not_the_last_receipt() -> None:
    tx = transaction(ttl=5)
    low = records.make_receipt(key("r1"), transaction(ttl=2), accuracy=0.5, now_ms=NOW_MS)
    tx.receipts.append(low)  # ttl 1, as if it came along a shorter path
    tx.receipts.append(pb.Receipt(body=pb.ReceiptBody(received_at_ttl=4)))
    assert records.received_at_ttl(tx) == 0


def test_genesis_is_deterministic_and_records_architecture_hyperparameters_and_seed() -> None:
    again = tiny_genesis()
    assert again.digest == GENESIS.digest
    assert tiny_genesis(seed=8).digest != GENESIS.digest
    body = GENESIS.body
    assert [(layer.name, list(layer.shape)) for layer in body.layers] == [
        ("fc.weight", [3, 4]),
        ("fc.bias", [3]),
    ]
    assert [h.name for h in body.hyperparameters] == ["batch_size", "lr"]  # sorted
    assert body.seed == 7 and records.parameter_count(GENESIS) == 15


def test_keys_persist_in_the_data_directory(tmp_path) -> None:
    created = NodeKey.load_or_create(tmp_path)
    assert (tmp_path / "node_key.pem").stat().st_mode & 0o077 == 0
    assert NodeKey.load_or_create(tmp_path).address == created.address
    with pytest.raises(FileExistsError):
        NodeKey.generate().save(tmp_path)


def test_a_missing_or_foreign_key_file_says_what_to_do(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="dfl keygen"):
        NodeKey.load(tmp_path)
    (tmp_path / "node_key.pem").write_text("not a key")
    with pytest.raises(KeyFileError, match="not a PEM P-256 key"):
        NodeKey.load(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_non_finite_weight_anywhere_is_found(bad: float) -> None:
    for index in (0, 12_345, 99_999):
        values = np.zeros(100_000, dtype="<f4")
        values[index] = bad
        with pytest.raises(RecordRejected) as caught:
            check_finite_weights(values.tobytes())
        assert caught.value.reason is RejectReason.NON_FINITE_WEIGHTS


def test_finite_weights_whose_sum_overflows_are_still_finite() -> None:
    check_finite_weights(np.full(1_000, 3e38, dtype="<f4").tobytes())  # the sum is inf
    check_finite_weights(memoryview(np.full(10, -3e38, dtype="<f4").tobytes()))
