"""The sans-IO BLADE-FL engine under a fake clock: rounds, forks, catching up, bad blocks."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import get_args

import pytest

from node.ledger import records
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.keys import NodeKey
from node.ledger.pow import MAX_NONCE, header_hash, header_prefix, mine, target_for
from node.ledger.store import ChainCorrupted, ChainStore
from node.protocol.blade import TRANSITIONS, BladeConfig, BladeEngine, Phase
from node.protocol.blade_chainless import ChainlessBladeEngine
from node.protocol.events import (
    AggregateRound,
    BladeEvent,
    BlockMined,
    FetchChain,
    LocalModelReady,
    MessageKind,
    Mine,
    PersistPowBlock,
    Plagiarize,
    PowBlockReceived,
    SamplesCollected,
    Send,
    Tick,
    TrainingDone,
    TrainLocal,
    TransactionReceived,
    VoteReceived,
)
from node.protocol.framing import unframe_model
from orchestrator import cli
from proto.dfl.v1 import records_pb2 as pb
from tests.support import (
    BLADE_DIFFICULTY,
    NAMES,
    blade_network,
    key,
    tiny_blade_genesis,
    tiny_weights,
)

GENESIS = tiny_blade_genesis()
TARGET = target_for(BLADE_DIFFICULTY)
CONFIG = BladeConfig(
    clients=4, rounds=5, local_iterations=2, dataset_size=64, collect_timeout=3.0, vote_timeout=2.0
)


def stores_of(directory: Path) -> dict[str, ChainStore]:
    return {name: ChainStore.open(directory / name) for name in NAMES}


def chain_hashes(store: ChainStore) -> list[bytes]:
    return [digest for _, digest, _ in store.blocks()]


def one_verified_chain(directory: Path) -> dict[str, ChainStore]:
    """Every client's store, after checking that all hold the same verified chain of K blocks."""
    stores = stores_of(directory)
    first = chain_hashes(stores["n0"])
    assert len(first) == CONFIG.rounds
    for name, store in stores.items():
        assert chain_hashes(store) == first, name
        store.verify()
    return stores


# --- whole rounds ------------------------------------------------------------------------------


def test_four_clients_append_the_same_blocks_holding_every_model(tmp_path: Path) -> None:
    network = blade_network(tmp_path, CONFIG)
    network.run(60.0)
    stores = one_verified_chain(tmp_path)
    for name, store in stores.items():
        assert store.verify().transactions == 4 * CONFIG.rounds  # every model in every block
        node = network.nodes[name]
        assert node.engine.finished and not node.rejections
        assert node.host.rounds == list(range(1, CONFIG.rounds + 1))
    weights = {name: network.nodes[name].host.weights.tobytes() for name in NAMES}
    assert len(set(weights.values())) == 1  # the same global model everywhere


def test_simultaneous_miners_fork_every_height_and_all_clients_resolve_it_alike(
    tmp_path: Path,
) -> None:
    # Mining is instant and delivery slow: every client mines its own block at every height
    # before it sees anyone else's, and votes for it. The votes split 1-1-1-1.
    network = blade_network(tmp_path, CONFIG, hash_rate=1e9, latency=0.4)
    network.run(60.0)
    stores = one_verified_chain(tmp_path)
    for name in stores:
        counters = network.nodes[name].engine.state.counters
        assert counters["forks"] >= CONFIG.rounds and counters["ties_broken"] == CONFIG.rounds
    miners = {stores["n0"].block(h).header.miner for h in range(1, CONFIG.rounds + 1)}
    assert len(miners) > 1  # the tie-break (lowest hash) is not one fixed client


