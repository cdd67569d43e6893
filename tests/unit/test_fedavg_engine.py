"""The sans-IO FedAvg engine under a fake clock: when a round closes, what goes on the wire, what
a client trains from, and what it refuses."""

from __future__ import annotations

import struct
from collections import Counter
from typing import Any

import numpy as np
import pytest

from node.host.blade import BladeHost
from node.learning.behaviours import Duplication
from node.learning.codec import encode_f32le
from node.ledger.errors import RecordRejected, RejectReason
from node.protocol.blade_rounds import Phase
from node.protocol.events import (
    AggregateRound,
    GeneratorsRefused,
    LocalModelReady,
    MessageKind,
    PeersChanged,
    PoolModel,
    RoundAggregated,
    SamplesCollected,
    Send,
    Tick,
    TrainLocal,
    TransactionReceived,
)
from node.protocol.fedavg import FedAvgConfig, FedAvgEngine
from node.protocol.framing import frame_experiment_model, unframe_experiment_model

GENESIS = bytes(range(32))
PARAMETERS = 4
AGGREGATOR, C1, C2 = b"\xaa" * 20, b"\x01" * 20, b"\x02" * 20
CLIENTS = ("c1", "c2")  # the aggregator's peers: its clients' transport names
CONFIG = FedAvgConfig(clients=3, rounds=3, local_iterations=2, dataset_size=8, round_timeout=5.0)


def weights(*values: float) -> bytes:
    return struct.pack(f"<{PARAMETERS}f", *(values * PARAMETERS)[:PARAMETERS])


def upload(generator: bytes, model: bytes, round: int, genesis: bytes = GENESIS) -> bytes:
    return frame_experiment_model(genesis, generator, model, round=round)


def aggregator(config: FedAvgConfig = CONFIG) -> FedAvgEngine:
    engine = FedAvgEngine(
        AGGREGATOR, GENESIS, config, model_bytes=4 * PARAMETERS, aggregator=True, peers=CLIENTS
    )
    assert engine.handle(SamplesCollected(8), 0.0) == [TrainLocal(1, 2)]
    return engine


def client(address: bytes = C1, config: FedAvgConfig = CONFIG) -> FedAvgEngine:
    return FedAvgEngine(
        address, GENESIS, config, model_bytes=4 * PARAMETERS, aggregator=False, peers=("agg",)
    )


def snapshot(engine: FedAvgEngine) -> tuple[Any, ...]:
    s = engine.state
    pool = {k: (g, bytes(m)) for k, (g, m) in s.pool.items()}
    return (s.closed, s.round, s.phase, s.samples, pool, s.first_model_at, Counter(s.counters))


# --- when a round closes --------------------------------------------------------------------------


def test_a_round_closes_only_once_every_clients_model_is_in() -> None:
    engine = aggregator()
    assert engine.handle(LocalModelReady(1, weights(1.0)), 1.0) == []  # its own: no wire
    assert engine.handle(TransactionReceived(upload(C2, weights(3.0), 1), "c2"), 1.5) == []
    (action,) = engine.handle(TransactionReceived(upload(C1, weights(2.0), 1), "c1"), 2.0)
    assert isinstance(action, AggregateRound) and action.round == 1
    # every client's model, in generator order, so that every runtime averages one sequence
    assert [m.generator for m in action.models] == [C1, C2, AGGREGATOR]
    assert [bytes(m.model) for m in action.models] == [weights(2.0), weights(3.0), weights(1.0)]
    assert engine.state.counters["models_missing"] == 0
    assert engine.state.phase is Phase.AGGREGATING


def test_a_round_closes_at_the_timeout_with_what_came_and_counts_the_missing() -> None:
    engine = aggregator()
    engine.handle(TransactionReceived(upload(C1, weights(2.0), 1), "c1"), 10.0)  # the first
    engine.handle(LocalModelReady(1, weights(1.0)), 11.0)
    assert engine.handle(Tick(), 14.9) == []  # round_timeout 5 s after the first model
    (action,) = engine.handle(Tick(), 15.0)
    assert isinstance(action, AggregateRound)
    assert [m.generator for m in action.models] == [C1, AGGREGATOR]
    assert engine.state.counters["models_missing"] == 1
    # the straggler's model of the closed round is refused, and changes nothing
    before = snapshot(engine)
    with pytest.raises(RecordRejected) as refused:
        engine.handle(TransactionReceived(upload(C2, weights(3.0), 1), "c2"), 16.0)
    assert refused.value.reason is RejectReason.WRONG_ROUND
    assert snapshot(engine) == before


def test_no_timer_runs_before_the_rounds_first_model() -> None:
    engine = aggregator()
    assert engine.handle(Tick(), 1_000.0) == []
    assert engine.state.closed == 0


# --- what goes on the wire ------------------------------------------------------------------------


