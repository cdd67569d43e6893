"""The model checkpoint (node/host/checkpoint.py) and the nodes that save and resume from it.

What matters is that a restart never loses more than the work since the last save, never loads a
model that is not this experiment's, and never sees a half-written file: saves are checked
against a failing write and against a writer killed at random moments, loads against every way a
file can fail to fit the genesis.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

from node.datadir import CHECKPOINT_FILE
from node.host import checkpoint as checkpoint_module
from node.host.blade import BladeHost
from node.host.checkpoint import GENESIS_KEY, Checkpoint, CheckpointError, genesis_shapes
from node.host.dfl import DflHost
from node.host.genesis import experiment_genesis, initial_learner
from node.learning.aggregation import load_aggregator
from node.learning.behaviours import Behaviour
from node.learning.codec import encode_safetensors, weight_count
from node.ledger import records
from node.ledger.store import ChainStore
from node.service.blade_server import BladeNode
from node.service.chaindir import DataDirectoryError
from node.service.config import NodeConfig, load_node_config
from node.service.server import DflNode
from proto.dfl.v1 import records_pb2 as pb

REPO_ROOT = Path(__file__).resolve().parents[2]


def genesis_of(model: str = "mlp", seed: int = 3, spec: str = "") -> pb.Genesis:
    learner = initial_learner(model, seed)
    return experiment_genesis(protocol="dfl", model=model, seed=seed, spec=spec, learner=learner)


@pytest.fixture(scope="module")
def genesis() -> pb.Genesis:
    return genesis_of()


def random_weights(genesis: pb.Genesis, seed: int) -> np.ndarray:
    count = records.parameter_count(genesis)
    return np.random.default_rng(seed).standard_normal(count).astype(np.float32)


# --- saving and loading --------------------------------------------------------------------------


def test_a_saved_model_loads_back_exactly_with_its_metadata(
    tmp_path: Path, genesis: pb.Genesis
) -> None:
    checkpoint = Checkpoint(tmp_path, genesis)
    assert checkpoint.load() is None and not checkpoint.exists  # a first start: nothing saved
    weights = random_weights(genesis, 1)
    seconds = checkpoint.save(weights, reason="aggregation", height=7)
    assert 0 < seconds < 5

    saved = checkpoint.load()
    assert saved is not None
    np.testing.assert_array_equal(saved.weights, weights)
    assert saved.metadata["reason"] == "aggregation" and saved.metadata["height"] == "7"
    assert saved.metadata[GENESIS_KEY] == genesis.digest.hex()
    assert str(tmp_path / CHECKPOINT_FILE) in saved.summary()
    assert "chain height 7" in saved.summary()
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left


def test_the_checkpoint_is_plain_safetensors_by_genesis_layer(
    tmp_path: Path, genesis: pb.Genesis
) -> None:
    """Any safetensors reader opens it: the tensors are the genesis layers, named and shaped."""
    weights = random_weights(genesis, 2)
    Checkpoint(tmp_path, genesis).save(weights)
    tensors = safetensors.numpy.load_file(tmp_path / CHECKPOINT_FILE)
    shapes = genesis_shapes(genesis)
    assert {name: array.shape for name, array in tensors.items()} == dict(shapes)
    flat = np.concatenate([tensors[name].reshape(-1) for name, _ in shapes])
    np.testing.assert_array_equal(flat, weights)


def test_a_save_replaces_the_previous_one(tmp_path: Path, genesis: pb.Genesis) -> None:
    checkpoint = Checkpoint(tmp_path, genesis)
    checkpoint.save(random_weights(genesis, 1), height=1)
    second = random_weights(genesis, 2)
    checkpoint.save(second, height=2)
    saved = checkpoint.load()
    assert saved is not None and saved.metadata["height"] == "2"
    np.testing.assert_array_equal(saved.weights, second)


# --- atomicity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_save_that_fails_midway_leaves_the_old_checkpoint_whole(
    tmp_path: Path, genesis: pb.Genesis, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The new bytes are written to a temporary file; until the rename, the old file stands."""
    checkpoint = Checkpoint(tmp_path, genesis)
    old = random_weights(genesis, 1)
    checkpoint.save(old, height=1)

    def fail(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(random_weights(genesis, 2), height=2)
    monkeypatch.undo()

    saved = checkpoint.load()
    assert saved is not None and saved.metadata["height"] == "1"
    np.testing.assert_array_equal(saved.weights, old)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # the temporary file is gone


def test_a_temporary_file_left_by_a_crash_is_ignored_then_overwritten(
    tmp_path: Path, genesis: pb.Genesis
) -> None:
    checkpoint = Checkpoint(tmp_path, genesis)
    old = random_weights(genesis, 1)
    checkpoint.save(old)
    stray = tmp_path / (CHECKPOINT_FILE + checkpoint_module.PART_SUFFIX)
    stray.write_bytes(b"half a model")  # a node killed while writing
    saved = checkpoint.load()
    assert saved is not None
    np.testing.assert_array_equal(saved.weights, old)
    checkpoint.save(random_weights(genesis, 2))
    assert not stray.exists()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from node.host.checkpoint import Checkpoint
    from node.ledger import records
    genesis = records.make_genesis(
        protocol="dfl", model_architecture="big", layers=[("w", [1_000_000])],
        hyperparameters={}, seed=1,
    )
    checkpoint = Checkpoint(Path(sys.argv[1]), genesis)
    saves = 0
    while True:
        saves += 1
        checkpoint.save(np.full(1_000_000, saves, dtype=np.float32), saves=saves)
        if saves == 1:
            print("saved", flush=True)
    """
)


def test_a_writer_killed_at_any_moment_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    """SIGKILL at random points of a loop of 4 MB saves: every time, the file loads and holds
    one save's weights throughout (never a mix, never a truncated file). A writer that wrote
    the file in place fails this about one kill in three (measured: 14 of 40), so ten kills
    all but always catch it."""
    genesis = records.make_genesis(
        protocol="dfl",
        model_architecture="big",
        layers=[("w", [1_000_000])],
        hyperparameters={},
        seed=1,
    )
    checkpoint = Checkpoint(tmp_path, genesis)
    rng = np.random.default_rng(4)
    last = 0
    for _ in range(10):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)],
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        assert writer.stdout is not None and writer.stdout.readline() == b"saved\n"
        time.sleep(float(rng.uniform(0.0, 0.2)))
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        saved = checkpoint.load()
        assert saved is not None
        saves = int(saved.metadata["saves"])
        assert saves >= 1
        assert np.all(saved.weights == saves), "a checkpoint mixing two saves"
        last = saves
    assert last >= 1


# --- refusals ------------------------------------------------------------------------------------


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(
    tmp_path: Path, genesis: pb.Genesis
) -> None:
    lenet = genesis_of("lenet")
    Checkpoint(tmp_path, lenet).save(random_weights(lenet, 1))
    with pytest.raises(CheckpointError) as refused:
        Checkpoint(tmp_path, genesis).load()
    message = str(refused.value)
    assert str(tmp_path / CHECKPOINT_FILE) in message
    assert "does not fit this experiment's model" in message
    assert "delete it" in message


def test_a_checkpoint_with_a_layer_of_another_shape_is_refused(
    tmp_path: Path, genesis: pb.Genesis
) -> None:
    shapes = genesis_shapes(genesis)
    name, shape = shapes[0]
    wrong = [(name, (shape[0] + 1, *shape[1:])), *shapes[1:]]
    data = encode_safetensors(
        np.zeros(weight_count(wrong), np.float32), wrong, {GENESIS_KEY: genesis.digest.hex()}
    )
    (tmp_path / CHECKPOINT_FILE).write_bytes(data)
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has shape"):
        Checkpoint(tmp_path, genesis).load()


def test_a_checkpoint_of_another_experiment_with_the_same_layers_is_refused(
    tmp_path: Path, genesis: pb.Genesis
) -> None:
    other = genesis_of(spec='{"another": "experiment"}')
    assert genesis_shapes(other) == genesis_shapes(genesis)
    Checkpoint(tmp_path, other).save(random_weights(other, 1))
    with pytest.raises(CheckpointError, match=f"belongs to genesis {other.digest.hex()[:16]}"):
        Checkpoint(tmp_path, genesis).load()


def test_a_checkpoint_naming_no_genesis_is_refused(tmp_path: Path, genesis: pb.Genesis) -> None:
    data = encode_safetensors(random_weights(genesis, 1), genesis_shapes(genesis))
    (tmp_path / CHECKPOINT_FILE).write_bytes(data)
    with pytest.raises(CheckpointError, match="no genesis it names"):
        Checkpoint(tmp_path, genesis).load()


@pytest.mark.parametrize("damage", ["truncated", "non-finite", "garbage"])
def test_a_damaged_checkpoint_is_refused(tmp_path: Path, genesis: pb.Genesis, damage: str) -> None:
    checkpoint = Checkpoint(tmp_path, genesis)
    weights = random_weights(genesis, 1)
    if damage == "non-finite":
        weights[5] = np.nan
    checkpoint.save(weights)
    data = checkpoint.path.read_bytes()
    if damage == "truncated":
        checkpoint.path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        checkpoint.path.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=str(checkpoint.path)):
        checkpoint.load()


# --- the hosts -----------------------------------------------------------------------------------


def test_a_dfl_host_resumes_the_weights_and_the_learning_rate_schedule() -> None:
    host = DflHost(
        model="mlp",
        seed=3,
        index=0,
        aggregator=load_aggregator("fedavg"),
        behaviour=Behaviour(),
        samples=None,  # type: ignore[arg-type]  (no training here)
    )
    weights = random_weights(genesis_of(), 5)
    host.resume(weights, iteration=120)
    assert host.weights() == weights.tobytes()
    assert host.learner.solver.iteration == 120


def test_a_blade_host_resumes_the_global_model() -> None:
    host = BladeHost(
        model="mlp", seed=3, index=0, behaviour=Behaviour(), dataset_size=8, batch_size=4
    )
    weights = random_weights(genesis_of(), 6)
    host.resume(weights)
    assert host.weights() == weights.tobytes()
    np.testing.assert_array_equal(host.learner.weights(), weights)


# --- the nodes -----------------------------------------------------------------------------------

BLADE = {"clients": 2, "rounds": 3, "local_iterations": 1, "difficulty": 1000}


def node_config(directory: Path, protocol: str) -> NodeConfig:
    fields: dict[str, Any] = {"model": "mlp", "seed": 5, "identity": "derived"}
    if protocol == "blade-fl":
        fields |= {"protocol": "blade-fl", "blade": BLADE}
    return load_node_config(None, environ={}, name="ckpt", data_dir=directory, port=1, **fields)


def build(config: NodeConfig) -> DflNode | BladeNode:
    return BladeNode(config) if config.protocol == "blade-fl" else DflNode(config)


def stopped(node: DflNode | BladeNode) -> None:
    """What NodeBase.stop does after the server: the workers (and the final save), the store."""
    node._stop_workers()
    node.store.close()


@pytest.mark.parametrize("protocol", ["dfl", "blade-fl"])
def test_a_restarted_node_resumes_its_model_and_keeps_its_genesis(
    tmp_path: Path, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = node_config(tmp_path, protocol)
    first = build(config)
    initial = first.host.weights()
    genesis = first.genesis.digest
    trained = random_weights(first.genesis, 7)
    first.host.resume(trained)  # as if it had trained and aggregated
    stopped(first)  # a clean stop saves the model
    assert (tmp_path / CHECKPOINT_FILE).exists()

    with caplog.at_level(logging.INFO):
        second = build(config)
    try:
        assert second.genesis.digest == genesis, "the genesis changed across a restart"
        assert second.host.weights() == trained.tobytes() != initial
        lines = [r.getMessage() for r in caplog.records if "resuming from" in r.getMessage()]
        assert len(lines) == 1 and CHECKPOINT_FILE in lines[0], lines
        assert "saved on stop" in lines[0]
    finally:
        stopped(second)


@pytest.mark.parametrize("protocol", ["dfl", "blade-fl"])
def test_a_node_refuses_to_start_on_a_checkpoint_that_does_not_fit(
    tmp_path: Path, protocol: str
) -> None:
    lenet = genesis_of("lenet")
    Checkpoint(tmp_path, lenet).save(random_weights(lenet, 1))
    config = node_config(tmp_path, protocol)
    with pytest.raises(DataDirectoryError, match="delete it to restart this node"):
        build(config)
    with ChainStore.open(tmp_path) as store:  # the refused node closed its chain
        assert store.height == 0


@pytest.mark.parametrize("protocol", ["dfl", "blade-fl"])
def test_a_node_saves_after_an_aggregation_on_the_ml_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    node = build(node_config(tmp_path, protocol))
    threads: list[str] = []
    save = Checkpoint.save

    def recording(self: Checkpoint, weights: np.ndarray, **metadata: object) -> float:
        threads.append(threading.current_thread().name)
        return save(self, weights, **metadata)

    monkeypatch.setattr(Checkpoint, "save", recording)
    loop = asyncio.new_event_loop()
    node._loop = loop  # where the ML thread reports back
    try:
        if isinstance(node, BladeNode):
            node.round_aggregated(1, (), ())
            reason = "round 1"
        else:
            node.aggregated((), {})
            reason = "aggregation"
        node._ml.shutdown(wait=True)
        saved = node.checkpoint.load()
        assert saved is not None and saved.metadata["reason"] == reason
        assert saved.weights.tobytes() == node.host.weights()
        assert threads == ["ml_0"]
        assert node.checkpoint_seconds is not None and node.checkpoint_seconds < 5
    finally:
        node.store.close()
        loop.close()
