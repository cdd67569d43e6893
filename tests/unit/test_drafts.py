"""A signed draft outlives the process: a restarted node finalizes it and never signs another.

A generator's neighbours hold its signed draft of height h as soon as it is sent. Were the node
killed before finalizing and then to draft again, it would have signed two different blocks at
h. So the draft is kept (PersistDraft, before the Send) and the engine built on restart resumes
it: the block it finalizes at h is that draft, whether confirmations still come or it times out.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from node.ledger import records
from node.ledger.keys import NodeKey
from node.ledger.validation import ValidationPolicy, decode, validate_final_block
from node.protocol.dfl import DflConfig, DflEngine
from node.protocol.events import (
    ConfirmationsReceived,
    DraftBlockReceived,
    Evaluate,
    EvaluationDone,
    PersistBlock,
    PersistDraft,
    SamplesCollected,
    Send,
    Tick,
    TrainingDone,
    TransactionReceived,
)
from node.service.config import load_node_config
from node.service.server import DflNode
from proto.dfl.v1 import records_pb2 as pb
from tests.support import key, tiny_genesis, tiny_weights

GENESIS = tiny_genesis()
CONFIG = DflConfig(batch_size=4, transactions_per_block=1, confirmation_timeout=3.0)


def drafted() -> tuple[DflEngine, pb.Block, pb.ConfirmationBatch]:
    """`a` has drafted a block with `b`'s receipt: the kept draft and b's confirmations of it."""
    generator = DflEngine(key("a"), GENESIS, CONFIG, peers=("b",))
    receiver = DflEngine(key("b"), GENESIS, CONFIG, peers=("a",))
    generator.handle(SamplesCollected(4), 0.0)
    (send,) = generator.handle(TrainingDone(tiny_weights()), 0.0)
    (evaluate,) = receiver.handle(TransactionReceived(send.payload, "a"), 0.1)
    assert isinstance(evaluate, Evaluate)
    (back,) = receiver.handle(EvaluationDone(evaluate.transaction_digest, 0.9), 0.1)
    keep, draft = generator.handle(TransactionReceived(back.payload, "b"), 0.2)
    assert isinstance(keep, PersistDraft) and isinstance(draft, Send)
    (confirm,) = receiver.handle(DraftBlockReceived(draft.payload, "a"), 0.3)
    return generator, keep.block, pb.ConfirmationBatch.FromString(confirm.payload)


def resumed(draft: pb.Block) -> DflEngine:
    """The generator's engine as a restart builds it: nothing of the old one but its store."""
    return DflEngine(key("a"), GENESIS, CONFIG, peers=("b",), draft=draft)


def test_a_resumed_draft_finalizes_with_the_confirmations_that_still_come() -> None:
    _, draft, confirmations = drafted()
    engine = resumed(draft)
    assert engine.state.draft is not None and engine.state.draft.sent_at == 0.2
    (persist,) = engine.handle(ConfirmationsReceived(confirmations.SerializeToString(), "b"), 0.5)
    assert isinstance(persist, PersistBlock)
    assert persist.block.digest == draft.digest and persist.block.body == draft.body
    assert not persist.block.finalization.timed_out and engine.state.height == 1


def test_a_resumed_draft_that_gets_no_confirmation_times_out_as_itself() -> None:
    _, draft, _ = drafted()
    engine = resumed(draft)
    assert engine.handle(Tick(), 0.2 + CONFIG.confirmation_timeout - 0.1) == []
    (persist,) = engine.handle(Tick(), 0.2 + CONFIG.confirmation_timeout)
    assert isinstance(persist, PersistBlock) and persist.block.digest == draft.digest
    assert persist.block.finalization.timed_out
    validate_final_block(
        persist.block,
        ValidationPolicy.for_genesis(GENESIS),
        height=1,
        previous_digest=GENESIS.digest,
    )


def test_a_resumed_engine_drafts_nothing_else_at_that_height() -> None:
    _, draft, _ = drafted()
    engine = resumed(draft)
    receiver = DflEngine(key("b"), GENESIS, CONFIG, peers=("a",))
    engine.handle(SamplesCollected(4), 0.3)
    (send,) = engine.handle(TrainingDone(tiny_weights(0.25)), 0.3)
    (evaluate,) = receiver.handle(TransactionReceived(send.payload, "a"), 0.4)
    (back,) = receiver.handle(EvaluationDone(evaluate.transaction_digest, 0.8), 0.4)
    # settled and enough for a block, but height 1 is the resumed draft's
    assert engine.handle(TransactionReceived(back.payload, "b"), 0.5) == []
    persist, keep, _ = engine.handle(Tick(), 0.2 + CONFIG.confirmation_timeout)
    assert isinstance(persist, PersistBlock) and persist.block.digest == draft.digest
    assert isinstance(keep, PersistDraft) and keep.block.body.height == 2
    assert keep.block.body.previous_digest == persist.block.final_digest


def test_only_our_own_draft_of_the_next_block_is_resumed() -> None:
    _, draft, _ = drafted()
    with pytest.raises(ValueError, match="not our own draft"):
        DflEngine(key("b"), GENESIS, CONFIG, draft=draft)
    with pytest.raises(ValueError, match="not our own draft"):
        DflEngine(key("a"), GENESIS, CONFIG, height=1, head_digest=b"x" * 32, draft=draft)


# --- a real node, killed between sending its draft and finalizing it ---------------------------


def test_a_node_restarted_after_sending_its_draft_finalizes_that_draft(tmp_path: Path) -> None:
    config = load_node_config(
        None,
        environ={},
        name="drafter",
        data_dir=tmp_path,
        port=1,
        peers=["127.0.0.1:1"],  # never reached: the engine is driven here, not over gRPC
        model="mlp",
        seed=5,
        identity="derived",
        dfl={"transactions_per_block": 1, "confirmation_timeout": 3.0},
    )
    first = DflNode(config)
    now = time.time()
    first.engine.handle(SamplesCollected(64), now)
    (send,) = first.engine.handle(TrainingDone(first.host.weights()), now)
    tx = decode(pb.Transaction, send.payload)
    neighbour = NodeKey.from_seed(b"neighbour")
    tx.receipts.append(
        records.make_receipt(neighbour, tx, accuracy=0.5, now_ms=tx.body.create_time_ms)
    )
    back = records.without_model(tx).SerializeToString()
    keep, _ = first.engine.handle(TransactionReceived(back, "127.0.0.1:1"), now + 0.1)
    first.dispatch(keep)  # kept; the Send would follow, then the kill: no clean stop
    first._ml.shutdown(wait=True)
    first.store.close()

    second = DflNode(config)
    try:
        assert second.engine.state.draft is not None
        assert second.engine.state.draft.block == keep.block
        (persist,) = second.engine.handle(Tick(), now + 0.2 + 3.0)  # past its timeout
        second.dispatch(persist)
        assert second.store.height == 1 and second.store.draft() is None
        assert second.store.block(1).digest == keep.block.digest
    finally:
        second._stop_workers()
        second.store.close()
