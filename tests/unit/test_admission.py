"""Misbehaviour scores, bans, rate limits and the control signature, as pure functions of time."""

from __future__ import annotations

import pytest

from node.ledger.errors import RejectReason
from node.service.admission import PENALTIES, Admission, Limits, generator_peer
from node.service.control import (
    KEY_HEADER,
    WINDOW_MS,
    ControlRefused,
    ControlSigner,
    ControlVerifier,
    NonceMemory,
    parse_public_key,
)

PEER = "ipv4:10.0.0.2:50000"


def test_bad_signatures_ban_a_connection_after_five_and_the_ban_ends() -> None:
    admission = Admission(Limits(ban_score=100, ban_seconds=60, score_decay_per_second=0))
    banned_at = [
        i for i in range(6) if admission.penalize(PEER, RejectReason.BAD_SIGNATURE, now=i * 0.02)
    ]
    assert banned_at == [4]  # 5 x 20 points
    assert admission.banned(PEER, now=1.0) == pytest.approx(60 - 0.92)
    assert admission.banned("ipv4:10.0.0.3:50000", now=1.0) is None
    assert admission.banned(PEER, now=61.0) is None
    assert admission.banned_count(now=1.0) == 1


@pytest.mark.parametrize(
    "reason",
    [
        RejectReason.DUPLICATE,
        RejectReason.EXPIRED,
        RejectReason.UNKNOWN_RECEIPT,
        RejectReason.BELOW_QUORUM,
        RejectReason.BAD_LINK,
        RejectReason.WRONG_ROUND,
        RejectReason.UNKNOWN_MODEL,
    ],
)
def test_what_honest_gossip_produces_never_bans(reason: RejectReason) -> None:
    assert reason not in PENALTIES
    admission = Admission(Limits())
    assert not any(admission.penalize(PEER, reason, now=i * 0.001) for i in range(10_000))
    assert admission.scores(now=1000.0) == {}


def test_a_score_decays_so_a_rare_bad_record_never_adds_up() -> None:
    admission = Admission(Limits(ban_score=100, score_decay_per_second=1.0))
    for minute in range(60):  # one bad record every 30 s for half an hour
        assert not admission.penalize(PEER, RejectReason.MALFORMED, now=minute * 30.0)
    assert admission.scores(now=60 * 30.0)[PEER] <= 20


def test_generators_are_scored_apart_from_connections() -> None:
    admission = Admission(Limits(score_decay_per_second=0))
    generator = generator_peer(bytes(range(32)))
    for i in range(5):
        admission.penalize(generator, RejectReason.NON_FINITE_WEIGHTS, now=float(i))
    assert admission.banned_peers(now=5.0) == [generator]
    assert admission.banned(PEER, now=5.0) is None


def test_requests_beyond_the_rate_are_refused_then_allowed_again() -> None:
    admission = Admission(Limits(requests_per_second=10, request_burst=20))
    allowed = sum(admission.allow_request(PEER, now=0.0) for _ in range(100))
    assert allowed == 20
    assert not admission.allow_request(PEER, now=0.05)
    assert admission.allow_request(PEER, now=0.2)  # two tokens back
    assert admission.allow_request("ipv4:10.0.0.9:1", now=0.0)  # another connection's bucket


def test_the_evaluation_budget_is_per_minute_per_connection() -> None:
    admission = Admission(Limits(evaluations_per_minute=60))
    for _ in range(60):
        assert admission.can_evaluate(PEER, now=0.0)
        admission.evaluated(PEER, now=0.0)
    assert not admission.can_evaluate(PEER, now=0.0)
    assert admission.can_evaluate(PEER, now=1.0)  # one a second comes back


def test_limits_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match="max_pending_ml"):
        Limits(max_pending_ml=0)
    with pytest.raises(TypeError):
        Limits(queue=3)  # type: ignore[call-arg]


# --- the control signature ---------------------------------------------------------------------

NODE = bytes(range(32))


def verifier(*signers: ControlSigner) -> ControlVerifier:
    return ControlVerifier([s.key.public_key for s in signers], NODE)


def test_a_signed_call_passes_once() -> None:
    signer = ControlSigner.generate()
    check = verifier(signer)
    metadata = signer.metadata("AddPeer", NODE, now=1000.0)
    check.check("AddPeer", metadata, now=1000.5)
    with pytest.raises(ControlRefused, match="replayed") as refused:
        check.check("AddPeer", metadata, now=1000.6)
    assert refused.value.status == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("call", "status", "words"),
    [
        (lambda s: (), "UNAUTHENTICATED", "needs the orchestrator's signature"),
        (
            lambda s: ControlSigner.generate().metadata("GetModel", NODE, now=1000.0),
            "PERMISSION_DENIED",
            "does not trust",
        ),
        (
            lambda s: s.metadata("GetModel", NODE, now=1000.0 - WINDOW_MS / 1000 - 1),
            "UNAUTHENTICATED",
            "window",
        ),
        (
            lambda s: s.metadata("GetModel", NODE, now=1000.0 + WINDOW_MS / 1000 + 1),
            "UNAUTHENTICATED",
            "window",
        ),
        (lambda s: s.metadata("AddPeer", NODE, now=1000.0), "UNAUTHENTICATED", "does not verify"),
        (
            lambda s: s.metadata("GetModel", bytes(32), now=1000.0),
            "UNAUTHENTICATED",
            "does not verify",
        ),
    ],
    ids=["unsigned", "another-key", "stale", "future", "other-method", "other-node"],
)
def test_each_wrong_call_is_refused_with_its_status(call, status: str, words: str) -> None:
    signer = ControlSigner.generate()
    with pytest.raises(ControlRefused, match=words) as refused:
        verifier(signer).check("GetModel", call(signer), now=1000.0)
    assert refused.value.status == status


def test_a_node_that_trusts_no_key_says_how_to_give_it_one() -> None:
    signer = ControlSigner.generate()
    with pytest.raises(ControlRefused, match="control_key") as refused:
        verifier().check("GetModel", signer.metadata("GetModel", NODE, now=1.0), now=1.0)
    assert refused.value.status == "PERMISSION_DENIED"


def test_a_refused_call_leaves_no_nonce_behind() -> None:
    signer, stranger = ControlSigner.generate(), ControlSigner.generate()
    check = verifier(signer)
    good = signer.metadata("GetModel", NODE, now=5.0)
    forged = tuple(
        (k, stranger.key.public_key if k == KEY_HEADER else v) for k, v in good
    )  # the same nonce under another key
    with pytest.raises(ControlRefused):
        check.check("GetModel", forged, now=5.0)
    check.check("GetModel", good, now=5.0)  # its nonce was not burnt by the forgery


def test_nonces_are_forgotten_only_once_they_cannot_be_replayed() -> None:
    memory = NonceMemory(window_ms=1000, capacity=10)
    memory.remember("a", now_ms=0)
    memory.remember("b", now_ms=1500)
    assert "a" in memory  # still inside two windows
    memory.remember("c", now_ms=2500)
    assert "a" not in memory and "b" in memory and "c" in memory


def test_keys_round_trip_through_their_files(tmp_path) -> None:
    signer = ControlSigner.generate()
    path = signer.save(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert ControlSigner.load(path).public_hex == signer.public_hex
    assert parse_public_key((tmp_path / "control_key.pub").read_text()) == signer.key.public_key
    with pytest.raises(ValueError, match="65-byte"):
        parse_public_key("04abcd")
