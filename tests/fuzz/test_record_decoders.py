"""Fuzzing every decoder, validator and engine handler that takes bytes from a peer.

Each target (tests/fuzz/targets.py) checks its own invariants on every input: a refusal is a
RecordRejected, an engine that refuses is unchanged, and an engine that accepts holds something
genuine that its own store would accept back. These tests only choose the inputs: exhaustive
tiny ones, seeds padded to the size limit, and Hypothesis strategies (tests/fuzz/strategies.py)
with a fixed number of examples each, derandomized, so CI runs the same inputs every time.

Generating an input costs more than most targets spend on it, so inputs are shared: random ones
go to every target, and mutations of one format to every target of its family (targets.FAMILIES:
e.g. the DFL and BLADE-FL transaction validators and both engines' TransactionReceived). Every
target thus gets GENERATED_PER_TARGET generated inputs, besides the 257 tiny ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.validation import DEFAULT_MAX_MESSAGE_BYTES, decode
from proto.dfl.v1 import records_pb2 as pb
from tests.fuzz import strategies, wire
from tests.fuzz.corpus import DFL_TRANSACTIONS, FUZZ_MAX_BYTES
from tests.fuzz.targets import EVERYTHING, FAMILIES, FAMILY_OF, TARGETS, Target

FUZZ = settings(
    database=None,  # nothing written into the repository
    derandomize=True,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Examples per test. The first three go to every target, the rest to every target of a family.
RANDOM, MESSAGES, NEAR_LIMIT = 700, 500, 100
BYTES, STRUCTURED, SPLICES, FIELDS = 200, 200, 100, 200
GENERATED_PER_TARGET = RANDOM + MESSAGES + NEAR_LIMIT + BYTES + STRUCTURED + SPLICES + FIELDS

every_target = pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
every_family = pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
PROTOBUF = [target for target in TARGETS if target.message is not None]
PROTOBUF_FAMILIES = [family for family in FAMILIES if family.message is not None]


def _check(target: Target, data: bytes) -> None:
    """Runs the target; its own assertions are the property, this only checks the shape."""
    outcome = target.run(data)
    assert outcome and all(isinstance(accepted, bool) for accepted in outcome)


def _check_each(target: Target, inputs: Iterable[bytes]) -> None:
    """Every input, then every distinct failure with the first input that showed it: a fixed
    list of inputs has no shrinking to find the others once the first has failed."""
    failures: dict[str, bytes] = {}
    for data in inputs:
        try:
            _check(target, data)
        except Exception as error:  # collected; the test fails below with all of them
            failures.setdefault(f"{type(error).__name__}: {error}", data)
    assert not failures, "\n".join(
        f"{problem}\n    first input ({len(data)} bytes): {data.hex()}"
        for problem, data in failures.items()
    )


# --- the harness itself -----------------------------------------------------------------------


def test_every_target_is_in_exactly_one_family() -> None:
    members = [name for family in FAMILIES for name in family_members(family)]
    assert sorted(members) == sorted(t.name for t in TARGETS)


def family_members(family: Target) -> list[str]:
    return [name for name, of in FAMILY_OF.items() if of == family.name]


@every_target
def test_every_target_accepts_one_of_its_seeds(target: Target) -> None:
    """Otherwise mutations would start from records the target refuses anyway."""
    assert any(any(target.run(seed)) for seed in target.seeds)


# --- fixed inputs -----------------------------------------------------------------------------


@every_target
def test_empty_input_and_every_single_byte(target: Target) -> None:
    _check_each(target, (b"", *(bytes([value]) for value in range(256))))


@pytest.mark.parametrize("target", PROTOBUF, ids=[t.name for t in PROTOBUF])
def test_a_seed_padded_to_the_limit_is_what_it_was_and_one_byte_more_is_refused(
    target: Target,
) -> None:
    """Unknown fields outside the signed body change nothing, up to the last permitted byte."""
    assert target.message is not None
    for seed in target.seeds:
        expected = target.run(seed)
        for size in (FUZZ_MAX_BYTES - 1, FUZZ_MAX_BYTES):
            padded = wire.pad_to(seed, size)
            assert len(padded) == size and target.run(padded) == expected, size
        oversized = wire.pad_to(seed, FUZZ_MAX_BYTES + 1)
        assert not any(target.run(oversized))
        with pytest.raises(RecordRejected) as refused:
            decode(target.message, oversized, FUZZ_MAX_BYTES)
        assert refused.value.reason is RejectReason.MESSAGE_TOO_LARGE


@pytest.mark.parametrize("family", PROTOBUF_FAMILIES, ids=[f.name for f in PROTOBUF_FAMILIES])
def test_every_bytes_field_one_byte_shorter_or_longer(family: Target) -> None:
    message = family.message
    assert message is not None
    _check_each(
        family,
        (data for seed in family.seeds for data in strategies.resized_bytes_fields(message, seed)),
    )


def test_the_default_limit_admits_its_last_byte_and_refuses_the_next() -> None:
    seed = DFL_TRANSACTIONS[0]
    at_limit = wire.pad_to(seed, DEFAULT_MAX_MESSAGE_BYTES)
    assert decode(pb.Transaction, at_limit).digest == pb.Transaction.FromString(seed).digest
    with pytest.raises(RecordRejected) as refused:
        decode(pb.Transaction, at_limit + b"\x00")
    assert refused.value.reason is RejectReason.MESSAGE_TOO_LARGE


# --- random input, to every target ------------------------------------------------------------


@settings(FUZZ, max_examples=RANDOM)
@given(data=strategies.random_bytes())
def test_random_bytes(data: bytes) -> None:
    _check(EVERYTHING, data)


@settings(FUZZ, max_examples=MESSAGES)
@given(data=strategies.random_messages())
def test_random_well_formed_messages(data: bytes) -> None:
    _check(EVERYTHING, data)


@settings(FUZZ, max_examples=NEAR_LIMIT)
@given(data=strategies.near_the_limit())
def test_inputs_around_the_size_limit(data: bytes) -> None:
    _check(EVERYTHING, data)


# --- mutations of valid records, to every target of their format ------------------------------


@every_family
@settings(FUZZ, max_examples=BYTES)
@given(data=st.data())
def test_byte_mutations_of_valid_records(family: Target, data: st.DataObject) -> None:
    _check(family, data.draw(strategies.byte_mutations(family.seeds), label="input"))


@every_family
@settings(FUZZ, max_examples=STRUCTURED)
@given(data=st.data())
def test_structured_mutations_of_valid_records(family: Target, data: st.DataObject) -> None:
    _check(family, data.draw(strategies.structured(family), label="input"))


@every_family
@settings(FUZZ, max_examples=SPLICES)
@given(data=st.data())
def test_spliced_records(family: Target, data: st.DataObject) -> None:
    _check(family, data.draw(strategies.splices(family.seeds), label="input"))


@every_family
@settings(FUZZ, max_examples=FIELDS)
@given(data=st.data())
def test_single_fields_set_to_hostile_values(family: Target, data: st.DataObject) -> None:
    _check(family, data.draw(strategies.field_level(family), label="input"))
