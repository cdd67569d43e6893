"""The ML hosts every runtime shares (node/host/): samples, seeds, the genesis, lazy copying.

The lazy node test runs the real simulator; the others drive the hosts and sample sources
directly, with real MNIST and real models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from node import seeds
from node.host.blade import BladeHost
from node.host.dfl import DflHost
from node.host.genesis import initial_learner
from node.host.samples import InjectedSamples, SampleLog, StreamedSamples
from node.learning.aggregation import CheckedAggregator
from node.learning.behaviours import Behaviour
from node.ledger import records
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.hashing import digest_message
from node.ledger.keys import KeyFileError, NodeKey
from node.ledger.store import ChainStore
from node.protocol.dfl import DflEngine
from node.protocol.events import BufferedModel, TransactionReceived
from orchestrator.commands.chain import run_spec
from orchestrator.datasets import Dataset
from orchestrator.genesis import spec_genesis
from orchestrator.partition import SampleStream
from orchestrator.sim.dfl import DflSimulation
from orchestrator.spec import canonical_spec_json, parse_spec, parse_yaml, with_overrides
from proto.dfl.v1 import records_pb2 as pb

LAZY_VARIANCE = 1e-14  # a noise std of 1e-7: far below how much two nodes differ
SPEC = {
    "name": "hosts",
    "protocol": "dfl",
    "seed": 5,
    "duration": 40,
    "model": "mlp",
    "dataset": "mnist",
    "nodes": {
        "count": 4,
        "distribution": "iid",
        "behaviours": {3: {"name": "lazy", "options": {"variance": LAZY_VARIANCE}}},
    },
    "topology": {"kind": "ring"},
    "dfl": {"fedavg_buffer": 2, "aggregator": "fedavg"},
    "sim": {"training_interval": [2, 3], "accuracy_interval": 10},
}


def test_the_simulators_test_draw_is_shared_within_an_instant_and_fresh_after(
    mnist: Dataset,
) -> None:
    weights = np.full(10, 0.1)
    clock = [1.0]
    stream = SampleStream(
        mnist.test_images, mnist.test_labels, weights, seeds.stream(1, seeds.Purpose.TEST_STREAM, 0)
    )
    train = SampleStream(
        mnist.train_images,
        mnist.train_labels,
        weights,
        seeds.stream(1, seeds.Purpose.TRAIN_STREAM, 0),
    )
    samples = StreamedSamples(train, stream, lambda: clock[0])

    first, again = samples.test_sample(100), samples.test_sample(100)
    clock[0] = 2.0
    later = samples.test_sample(100)

    assert first[0] is again[0]
    assert not np.array_equal(first[1], later[1])


def test_the_first_samples_digest_does_not_depend_on_how_they_were_batched(
    mnist: Dataset,
) -> None:
    images, labels = mnist.train_images[:600], mnist.train_labels[:600]
    whole, pieces, other = SampleLog(512), SampleLog(512), SampleLog(512)
    whole.record(images, labels)
    for start in range(0, 600, 64):
        pieces.record(images[start : start + 64], labels[start : start + 64])
    other.record(images[1:], labels[1:])

    assert whole.digest is not None and whole.digest == pieces.digest != other.digest
    short = SampleLog(512)
    short.record(images[:100], labels[:100])
    assert short.digest is None


def test_injected_samples_train_in_arrival_order_and_refuse_an_empty_memory(
    mnist: Dataset,
) -> None:
    samples = InjectedSamples(np.random.default_rng(0), memory=256)
    with pytest.raises(RuntimeError, match="no samples"):
        samples.test_sample(10)
    samples.collect(mnist.train_images[:40], mnist.train_labels[:40])
    samples.collect(mnist.train_images[40:100], mnist.train_labels[40:100])

    images, labels = samples.training_batch(64)

    assert np.array_equal(labels, mnist.train_labels[:64])
    assert np.array_equal(images, mnist.train_images[:64])
    with pytest.raises(RuntimeError, match="64 samples, 36 collected"):
        samples.training_batch(64)


def test_streams_are_named_and_independent() -> None:
    a = seeds.stream(3, seeds.Purpose.BEHAVIOUR, 0).random(4)
    assert np.array_equal(a, seeds.stream(3, seeds.Purpose.BEHAVIOUR, 0).random(4))
    assert not np.array_equal(a, seeds.stream(3, seeds.Purpose.BEHAVIOUR, 1).random(4))
    assert not np.array_equal(a, seeds.stream(3, seeds.Purpose.LOCAL_TEST, 0).random(4))
    assert not np.array_equal(a, seeds.stream(4, seeds.Purpose.BEHAVIOUR, 0).random(4))
    assert seeds.identity_seed(3, 0) != seeds.identity_seed(3, 1)
    with pytest.raises(ValueError, match=r"0\.\.4294967295"):
        seeds.stream(-1, seeds.Purpose.BEHAVIOUR, 0)
    with pytest.raises(ValueError, match=r"0\.\.4294967295"):
        seeds.stream(2**32 + 5, seeds.Purpose.TRAIN_STREAM, 0)  # would be (5, 2, 0, 1)'s words
    with pytest.raises(ValueError, match="TOPOLOGY streams take 0"):
        seeds.stream(7, seeds.Purpose.TOPOLOGY, 0)  # would be stream(7, TOPOLOGY) again


def test_nodes_of_another_experiment_are_refused_with_genesis_mismatch() -> None:
    spec = parse_spec(SPEC)
    other = with_overrides(spec, {"dfl.ttl": 2})  # same model, seed and nodes; another ttl

    ours, theirs = spec_genesis(spec), spec_genesis(other)
    assert ours.body.layers == theirs.body.layers and ours.digest != theirs.digest
    receiver = DflEngine(NodeKey.from_seed(b"receiver"), ours, spec.dfl_config(0))
    weights = initial_learner("mlp", spec.seed).weights().astype("<f4").tobytes()
    foreign = records.make_transaction(
        NodeKey.from_seed(b"stranger"),
        genesis_digest=theirs.digest,
        weights=weights,
        now_ms=1_000,
        ttl=1,
        lifetime_ms=60_000,
    )

    with pytest.raises(RecordRejected) as refused:
        receiver.handle(TransactionReceived(foreign.SerializeToString(), "peer"), 1.0)
    assert refused.value.reason is RejectReason.GENESIS_MISMATCH


def test_a_lazy_dfl_node_copies_a_peers_model_in_the_simulator(
    tmp_path: Path, mnist: Dataset
) -> None:
    simulation = DflSimulation(parse_spec(SPEC), mnist, tmp_path, progress=False)
    lazy = simulation.hosts[3]
    sent: list[tuple[np.ndarray, list[np.ndarray], np.ndarray]] = []
    train = lazy.train

    def recording_train(batch_size: int) -> bytes:
        peers = list(lazy.peer_models)
        model = train(batch_size)
        sent.append((np.frombuffer(model, "<f4"), peers, lazy.learner.weights()))
        return model

    lazy.train = recording_train  # type: ignore[method-assign]
    simulation.run()

    copies = [(out, peers, own) for out, peers, own in sent if peers]
    assert len(copies) >= 5, "the lazy node had peer models to copy from"
    for out, peers, own in copies:
        nearest = min(float(np.std(out - peer)) for peer in peers)
        assert nearest == pytest.approx(np.sqrt(LAZY_VARIANCE), rel=0.05)
        assert float(np.std(out - own)) > 10 * nearest  # not its own model plus noise


class _Recording:
    """Keeps the self-accuracy it is handed; averages nothing."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def update_model(self, current, self_accuracy, received, reputation):  # type: ignore[no-untyped-def]
        self.seen.append(self_accuracy)
        return current