def test_a_client_cut_off_for_rounds_catches_up_from_its_peers(tmp_path: Path) -> None:
    network = blade_network(tmp_path, CONFIG)
    cut = {(a, "n3") for a in NAMES[:3]} | {("n3", b) for b in NAMES[:3]}
    network.cut |= cut
    network.run(14.0)
    assert network.nodes["n3"].engine.state.height == 0
    assert network.nodes["n0"].engine.state.height >= 2  # 3 of 4 is a majority: they go on
    network.cut -= cut
    network.run(80.0)
    stores = stores_of(tmp_path)
    assert chain_hashes(stores["n3"]) == chain_hashes(stores["n0"])
    assert stores["n3"].height == CONFIG.rounds
    stores["n3"].verify()
    n3 = network.nodes["n3"]
    assert n3.engine.state.counters["fetches"] >= 1
    assert n3.host.weights.tobytes() == network.nodes["n0"].host.weights.tobytes()


def test_a_lazy_client_copies_a_model_of_its_peers_instead_of_training(tmp_path: Path) -> None:
    network = blade_network(tmp_path, CONFIG, lazy=("n3",))
    network.run(60.0)
    lazy = network.nodes["n3"].host
    assert len(lazy.copied_from) == CONFIG.rounds
    assert all(len(models) == 3 for models in lazy.copied_from)  # it waited for all three
    store = ChainStore.open(tmp_path / "n0")
    assert store.height == CONFIG.rounds
    assert network.nodes["n3"].engine.state.counters["models_plagiarized"] == CONFIG.rounds


# --- one client, event by event ----------------------------------------------------------------


def pool_model(client: NodeKey, round: int = 1, value: float = 0.5) -> pb.Transaction:
    return records.make_transaction(
        client,
        genesis_digest=GENESIS.digest,
        weights=tiny_weights(value),
        now_ms=1_000,
        ttl=0,
        lifetime_ms=10_000,
        round=round,
    )


def mined_block(
    miner: NodeKey,
    transactions: list[pb.Transaction],
    *,
    height: int = 1,
    previous: bytes = GENESIS.digest,
    sufficient: bool = True,
) -> pb.PowBlock:
    ordered = sorted(transactions, key=lambda tx: tx.body.generator.address)
    header = records.pow_header(
        height=height,
        previous_hash=previous,
        transactions=ordered,
        miner=miner.address,
        time_ms=2_000,
    )
    if sufficient:
        nonce = mine(header_prefix(header), TARGET, 0, MAX_NONCE).nonce
    else:
        nonce = next(n for n in range(MAX_NONCE) if not _meets(header, n))
    assert nonce is not None
    return records.make_pow_block(miner, header, nonce, ordered)


def _meets(header: pb.PowHeader, nonce: int) -> bool:
    attempt = pb.PowHeader()
    attempt.CopyFrom(header)
    attempt.nonce = nonce
    return header_hash(attempt) < TARGET


def client_in_round_one() -> tuple[BladeEngine, list[pb.Transaction]]:
    """n0 trained round 1; n1 and n2 have sent their models; n3 has not."""
    engine = BladeEngine(key("n0"), GENESIS, CONFIG, peers=("n1", "n2", "n3"))
    (train,) = engine.handle(SamplesCollected(64), 0.0)
    assert train == TrainLocal(1, CONFIG.local_iterations)
    actions = engine.handle(LocalModelReady(1, tiny_weights(0.1)), 1.0)
    own = pb.Transaction.FromString(actions[0].payload)
    peers = [pool_model(key(name), value=0.2 + i / 10) for i, name in enumerate(("n1", "n2"))]
    for tx in peers:
        engine.handle(TransactionReceived(tx.SerializeToString(), "peer"), 1.1)
    return engine, [own, *peers]