def test_the_aggregator_sends_exactly_one_global_model_to_each_client() -> None:
    engine = aggregator()
    engine.handle(LocalModelReady(1, weights(1.0)), 1.0)
    engine.handle(TransactionReceived(upload(C1, weights(2.0), 1), "c1"), 1.0)
    engine.handle(TransactionReceived(upload(C2, weights(3.0), 1), "c2"), 1.0)
    actions = engine.handle(RoundAggregated(1, weights(2.0)), 1.5)
    sends = [a for a in actions if isinstance(a, Send)]
    assert len(sends) == 1 and sends[0].to == CLIENTS and sends[0].kind is MessageKind.TRANSACTION
    genesis, framed = unframe_experiment_model(sends[0].payload)
    assert (genesis, framed.generator, framed.round) == (GENESIS, AGGREGATOR, 1)
    assert bytes(framed.model) == weights(2.0)
    assert engine.state.counters["global_models_sent"] == 2
    assert TrainLocal(2, 2) in actions  # and the aggregator, a client too, trains round 2


def test_a_client_sends_its_model_to_the_aggregator_only() -> None:
    engine = client()
    engine.handle(PeersChanged(("agg",)), 0.0)
    assert engine.handle(SamplesCollected(5), 0.0) == []  # not its whole dataset yet
    assert engine.handle(SamplesCollected(3), 0.0) == [TrainLocal(1, 2)]
    (send,) = engine.handle(LocalModelReady(1, weights(0.5)), 1.0)
    assert isinstance(send, Send) and send.to == ("agg",)
    _, framed = unframe_experiment_model(send.payload)
    assert (framed.generator, framed.round, bytes(framed.model)) == (C1, 1, weights(0.5))


# --- what a client trains from --------------------------------------------------------------------


def test_a_client_adopts_the_global_model_and_trains_the_next_round_from_it() -> None:
    engine = client()
    engine.handle(SamplesCollected(8), 0.0)
    engine.handle(LocalModelReady(1, weights(0.5)), 1.0)
    (adopt,) = engine.handle(TransactionReceived(upload(AGGREGATOR, weights(7.0), 1), "agg"), 2.0)
    # the host's average of the one global model is the global model
    assert isinstance(adopt, AggregateRound) and adopt.round == 1
    assert [(m.generator, bytes(m.model)) for m in adopt.models] == [(AGGREGATOR, weights(7.0))]
    assert engine.handle(RoundAggregated(1, weights(7.0)), 2.1) == [TrainLocal(2, 2)]


def test_the_host_trains_from_the_global_model_it_adopted() -> None:
    """BladeHost: after the AggregateRound of one global model, the next local round starts
    from that model (a client that does not train sends it back unchanged)."""
    host = BladeHost(
        model="mlp", seed=3, index=1, behaviour=Duplication(), dataset_size=4, batch_size=2
    )
    host.collect(np.zeros((4, 28, 28), np.uint8), np.arange(4))
    global_model = np.full_like(host.global_weights, 0.25)
    host.aggregate_round(1, [PoolModel(AGGREGATOR, b"", encode_f32le(global_model))])
    assert np.array_equal(host.global_weights, global_model)
    assert host.train_local(2, 1) == encode_f32le(global_model)


def test_a_client_that_lost_a_global_model_takes_a_later_one_and_drops_its_late_model() -> None:
    engine = client()
    engine.handle(SamplesCollected(8), 0.0)  # training round 1 ...
    (adopt,) = engine.handle(TransactionReceived(upload(AGGREGATOR, weights(4.0), 2), "agg"), 1.0)
    assert isinstance(adopt, AggregateRound) and adopt.round == 2  # ... when round 2's came
    assert engine.handle(LocalModelReady(1, weights(0.5)), 1.5) == []  # no upload of round 1
    assert engine.state.counters["local_models_late"] == 1
    assert engine.handle(RoundAggregated(2, weights(4.0)), 2.0) == [TrainLocal(3, 2)]


def test_an_observer_receives_every_global_model_and_never_trains() -> None:
    engine = client(config=FedAvgConfig(clients=2, rounds=2, local_iterations=1, trains=False))
    assert engine.handle(SamplesCollected(512), 0.0) == []
    engine.handle(TransactionReceived(upload(AGGREGATOR, weights(1.0), 1), "agg"), 1.0)
    assert engine.handle(RoundAggregated(1, weights(1.0)), 1.0) == []
    engine.handle(TransactionReceived(upload(AGGREGATOR, weights(2.0), 2), "agg"), 2.0)
    assert engine.handle(RoundAggregated(2, weights(2.0)), 2.0) == []
    assert engine.finished


# --- what is refused ------------------------------------------------------------------------------