class _RecordingThatIgnoresIt(_Recording):
    reads_self_accuracy = False


@pytest.mark.parametrize("plugin", [_Recording, _RecordingThatIgnoresIt])
def test_self_accuracy_is_measured_unless_the_rule_says_it_never_reads_it(
    mnist: Dataset, plugin: type[_Recording]
) -> None:
    samples = InjectedSamples(np.random.default_rng(0))
    samples.collect(mnist.train_images[:256], mnist.train_labels[:256])
    rule = plugin()
    host = DflHost(
        model="mlp",
        seed=1,
        index=0,
        aggregator=CheckedAggregator("recording", rule),
        behaviour=Behaviour(),
        samples=samples,
        test_batch=50,
    )
    peer = host.weights()
    host.aggregate([BufferedModel(b"tx", b"\x01" * 32, 0.5, peer)])

    (seen,) = rule.seen
    if plugin is _RecordingThatIgnoresIt:
        assert np.isnan(seen)
    else:
        assert 0.0 <= seen <= 1.0 and abs(seen * 50 - round(seen * 50)) < 1e-6


def test_a_data_directory_with_another_nodes_derived_key_is_refused(tmp_path: Path) -> None:
    mine, theirs = seeds.identity_seed(7, 0), seeds.identity_seed(7, 1)
    first = NodeKey.load_or_create(tmp_path, mine)

    assert first.address == NodeKey.from_seed(mine).address
    assert NodeKey.load_or_create(tmp_path, mine).address == first.address  # a restart
    with pytest.raises(KeyFileError, match="not this node's derived key"):
        NodeKey.load_or_create(tmp_path, theirs)