def test_a_complete_pool_starts_mining_and_a_peer_block_stops_it_and_gets_the_vote() -> None:
    engine, pool = client_in_round_one()
    n3_model = pool_model(key("n3"), value=0.9)
    (mine_action,) = engine.handle(TransactionReceived(n3_model.SerializeToString(), "n3"), 1.2)
    assert isinstance(mine_action, Mine) and mine_action.height == 1
    assert engine.state.phase is Phase.MINING
    block = mined_block(key("n1"), [*pool, n3_model])
    actions = engine.handle(PowBlockReceived(block.SerializeToString(), "n1"), 1.5)
    kinds = [type(a).__name__ for a in actions]
    assert kinds == ["Send", "StopMining"] and engine.state.phase is Phase.VOTING
    vote = pb.BlockVote.FromString(actions[0].payload)
    assert actions[0].kind is MessageKind.BLOCK_VOTE and vote.body.block_hash == block.hash
    # A second valid block at the same height is a fork: counted, no second vote.
    rival = mined_block(key("n2"), [*pool, n3_model])
    assert engine.handle(PowBlockReceived(rival.SerializeToString(), "n2"), 1.6) == []
    assert engine.state.counters["forks"] == 1 and engine.state.own_vote[1] == block.hash
    # Votes of n1 and n2 make three of four: appended, aggregated, round 2 begins.
    for name in ("n1", "n2"):
        ballot = records.make_vote(
            key(name), height=1, block_hash=block.hash, genesis_digest=GENESIS.digest
        )
        actions = engine.handle(VoteReceived(ballot.SerializeToString(), name), 1.7)
    persisted = [a for a in actions if isinstance(a, PersistPowBlock)]
    aggregated = [a for a in actions if isinstance(a, AggregateRound)]
    assert persisted[0].block.hash == block.hash and len(aggregated[0].models) == 4
    assert TrainLocal(2, CONFIG.local_iterations) in actions
    assert (engine.state.round, engine.state.phase) == (2, Phase.TRAINING)


def test_the_phase_table_gives_every_blade_event_a_meaning_in_every_phase() -> None:
    anywhere = {kind for phase, kind in TRANSITIONS if phase is None}
    assert anywhere == set(get_args(BladeEvent))
    assert {kind for phase, kind in TRANSITIONS} == anywhere  # no event of another protocol


def test_events_out_of_their_phase_are_counted_late_and_change_nothing_else() -> None:
    engine, _ = client_in_round_one()  # n0's model of round 1 is in the pool: collecting
    assert engine.state.phase is Phase.COLLECTING
    before = engine.snapshot()
    assert engine.handle(LocalModelReady(1, tiny_weights(0.3)), 1.15) == []  # a second training
    assert engine.handle(BlockMined(1, 0), 1.15) == []  # it never asked to mine
    assert engine.handle(SamplesCollected(10), 1.15) == []  # data only opens a waiting round
    after = engine.snapshot()
    assert after.counters - before.counters == Counter(local_models_late=1, mined_too_late=1)
    assert after.samples == before.samples + 10
    after.counters, after.samples = before.counters, before.samples
    assert after == before  # the phase, the pool and the round as they were
    with pytest.raises(TypeError, match="not a BLADE-FL event"):  # DFL's: in no phase here
        engine.handle(TrainingDone(tiny_weights()), 1.2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        ("insufficient_work", RejectReason.INSUFFICIENT_WORK),
        ("wrong_previous_hash", RejectReason.BAD_LINK),
        ("model_not_from_pool", RejectReason.UNKNOWN_MODEL),
        ("forged_miner_signature", RejectReason.BAD_SIGNATURE),
    ],
)
def test_a_bad_block_is_rejected_with_its_reason_and_changes_nothing(
    forge: str, reason: RejectReason
) -> None:
    engine, pool = client_in_round_one()
    if forge == "insufficient_work":
        block = mined_block(key("n1"), pool, sufficient=False)
    elif forge == "wrong_previous_hash":
        block = mined_block(key("n1"), pool, previous=bytes(32))
    elif forge == "model_not_from_pool":
        block = mined_block(key("n1"), [*pool, pool_model(key("stranger"))])
    else:
        block = mined_block(key("n1"), pool)
        block.signature = key("n2").sign(block.hash)
    before = engine.snapshot()
    with pytest.raises(RecordRejected) as rejected:
        engine.handle(PowBlockReceived(block.SerializeToString(), "n1"), 1.5)
    assert rejected.value.reason is reason
    assert engine.snapshot() == before
    # The client goes on: the honest block is still accepted and voted for.
    honest = mined_block(key("n1"), pool)
    actions = engine.handle(PowBlockReceived(honest.SerializeToString(), "n1"), 1.6)
    assert any(isinstance(a, Send) and a.kind is MessageKind.BLOCK_VOTE for a in actions)