NAN = struct.pack("<4f", 1.0, float("nan"), 1.0, 1.0)
REFUSED_AT_THE_AGGREGATOR = {
    "empty": (b"", "c1", RejectReason.MALFORMED),
    "cut inside the digest": (bytes([32]) + GENESIS[:5], "c1", RejectReason.MALFORMED),
    "cut inside the header": (bytes([32]) + GENESIS + bytes([20]) + C1[:3], "c1", "malformed"),
    "another experiment": (upload(C1, weights(1.0), 1, b"\x07" * 32), "c1", "genesis_mismatch"),
    "not a client": (upload(C1, weights(1.0), 1), "stranger:1", "wrong_creator"),
    "framed as the aggregator's": (upload(AGGREGATOR, weights(1.0), 1), "c1", "wrong_creator"),
    "a later round": (upload(C1, weights(1.0), 2), "c1", "wrong_round"),
    "round 0": (upload(C1, weights(1.0), 0), "c1", "wrong_round"),
    "too short": (upload(C1, weights(1.0)[:-4], 1), "c1", "model_shape_mismatch"),
    "too long": (upload(C1, weights(1.0) + b"\0" * 4, 1), "c1", "model_shape_mismatch"),
    "not whole floats": (upload(C1, weights(1.0) + b"\0", 1), "c1", "model_shape_mismatch"),
    "NaN": (upload(C1, NAN, 1), "c1", "non_finite_weights"),
    "a second model of c2": (upload(C2, weights(9.0), 1), "c2", "duplicate"),
    "c1's model as c2's": (upload(C2, weights(9.0), 1), "c1", "duplicate"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_AT_THE_AGGREGATOR))
def test_a_bad_or_unexpected_message_is_refused_with_its_reason_and_changes_nothing(
    case: str,
) -> None:
    engine = aggregator()
    engine.handle(TransactionReceived(upload(C2, weights(3.0), 1), "c2"), 1.0)
    payload, sender, reason = REFUSED_AT_THE_AGGREGATOR[case]
    before = snapshot(engine)
    with pytest.raises(RecordRejected) as refused:
        engine.handle(TransactionReceived(payload, sender), 2.0)
    label = reason.label if isinstance(reason, RejectReason) else reason
    assert refused.value.reason.label == label
    assert snapshot(engine) == before


def test_a_client_refuses_a_global_model_from_anyone_but_its_aggregator() -> None:
    engine = client()
    engine.handle(SamplesCollected(8), 0.0)
    before = snapshot(engine)
    with pytest.raises(RecordRejected) as refused:
        engine.handle(TransactionReceived(upload(C2, weights(1.0), 1), "c2"), 1.0)
    assert refused.value.reason is RejectReason.WRONG_CREATOR
    with pytest.raises(RecordRejected) as stale:
        engine.handle(TransactionReceived(upload(AGGREGATOR, weights(1.0), 0), "agg"), 1.0)
    assert stale.value.reason is RejectReason.WRONG_ROUND
    assert snapshot(engine) == before


def test_a_banned_generators_model_is_refused_before_anything_else() -> None:
    engine = aggregator()
    engine.handle(GeneratorsRefused(frozenset({C1})), 0.0)
    with pytest.raises(RecordRejected) as refused:
        engine.handle(TransactionReceived(upload(C1, weights(1.0), 1), "c1"), 1.0)
    assert refused.value.reason is RejectReason.REFUSED_GENERATOR


# --- K rounds -------------------------------------------------------------------------------------


def test_the_run_is_done_after_k_rounds_and_every_node_ends_on_the_same_global_model() -> None:
    """The three engines wired by hand, ML faked: a client's model is round + its index, the
    host's average the mean of the floats."""
    agg, clients = aggregator(), {"c1": client(C1), "c2": client(C2)}
    for engine in clients.values():
        engine.handle(SamplesCollected(8), 0.0)
    now, uploads, globals_sent = 0.0, Counter[str](), 0
    queue: list[tuple[str, Any]] = [("agg", LocalModelReady(1, weights(1.0)))]
    queue += [(name, LocalModelReady(1, weights(1.0 + i))) for i, name in enumerate(clients, 1)]
    held: dict[str, bytes] = {}
    while queue:
        name, event = queue.pop(0)
        now += 0.1
        engine = agg if name == "agg" else clients[name]
        for action in engine.handle(event, now):
            match action:
                case TrainLocal(round, _):
                    index = 0 if name == "agg" else int(name[1])
                    queue.append((name, LocalModelReady(round, weights(float(round + index)))))
                case Send(to, _, payload):
                    for peer in to:
                        uploads[name] += 1
                        globals_sent += name == "agg"
                        queue.append((peer, TransactionReceived(payload, name)))
                case AggregateRound(round, models):
                    floats = [struct.unpack("<4f", bytes(m.model))[0] for m in models]
                    held[name] = weights(sum(floats) / len(floats))
                    queue.append((name, RoundAggregated(round, held[name])))
    assert agg.finished and all(engine.finished for engine in clients.values())
    assert agg.state.closed == CONFIG.rounds
    assert uploads["c1"] == uploads["c2"] == CONFIG.rounds  # one upload a round each
    assert globals_sent == 2 * CONFIG.rounds  # one global model a round to each client
    assert held["c1"] == held["c2"] == held["agg"]
    with pytest.raises(RecordRejected) as refused:
        agg.handle(TransactionReceived(upload(C1, weights(1.0), CONFIG.rounds + 1), "c1"), now)
    assert refused.value.reason is RejectReason.WRONG_ROUND