def test_dfl_chain_spec_prints_the_spec_and_refuses_a_chain_without_a_true_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = parse_spec(SPEC)
    owner = NodeKey.from_seed(b"owner").address
    ChainStore.create(tmp_path / "good", spec_genesis(spec), owner).close()
    assert run_spec(argparse.Namespace(directory=tmp_path / "good")) == 0
    assert parse_yaml(capsys.readouterr().out) == spec

    bare = records.make_genesis(
        protocol="dfl", model_architecture="mlp", layers=(), hyperparameters={}, seed=5
    )
    ChainStore.create(tmp_path / "bare", bare, owner).close()
    assert run_spec(argparse.Namespace(directory=tmp_path / "bare")) == 2
    assert "records no experiment spec" in capsys.readouterr().err

    body = pb.GenesisBody()
    body.CopyFrom(spec_genesis(spec).body)
    body.spec = canonical_spec_json(with_overrides(spec, {"dfl.ttl": 3}))  # digest left as it was
    forged = pb.Genesis(body=body, digest=digest_message(body))
    ChainStore.create(tmp_path / "forged", forged, owner).close()
    assert run_spec(argparse.Namespace(directory=tmp_path / "forged")) == 1
    assert "does not match its spec digest" in capsys.readouterr().out


def test_a_blade_fl_client_keeps_its_first_samples_and_starts_each_round_afresh(
    mnist: Dataset,
) -> None:
    host = BladeHost(
        model="mlp", seed=2, index=0, behaviour=Behaviour(), dataset_size=64, batch_size=32
    )
    with pytest.raises(RuntimeError, match="0 of 64 local samples"):
        host.train_local(1, 1)
    host.collect(mnist.train_images[:100], mnist.train_labels[:100])
    assert host.sample_log.count == 64  # the local dataset; the other 36 are its test shard

    start = host.global_weights.copy()
    first = host.train_local(1, 2)
    assert host.learner.solver.iteration == 4  # 2 epochs of 2 batches, from a fresh solver
    second = host.train_local(2, 2)
    assert host.learner.solver.iteration == 4  # not 8: every round builds a fresh optimizer
    assert first != second  # other shuffles, same start
    assert np.array_equal(host.global_weights, start)  # training never moves the global model