def test_a_second_model_from_one_client_in_a_round_is_rejected() -> None:
    engine, _ = client_in_round_one()
    other = pool_model(key("n1"), value=0.7)
    with pytest.raises(RecordRejected) as rejected:
        engine.handle(TransactionReceived(other.SerializeToString(), "n1"), 1.3)
    assert rejected.value.reason is RejectReason.DUPLICATE


def test_a_vote_for_two_blocks_at_one_height_is_rejected() -> None:
    engine, _ = client_in_round_one()
    for block_hash, accepted in ((b"\x01" * 32, True), (b"\x02" * 32, False)):
        ballot = records.make_vote(
            key("n1"), height=1, block_hash=block_hash, genesis_digest=GENESIS.digest
        )
        if accepted:
            engine.handle(VoteReceived(ballot.SerializeToString(), "n1"), 1.2)
        else:
            with pytest.raises(RecordRejected) as rejected:
                engine.handle(VoteReceived(ballot.SerializeToString(), "n1"), 1.3)
            assert rejected.value.reason is RejectReason.DUPLICATE


@pytest.mark.parametrize(("edit", "reason"), [("work", "insufficient_work"), ("link", "bad_link")])
def test_the_store_refuses_a_mined_block_edited_after_the_fact(
    tmp_path: Path, edit: str, reason: str
) -> None:
    network = blade_network(tmp_path, CONFIG)
    network.run(60.0)
    for store in stores_of(tmp_path).values():
        store.close()
    path = tmp_path / "n1" / "chain.sqlite"
    with ChainStore.open(path) as store:
        block = store.block(3)
    header = block.header
    if edit == "work":
        nonce = next(n for n in range(MAX_NONCE) if not _meets(header, n))
    else:
        header.previous_hash = bytes(32)
        nonce = mine(header_prefix(header), TARGET, 0, MAX_NONCE).nonce or 0
    miner = next(key(name) for name in NAMES if key(name).address == header.miner)
    forged = records.make_pow_block(miner, header, nonce, block.transactions)
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE blocks SET data = ?, final_digest = ? WHERE height = 3",
            (forged.SerializeToString(), forged.hash),
        )
    with pytest.raises(ChainCorrupted) as corrupted:
        ChainStore.open(path)
    assert (corrupted.value.height, corrupted.value.reason) == (3, reason)


