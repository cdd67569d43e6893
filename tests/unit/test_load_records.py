"""What the load generator sends, against the real DFL engine: a virtual peer's transaction is
a new model to evaluate, and each forged kind is refused for the reason its task expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node import seeds
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.keys import NodeKey
from node.protocol.dfl import DflConfig, DflEngine
from node.protocol.events import Evaluate, TransactionReceived
from orchestrator.load.plan import LoadPlan, PlanNode
from orchestrator.load.records import Forger, VirtualPeer, perturbed, virtual_peer_key
from orchestrator.load.tasks import FORGED_KINDS
from proto.dfl.v1 import records_pb2 as pb
from tests.support import TINY_PARAMETERS, key, tiny_genesis, tiny_weights

GENESIS = tiny_genesis()
CONFIG = DflConfig(
    batch_size=64,
    fedavg_buffer=100,
    transactions_per_block=100,
    ttl=1,
    transaction_lifetime=10.0,
    receipt_wait=2.0,
    confirmation_timeout=3.0,
)
NOW_MS = 1_000_000


def receiver() -> DflEngine:
    return DflEngine(key("receiver"), GENESIS, CONFIG, peers=("neighbour:1",))


def test_virtual_peer_transactions_are_new_models_the_node_evaluates() -> None:
    node = receiver()
    peer = VirtualPeer(virtual_peer_key(1, 0), GENESIS.digest, ttl=1, lifetime_ms=10_000)
    peer.use_model(tiny_weights(0.25))
    # Two in the same millisecond: still two transactions, not a duplicate.
    first, second = peer.transaction(NOW_MS), peer.transaction(NOW_MS)
    for payload in (first, second):
        actions = node.handle(TransactionReceived(payload, "load:1"), NOW_MS / 1000)
        evaluations = [a for a in actions if isinstance(a, Evaluate)]
        assert len(evaluations) == 1
        assert evaluations[0].generator == peer.key.address
        assert evaluations[0].model == tiny_weights(0.25)
    assert node.state.counters["transactions_received"] == 2


def test_a_virtual_peer_without_a_model_sends_nothing() -> None:
    peer = VirtualPeer(virtual_peer_key(1, 0), GENESIS.digest, ttl=1, lifetime_ms=10_000)
    assert not peer.has_model
    with pytest.raises(RuntimeError, match="use_model"):
        peer.transaction(NOW_MS)


@pytest.mark.parametrize("kind", sorted(FORGED_KINDS))
def test_each_forged_kind_is_refused_for_the_reason_its_task_expects(kind: str) -> None:
    node = receiver()
    forger = Forger(GENESIS.digest, TINY_PARAMETERS * 4, np.random.default_rng(3))
    for _ in range(3):  # fresh each time: signed forgeries never share a key
        payload = forger.record(kind, NOW_MS)
        with pytest.raises(RecordRejected) as refused:
            node.handle(TransactionReceived(payload, "load:2"), NOW_MS / 1000)
        reason: RejectReason = refused.value.reason
        assert (reason.grpc_status, reason.label) == (
            FORGED_KINDS[kind].status,
            FORGED_KINDS[kind].reason,
        )
    assert node.state.counters["transactions_received"] == 0


def test_signed_forgeries_get_a_key_each_so_no_generator_is_banned_for_them() -> None:
    forger = Forger(GENESIS.digest, TINY_PARAMETERS * 4, np.random.default_rng(3))
    generators = {
        pb.Transaction.FromString(forger.record("wrong_genesis", NOW_MS)).body.generator.address
        for _ in range(5)
    }
    assert len(generators) == 5


def test_virtual_peers_are_reproducible_and_never_a_node() -> None:
    assert virtual_peer_key(1, 0).address == virtual_peer_key(1, 0).address
    assert virtual_peer_key(1, 0).address != virtual_peer_key(1, 1).address
    assert virtual_peer_key(1, 0).address != virtual_peer_key(2, 0).address
    nodes = {NodeKey.from_seed(seeds.identity_seed(1, i)).address for i in range(8)}
    assert not nodes & {virtual_peer_key(1, i).address for i in range(8)}


def test_perturbed_weights_differ_by_noise_of_the_given_scale() -> None:
    weights = np.linspace(-1, 1, 10_000, dtype="<f4").tobytes()
    noisy = np.frombuffer(perturbed(weights, np.random.default_rng(0), 1e-3), dtype="<f4")
    base = np.frombuffer(weights, dtype="<f4")
    assert noisy.shape == base.shape and np.isfinite(noisy).all()
    assert 0.8e-3 < float(np.std(noisy - base)) < 1.2e-3


def test_the_plan_reads_back_as_written(tmp_path: Path) -> None:
    plan = LoadPlan(
        nodes=(PlanNode("node0", "127.0.0.1:5000", "ab" * 32, "cd" * 32, 60),),
        weights={"forged": 2, "status": 1},
        control_key="/keys/control_key.pem",
        seed=4,
        samples="samples.npz",
        csv_prefix="run/load",
        wait_seconds=0.5,
    )
    assert LoadPlan.read(plan.write(tmp_path / "plan.json")) == plan
