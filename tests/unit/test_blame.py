"""Who a rejection is charged to, and how an engine refuses a banned generator's records.

A record whose signature verified but whose content is wrong is its generator's doing; one whose
signature fails could have been made by anyone, so it blames only the connection it came on.
"""

from __future__ import annotations

import pytest

from node.ledger.errors import RecordRejected, RejectReason
from node.protocol.blade import BladeConfig, BladeEngine
from node.protocol.dfl import DflEngine
from node.protocol.events import GeneratorsRefused, TransactionReceived
from proto.dfl.v1 import records_pb2 as pb
from tests.support import key, tiny_genesis
from tests.unit.test_blade_engine import GENESIS as BLADE_GENESIS
from tests.unit.test_blade_engine import pool_model
from tests.unit.test_dfl_engine import CONFIG, GENESIS, signed_tx


def rejection(engine: DflEngine, payload: bytes) -> RecordRejected:
    with pytest.raises(RecordRejected) as rejected:
        engine.handle(TransactionReceived(payload, "peer"), 1.0)
    return rejected.value


def test_a_validly_signed_record_with_bad_content_blames_its_generator() -> None:
    engine = DflEngine(key("node"), GENESIS, CONFIG)
    generator = key("g")
    other = rejection(engine, signed_tx(generator, genesis=tiny_genesis(seed=99).digest))
    assert other.reason is RejectReason.GENESIS_MISMATCH
    assert other.signer == generator.address
    future = rejection(engine, signed_tx(generator, now_ms=1_000_000))
    assert future.reason is RejectReason.FROM_FUTURE and future.signer == generator.address


def test_a_bad_signature_blames_nobody_it_names() -> None:
    engine = DflEngine(key("node"), GENESIS, CONFIG)
    tx = pb.Transaction.FromString(signed_tx(key("g")))
    tx.signature = bytes(64)
    rejected = rejection(engine, tx.SerializeToString())
    assert rejected.reason is RejectReason.BAD_SIGNATURE and rejected.signer is None


def test_a_refused_generator_is_turned_away_before_its_signature_is_checked() -> None:
    engine = DflEngine(key("node"), GENESIS, CONFIG)
    banned, honest = key("banned"), key("honest")
    engine.handle(GeneratorsRefused(frozenset({banned.address})), 0.0)
    tx = pb.Transaction.FromString(signed_tx(banned))
    tx.signature = bytes(64)  # would be bad_signature if it got that far
    before = engine.snapshot()
    assert rejection(engine, tx.SerializeToString()).reason is RejectReason.REFUSED_GENERATOR
    assert engine.snapshot() == before
    assert engine.handle(TransactionReceived(signed_tx(honest), "peer"), 1.0)  # evaluates it
    engine.handle(GeneratorsRefused(frozenset()), 2.0)  # the ban is over
    assert engine.handle(TransactionReceived(signed_tx(banned, now_ms=2_000), "peer"), 2.5)


def test_a_blade_client_refuses_a_banned_generators_pool_model() -> None:
    engine = BladeEngine(
        key("c0"), BLADE_GENESIS, BladeConfig(clients=2, rounds=2, local_iterations=1)
    )
    banned = key("c1")
    engine.handle(GeneratorsRefused(frozenset({banned.address})), 0.0)
    model = pool_model(banned).SerializeToString()
    with pytest.raises(RecordRejected) as rejected:
        engine.handle(TransactionReceived(model, "c1"), 1.0)
    assert rejected.value.reason is RejectReason.REFUSED_GENERATOR
