"""The sans-IO DFL engine, driven event by event with a fake clock."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest

from node.ledger import records
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.hashing import digest_message
from node.ledger.keys import NodeKey
from node.ledger.validation import ValidationPolicy, decode, validate_final_block
from node.protocol.chainless import ChainlessDflEngine
from node.protocol.dfl import DflConfig, DflEngine
from node.protocol.events import (
    Aggregate,
    ConfirmationsReceived,
    DraftBlockReceived,
    Evaluate,
    EvaluationDone,
    MessageKind,
    PeersChanged,
    PersistBlock,
    PersistDraft,
    SamplesCollected,
    Send,
    Tick,
    Train,
    TrainingDone,
    TransactionReceived,
)
from node.protocol.framing import frame_model, unframe_model
from proto.dfl.v1 import records_pb2 as pb
from tests.support import TINY_PARAMETERS, four_node_network, key, tiny_genesis, tiny_weights

GENESIS = tiny_genesis()
CONFIG = DflConfig(
    batch_size=64,
    fedavg_buffer=2,
    transactions_per_block=1,
    ttl=1,
    transaction_lifetime=10.0,
    receipt_wait=2.0,
    confirmation_timeout=3.0,
)


def engine(name: str, config: DflConfig = CONFIG, peers: tuple[str, ...] = ()) -> DflEngine:
    return DflEngine(key(name), GENESIS, config, peers=peers)


def signed_tx(
    generator: NodeKey,
    *,
    now_ms: int = 1_000,
    ttl: int = 1,
    weights: bytes | None = None,
    genesis: bytes = GENESIS.digest,
) -> bytes:
    return records.make_transaction(
        generator,
        genesis_digest=genesis,
        weights=tiny_weights() if weights is None else weights,
        now_ms=now_ms,
        ttl=ttl,
        lifetime_ms=10_000,
    ).SerializeToString()


def only(actions: list, kind: type):
    matching = [a for a in actions if isinstance(a, kind)]
    assert len(matching) == 1, actions
    return matching[0]


def test_trains_each_time_the_collected_samples_reach_the_batch_size() -> None:
    node = engine("a")
    assert node.handle(SamplesCollected(30), 0.0) == []
    assert node.handle(SamplesCollected(34), 0.1) == [Train(64)]
    assert node.handle(SamplesCollected(200), 0.2) == [Train(64)] * 3
    assert node.state.samples_pending == 8 and node.state.trainings_in_flight == 4


def test_an_observer_never_trains() -> None:
    node = engine("obs", DflConfig(trains=False))
    assert node.handle(SamplesCollected(1000), 0.0) == []


def test_training_done_signs_and_broadcasts_to_every_neighbour() -> None:
    node = engine("a", peers=("b", "c"))
    node.handle(SamplesCollected(64), 0.0)
    send = only(node.handle(TrainingDone(tiny_weights(0.1)), 1.5), Send)
    assert send.to == ("b", "c") and send.kind is MessageKind.TRANSACTION
    tx = decode(pb.Transaction, send.payload)
    assert tx.body.generator.address == key("a").address
    assert tx.body.create_time_ms == 1500 and tx.body.expire_time_ms == 11_500
    assert tx.model == tiny_weights(0.1) and not tx.receipts
    with pytest.raises(ValueError, match="without a Train"):
        node.handle(TrainingDone(tiny_weights()), 2.0)


def test_a_receiver_evaluates_appends_its_receipt_and_returns_it_without_weights() -> None:
    node = engine("b", peers=("a", "c"))
    payload = signed_tx(key("a"))
    evaluate = only(node.handle(TransactionReceived(payload, "a"), 1.0), Evaluate)
    assert evaluate.model == tiny_weights() and evaluate.generator == key("a").address

    (send,) = node.handle(EvaluationDone(evaluate.transaction_digest, 0.875), 1.2)
    assert send.to == ("a",)  # ttl 1: received_at_ttl 0, so not forwarded to c
    back = decode(pb.Transaction, send.payload)
    assert back.model == b"" and back.digest == evaluate.transaction_digest
    (receipt,) = back.receipts
    assert receipt.body.accuracy == 0.875 and receipt.body.received_at_ttl == 0
    assert receipt.body.creator.address == key("b").address


def test_with_ttl_left_a_receiver_forwards_the_weights_to_its_other_neighbours() -> None:
    node = engine("b", peers=("a", "c", "d"))
    evaluate = only(
        node.handle(TransactionReceived(signed_tx(key("a"), ttl=2), "a"), 1.0), Evaluate
    )
    back, onward = node.handle(EvaluationDone(evaluate.transaction_digest, 0.5), 1.1)
    assert back.to == ("a",) and decode(pb.Transaction, back.payload).model == b""
    assert onward.to == ("c", "d")
    forwarded = decode(pb.Transaction, onward.payload)
    assert forwarded.model == tiny_weights() and forwarded.receipts[0].body.received_at_ttl == 1


def test_duplicates_are_dropped_until_the_transaction_expires() -> None:
    node = engine("b", peers=("a",))
    payload = signed_tx(key("a"), now_ms=1_000)  # expires at 11 s
    node.handle(TransactionReceived(payload, "a"), 1.0)
    with pytest.raises(RecordRejected) as duplicate:
        node.handle(TransactionReceived(payload, "a"), 5.0)
    assert duplicate.value.reason is RejectReason.DUPLICATE
    node.handle(Tick(), 10.9)
    assert len(node.state.seen) == 1
    node.handle(Tick(), 11.0)
    assert len(node.state.seen) == 0  # forgotten once expired ...
    with pytest.raises(RecordRejected) as expired:
        node.handle(TransactionReceived(payload, "a"), 11.0)
    assert expired.value.reason is RejectReason.EXPIRED  # ... because it is refused anyway


def test_duplicate_memory_is_bounded() -> None:
    node = engine("b", DflConfig(seen_capacity=3, transaction_lifetime=60.0))
    for index in range(5):
        node.handle(TransactionReceived(signed_tx(key(f"g{index}")), "g"), 1.0)
    assert len(node.state.seen) == 3 and node.state.seen.evictions == 2


def test_the_fedavg_buffer_aggregates_when_full() -> None:
    node = engine("b", peers=("a", "c"))
    actions = []
    for generator in ("a", "c"):
        evaluate = only(
            node.handle(TransactionReceived(signed_tx(key(generator)), generator), 1.0), Evaluate
        )
        actions = node.handle(EvaluationDone(evaluate.transaction_digest, 0.5), 1.0)
    aggregate = only(actions, Aggregate)
    assert [m.generator for m in aggregate.models] == [key("a").address, key("c").address]
    assert node.state.buffer == []


# --- the chainless engine: the same rules without the ledger ------------------------------------


def chainless(name: str, config: DflConfig = CONFIG) -> ChainlessDflEngine:
    return ChainlessDflEngine(key(name).address, config)


@pytest.mark.parametrize("make", [engine, chainless], ids=["chain", "chainless"])
def test_both_engines_batch_alike_and_refuse_a_negative_count(
    make: Callable[[str], DflEngine | ChainlessDflEngine],
) -> None:
    node = make("a")
    assert node.handle(SamplesCollected(30), 0.0) == []
    assert node.handle(SamplesCollected(100), 0.1) == [Train(64)] * 2
    before = copy.deepcopy(node.state)
    with pytest.raises(ValueError, match="negative"):
        node.handle(SamplesCollected(-1), 0.2)
    assert node.state == before and node.state.samples_pending == 2


def test_the_chainless_engine_buffers_the_generators_address_not_the_senders_name() -> None:
    config = DflConfig(fedavg_buffer=2)
    generator, receiver = chainless("a", config), chainless("b", config)
    generator.handle(PeersChanged(("b",)), 0.0)
    generator.handle(SamplesCollected(64), 0.0)
    send = only(generator.handle(TrainingDone(tiny_weights(0.25)), 0.0), Send)
    # Both models come in through one relay: only the frame says who generated which.
    first = only(receiver.handle(TransactionReceived(send.payload, "relay"), 1.0), Evaluate)
    other = frame_model(key("c").address, tiny_weights(0.75))
    second = only(receiver.handle(TransactionReceived(other, "relay"), 1.0), Evaluate)
    assert (first.generator, first.model) == (key("a").address, tiny_weights(0.25))
    assert receiver.handle(EvaluationDone(first.transaction_digest, 0.5), 1.1) == []
    aggregate = only(
        receiver.handle(EvaluationDone(second.transaction_digest, 0.6), 1.1), Aggregate
    )
    assert [(m.generator, m.model, m.accuracy) for m in aggregate.models] == [
        (key("a").address, tiny_weights(0.25), 0.5),
        (key("c").address, tiny_weights(0.75), 0.6),
    ]


def test_a_frame_keeps_generator_round_and_weights_and_a_cut_one_is_refused() -> None:
    payload = frame_model(key("a").address, tiny_weights(), round=3)
    framed = unframe_model(payload)
    assert (framed.generator, framed.round, framed.model) == (key("a").address, 3, tiny_weights())
    for cut in (b"", payload[: len(key("a").address)]):
        with pytest.raises(ValueError):
            unframe_model(cut)


# --- bad input ---------------------------------------------------------------------------------


def _truncated() -> bytes:
    return signed_tx(key("a"))[:-7]


def _wrong_types() -> bytes:
    # field 1 (body) as a varint instead of a length-delimited message
    return b"\x08\x96\x01" + signed_tx(key("a"))[10:]


def _wrong_record() -> bytes:
    return pb.Receipt(body=pb.ReceiptBody(accuracy=0.5)).SerializeToString()


def _ttl_above_maximum() -> bytes:
    return signed_tx(key("a"), ttl=CONFIG.max_ttl + 1)


def _from_the_future() -> bytes:
    skew_ms = int(CONFIG.max_clock_skew * 1000)
    return signed_tx(key("a"), now_ms=1_000 + skew_ms + 1)


def _model_of_the_wrong_size() -> bytes:
    return signed_tx(key("a"), weights=tiny_weights(count=TINY_PARAMETERS + 1))


def _non_finite_weights() -> bytes:
    weights = np.full(TINY_PARAMETERS, 0.5, dtype="<f4")
    weights[4] = np.inf
    return signed_tx(key("a"), weights=weights.tobytes())


def _other_genesis() -> bytes:
    return signed_tx(key("a"), genesis=tiny_genesis(seed=99).digest)


def _too_large() -> bytes:
    return b"\x00" * (CONFIG.max_message_bytes + 1)


BAD_TRANSACTIONS: dict[str, tuple[Callable[[], bytes], RejectReason]] = {
    "truncated": (_truncated, RejectReason.MALFORMED),
    "wrong types": (_wrong_types, RejectReason.MALFORMED),
    "another record": (_wrong_record, RejectReason.MALFORMED),
    "ttl above maximum": (_ttl_above_maximum, RejectReason.TTL_ABOVE_MAXIMUM),
    "from the future": (_from_the_future, RejectReason.FROM_FUTURE),
    "wrong model size": (_model_of_the_wrong_size, RejectReason.MODEL_SHAPE_MISMATCH),
    "non-finite weights": (_non_finite_weights, RejectReason.NON_FINITE_WEIGHTS),
    "other genesis": (_other_genesis, RejectReason.GENESIS_MISMATCH),
    "too large": (_too_large, RejectReason.MESSAGE_TOO_LARGE),
}


def busy_engine() -> DflEngine:
    """An engine with some of everything in its state: seen, pending evaluation, own, buffer."""
    node = engine("b", DflConfig(fedavg_buffer=5, transactions_per_block=5), peers=("a", "c"))
    node.handle(SamplesCollected(100), 0.5)
    node.handle(TrainingDone(tiny_weights(0.2)), 0.6)
    evaluate = only(node.handle(TransactionReceived(signed_tx(key("a")), "a"), 0.7), Evaluate)
    node.handle(EvaluationDone(evaluate.transaction_digest, 0.5), 0.8)
    node.handle(TransactionReceived(signed_tx(key("c")), "c"), 0.9)
    return node


@pytest.mark.parametrize("case", BAD_TRANSACTIONS, ids=str)
def test_a_bad_transaction_is_rejected_with_its_reason_and_changes_nothing(case: str) -> None:
    make, reason = BAD_TRANSACTIONS[case]
    node = busy_engine()
    before = node.snapshot()
    with pytest.raises(RecordRejected) as rejected:
        node.handle(TransactionReceived(make(), "a"), 1.0)
    assert rejected.value.reason is reason, rejected.value
    assert node.snapshot() == before


@pytest.mark.parametrize(
    "event",
    [
        DraftBlockReceived(b"\x0a\xff\xff", "a"),
        DraftBlockReceived(signed_tx(key("a")), "a"),
        ConfirmationsReceived(b"\x0a\x05\x0a\x03", "a"),
    ],
    ids=["truncated draft", "transaction as draft", "truncated confirmations"],
)
def test_malformed_blocks_and_confirmations_change_nothing(event) -> None:
    node = busy_engine()
    before = node.snapshot()
    with pytest.raises(RecordRejected) as rejected:
        node.handle(event, 1.0)
    assert rejected.value.reason in {RejectReason.MALFORMED, RejectReason.BAD_LINK}
    assert node.snapshot() == before


# --- blocks ------------------------------------------------------------------------------------


def _draft_sent(config: DflConfig):
    """A mesh in which n0 has drafted a block with three receipts; confirmations are on the way."""
    network = four_node_network(None, config=config)
    network.schedule(0.1, "n0", SamplesCollected(config.batch_size))
    network.run(0.125)  # tx out at 0.10, receipts back at 0.12, draft out at 0.12
    assert network.nodes["n0"].engine.state.draft is not None
    network.cut = {("n3", "n0")}  # n3's confirmation never arrives
    return network


def _capture_blocks(network) -> list[pb.Block]:
    blocks: list[pb.Block] = []
    capture = {"append": staticmethod(blocks.append), "save_draft": staticmethod(lambda _: None)}
    network.nodes["n0"].store = type("Capture", (), capture)()
    return blocks


def test_a_draft_finalizes_on_the_first_tick_after_the_grace_once_at_the_quorum() -> None:
    network = _draft_sent(DflConfig(batch_size=4, transactions_per_block=1, quorum_grace=1.0))
    blocks = _capture_blocks(network)
    network.run(1.49)  # 2 of 3 confirmed at 0.14 >= quorum 0.6; the grace ends at 1.12
    assert network.nodes["n0"].engine.state.height == 0 and not blocks
    network.run(1.5)
    (block,) = blocks
    assert not block.finalization.timed_out
    assert records.confirmed_fraction(block) == pytest.approx(2 / 3)


def test_a_draft_below_the_quorum_finalizes_at_the_timeout_and_says_so() -> None:
    config = DflConfig(batch_size=4, transactions_per_block=1, confirmation_quorum=0.9)
    network = _draft_sent(config)
    blocks = _capture_blocks(network)
    network.run(0.12 + config.confirmation_timeout - 0.1)
    assert not blocks
    network.run(0.12 + config.confirmation_timeout + 0.5)
    (block,) = blocks
    assert block.finalization.timed_out and block.finalization.quorum == 0.9
    assert records.confirmed_fraction(block) == pytest.approx(2 / 3)
    policy = ValidationPolicy.for_genesis(GENESIS)
    validate_final_block(block, policy, height=1, previous_digest=GENESIS.digest)


def test_a_receipt_is_confirmed_only_once() -> None:
    config = DflConfig(batch_size=4, transactions_per_block=1)
    generator, receiver = engine("a", config, peers=("b",)), engine("b", config, peers=("a",))
    generator.handle(SamplesCollected(4), 0.0)
    (send,) = generator.handle(TrainingDone(tiny_weights()), 0.0)
    evaluate = only(receiver.handle(TransactionReceived(send.payload, "a"), 0.1), Evaluate)
    (back,) = receiver.handle(EvaluationDone(evaluate.transaction_digest, 0.9), 0.1)
    keep, draft = generator.handle(TransactionReceived(back.payload, "b"), 0.2)
    assert draft.kind is MessageKind.DRAFT_BLOCK
    # kept before it is sent: a node killed after sending it finds it on restart
    assert isinstance(keep, PersistDraft) and keep.block.SerializeToString() == draft.payload

    (confirmations,) = receiver.handle(DraftBlockReceived(draft.payload, "a"), 0.3)
    before = receiver.snapshot()
    with pytest.raises(RecordRejected) as again:
        receiver.handle(DraftBlockReceived(draft.payload, "a"), 0.4)
    assert again.value.reason is RejectReason.DUPLICATE and receiver.snapshot() == before

    (persist,) = generator.handle(ConfirmationsReceived(confirmations.payload, "b"), 0.5)
    assert isinstance(persist, PersistBlock) and generator.state.height == 1
    with pytest.raises(RecordRejected) as late:
        generator.handle(ConfirmationsReceived(confirmations.payload, "b"), 0.6)
    assert late.value.reason is RejectReason.BAD_LINK


def test_receipts_from_two_hops_travel_back_along_the_path() -> None:
    config = DflConfig(batch_size=4, transactions_per_block=1, ttl=2, receipt_wait=2.0)
    network = four_node_network(None, config=config, edges=[("n0", "n1"), ("n1", "n2")])
    blocks = _capture_blocks(network)
    network.schedule(0.1, "n0", SamplesCollected(4))
    network.run(6.0)
    (block,) = blocks
    receipts = {
        r.body.creator.address: r.body.received_at_ttl for r in block.body.transactions[0].receipts
    }
    assert receipts == {key("n1").address: 1, key("n2").address: 0}
    confirmers = {c.body.creator.address for c in block.finalization.confirmations}
    assert confirmers == {key("n1").address}  # n2 is not n0's neighbour: it never sees the draft
    assert network.nodes["n0"].engine.state.counters["transactions_relayed"] == 0
    assert network.nodes["n1"].engine.state.counters["transactions_relayed"] == 1


def test_peers_can_change() -> None:
    node = engine("a")
    node.handle(PeersChanged(("x", "y")), 0.0)
    assert node.state.peers == ("x", "y")


def test_a_neighbour_refuses_to_confirm_a_receipt_the_generator_altered() -> None:
    config = DflConfig(batch_size=4, transactions_per_block=1)
    generator, receiver = engine("a", config, peers=("b",)), engine("b", config, peers=("a",))
    generator.handle(SamplesCollected(4), 0.0)
    (send,) = generator.handle(TrainingDone(tiny_weights()), 0.0)
    evaluate = only(receiver.handle(TransactionReceived(send.payload, "a"), 0.1), Evaluate)
    (back,) = receiver.handle(EvaluationDone(evaluate.transaction_digest, 0.25), 0.1)
    draft = only(generator.handle(TransactionReceived(back.payload, "b"), 0.2), Send)

    block = decode(pb.Block, draft.payload)
    block.body.transactions[0].receipts[0].body.accuracy = 0.99  # a better score for itself
    block.digest = digest_message(block.body)
    block.signature = key("a").sign(block.digest)  # the generator re-signs its own draft
    before = receiver.snapshot()
    with pytest.raises(RecordRejected) as refused:
        receiver.handle(DraftBlockReceived(block.SerializeToString(), "a"), 0.3)
    assert refused.value.reason is RejectReason.DIGEST_MISMATCH
    assert receiver.snapshot() == before


def test_known_copies_skip_signatures_but_not_digests() -> None:
    node = engine("b", peers=("a", "c"))
    payload = signed_tx(key("a"))
    node.handle(TransactionReceived(payload, "a"), 1.0)
    forged = decode(pb.Transaction, payload)
    forged.body.ttl = 2  # changed body, old digest: caught even for a known transaction
    with pytest.raises(RecordRejected) as rejected:
        node.handle(TransactionReceived(forged.SerializeToString(), "c"), 1.1)
    assert rejected.value.reason is RejectReason.DIGEST_MISMATCH