def test_the_chain_commands_verify_and_export_mined_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    network = blade_network(tmp_path, CONFIG)
    network.run(60.0)
    for node in network.nodes.values():
        node.store.close()
    assert cli.main(["chain", "verify", str(tmp_path / "n2")]) == 0
    assert "OK: 5 blocks, 20 transactions" in capsys.readouterr().out
    assert cli.main(["chain", "export", str(tmp_path / "n2")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["height"] for line in lines] == list(range(CONFIG.rounds + 1))
    mined = lines[1]["block"]
    assert mined["header"]["height"] == 1 and len(mined["transactions"]) == 4
    assert "model" not in mined["transactions"][0]  # blocks hold the models' digests only


# --- BLADE-FL without the chain ----------------------------------------------------------------


def test_four_chainless_clients_aggregate_every_round_alike_and_the_lazy_one_copies() -> None:
    config = BladeConfig(clients=4, rounds=3, local_iterations=2, dataset_size=64)
    engines = {
        name: ChainlessBladeEngine(
            key(name).address,
            replace(config, lazy=name == "n3"),
            peers=tuple(peer for peer in NAMES if peer != name),
        )
        for name in NAMES
    }
    asked: dict[str, list[TrainLocal | Plagiarize]] = {name: [] for name in NAMES}
    aggregated: dict[str, list[AggregateRound]] = {name: [] for name in NAMES}
    overtaken = 0  # models that came in while their receiver was still a round behind
    pending: list[tuple[str, BladeEvent]] = [(name, SamplesCollected(64)) for name in NAMES]
    while pending:
        name, event = pending.pop()  # newest first: a fast client's next round overtakes the last
        engine = engines[name]
        if isinstance(event, TransactionReceived):
            overtaken += unframe_model(event.payload).round > engine.state.round
        for action in engine.handle(event, 0.0):
            match action:
                case TrainLocal(round, _):
                    asked[name].append(action)
                    model = tiny_weights(int(name[1:]) + round / 10)
                    pending.append((name, LocalModelReady(round, model)))
                case Plagiarize(round, models):
                    asked[name].append(action)
                    pending.append((name, LocalModelReady(round, models[0])))
                case Send(to, MessageKind.TRANSACTION, payload):
                    pending.extend((peer, TransactionReceived(payload, name)) for peer in to)
                case AggregateRound():
                    aggregated[name].append(action)
    assert overtaken > 0
    generators = sorted(key(name).address for name in NAMES)
    for name in NAMES:
        assert engines[name].finished
        assert [a.round for a in aggregated[name]] == [1, 2, 3]
        assert all([m.generator for m in a.models] == generators for a in aggregated[name])
    assert aggregated["n0"] == aggregated["n1"] == aggregated["n2"] == aggregated["n3"]
    assert all(isinstance(a, TrainLocal) for name in NAMES[:3] for a in asked[name])
    copies = [(a.round, len(a.models)) for a in asked["n3"] if isinstance(a, Plagiarize)]
    assert len(asked["n3"]) == 3 and copies == [(1, 3), (2, 3), (3, 3)]  # all honest models in
    assert engines["n3"].state.counters["models_plagiarized"] == 3


def test_a_chainless_client_refuses_its_own_model_and_one_of_a_closed_round() -> None:
    config = BladeConfig(clients=2, rounds=2, local_iterations=1, dataset_size=1)
    n0 = ChainlessBladeEngine(key("n0").address, config, peers=("n1",))
    n1 = ChainlessBladeEngine(key("n1").address, config, peers=("n0",))
    for engine in (n0, n1):
        assert engine.handle(SamplesCollected(1), 0.0) == [TrainLocal(1, 1)]
    n0.handle(LocalModelReady(1, tiny_weights(0.1)), 0.0)
    (send,) = n1.handle(LocalModelReady(1, tiny_weights(0.2)), 0.0)
    assert isinstance(send, Send) and unframe_model(send.payload).generator == key("n1").address
    aggregate, train = n0.handle(TransactionReceived(send.payload, "n1"), 0.0)
    assert isinstance(aggregate, AggregateRound) and train == TrainLocal(2, 1)
    with pytest.raises(ValueError, match="closed"):
        n0.handle(TransactionReceived(send.payload, "n1"), 0.0)
    with pytest.raises(ValueError, match="our own"):
        n1.handle(TransactionReceived(send.payload, "n0"), 0.0)


def test_a_restarted_client_asks_a_peer_for_the_blocks_it_may_have_missed() -> None:
    chain = [GENESIS.digest, b"\x01" * 32]  # one block held before it went down
    restarted = BladeEngine(key("n0"), GENESIS, CONFIG, peers=("n1", "n2"), chain=chain)
    assert restarted.handle(Tick(), 1.0) == [FetchChain("n1")]
    fresh = BladeEngine(key("n0"), GENESIS, CONFIG, peers=("n1", "n2"))
    assert FetchChain("n1") not in fresh.handle(Tick(), 1.0)  # a new client has missed nothing
    done = BladeEngine(
        key("n0"), GENESIS, CONFIG, peers=("n1",), chain=[GENESIS.digest] + [b"\x02" * 32] * 5
    )
    assert done.handle(Tick(), 1.0) == []  # all K blocks held: nothing to ask for
