"""A node killed with SIGKILL again and again resumes its model, its chain and its work.

Two real node processes (the smoke experiment cut to two peered nodes, small buffers so they
aggregate every couple of seconds) are driven as `dfl run --runtime local` drives them. One of
them is killed five times, at different moments of its aggregate-and-save cycle, and restarted
on its data directory each time. After each restart:

- its model is the checkpoint it left on disk (read with the safetensors library, not with the
  node's own decoder), not the experiment's initial model;
- its chain verifies, and its finalized height is at least what it was at the kill;
- it makes a new transaction within 30 s of being started again;
- its log says once that it resumed from the checkpoint.

The model is compared as soon as the node answers, before it can have trained or aggregated
(the status read right after says so: no transaction made, fewer models received than one
aggregation needs). Whether that window was caught depends on scheduling, so each restart checks
it when it can and the test requires it of most restarts.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import safetensors.numpy

from node.datadir import CHECKPOINT_FILE
from node.host.checkpoint import genesis_shapes
from node.ledger.hashing import model_digest
from node.ledger.store import ChainStore
from orchestrator.runtimes.local import LocalNode
from orchestrator.spec import load_spec, with_overrides
from proto.dfl.v1 import node_pb2, node_pb2_grpc
from proto.dfl.v1 import records_pb2 as pb
from tests.integration.live import (
    READY_TIMEOUT,
    LiveNetwork,
    alive,
    channel,
    height,
    running,
    status,
    status_or_none,
    wait_for,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_SPEC = REPO_ROOT / "experiments" / "smoke-dfl.yaml"
FEDAVG_BUFFER = 2
OVERRIDES = {
    "nodes.count": 2,
    "duration": "10m",  # an upper bound only: the test ends the run when it is done
    "dfl.transactions_per_block": 4,  # a block every few seconds
    "dfl.fedavg_buffer": FEDAVG_BUFFER,  # an aggregation (and a save) every two peer models
    "evaluation.interval": "20s",
    "evaluation.test_samples": 200,
}
VICTIM = 1
# Seconds after the victim's latest save at which it is killed: right after one, between two,
# around the next one (a save every ~2 s), so some kills land while the next save is written.
KILL_DELAYS = (0.0, 0.9, 1.7, 0.3, 2.6)
NEW_TRANSACTION_WITHIN = 30.0
MIN_MODELS_COMPARED = 3


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNetwork]:
    spec = with_overrides(load_spec(SMOKE_SPEC), OVERRIDES)
    with running(spec, tmp_path_factory.mktemp("crash-safety")) as live:
        yield live


def checkpoint_weights(path: Path, genesis: pb.Genesis) -> bytes:
    """The checkpoint as the f32le bytes GetModel answers with, read by safetensors itself."""
    tensors = safetensors.numpy.load(path.read_bytes())
    assert set(tensors) == {name for name, _ in genesis_shapes(genesis)}
    flat = [tensors[name].astype("<f4").reshape(-1) for name, _ in genesis_shapes(genesis)]
    return np.concatenate(flat).tobytes()


def saved_at(path: Path) -> int:
    """When the checkpoint was last replaced (0 when there is none)."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def first_model(network: LiveNetwork, node: LocalNode, timeout: float) -> bytes:
    """The node's model at the first moment it answers: polled every 10 ms, each attempt on a
    fresh channel of its own (gRPC shares connections between channels, and one that failed to
    connect backs off for a second or more)."""
    deadline = time.monotonic() + timeout
    while True:
        network.check()
        try:
            with socket.create_connection(("127.0.0.1", node.port), timeout=0.2):
                pass
            with channel(node, own_connection=True) as ch:
                metadata = network.run.control.metadata("GetModel", bytes.fromhex(node.address))
                request = node_pb2.ModelRequest()
                reply = node_pb2_grpc.NodeStub(ch).GetModel(request, timeout=5, metadata=metadata)
                return reply.weights
        except (OSError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.name} did not answer within {timeout:.0f} s") from None
            time.sleep(0.01)


def verify_by_command_line(directory: Path) -> int:
    """`dfl chain verify DIR`: the height it verified."""
    verify = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "chain", "verify", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("OK: "), verify.stdout
    return int(verify.stdout.split()[1])


def test_a_node_killed_five_times_resumes_its_model_chain_and_work(network: LiveNetwork) -> None:
    run = network.run
    victim = network.nodes[VICTIM]
    other = network.nodes[1 - VICTIM]
    checkpoint = victim.data_dir / CHECKPOINT_FILE
    log_path = victim.data_dir / "node.log"
    with ChainStore.open(victim.data_dir, verify=False) as store:  # WAL: reading beside the node
        genesis = store.genesis
    initial = genesis.body.initial_model_digest
    wait_for(lambda: saved_at(checkpoint), 90, f"{victim.name}'s first checkpoint", network)

    compared = 0
    figures: list[str] = []  # printed at the end (pytest -s): what each restart showed
    for kill, delay in enumerate(KILL_DELAYS, start=1):
        before = saved_at(checkpoint)
        wait_for(
            lambda before=before: saved_at(checkpoint) != before,
            60,
            f"{victim.name} to save its model again (kill {kill})",
            network,
        )
        time.sleep(delay)
        height_seen = height(victim)
        run.stop(victim, kill=True)
        assert victim.process is not None and victim.process.returncode < 0  # SIGKILL

        # What the kill left: a whole checkpoint that is no longer the initial model, a chain
        # that verifies and holds at least what the node reported.
        mid_save = checkpoint.with_name(CHECKPOINT_FILE + ".part").exists()
        persisted = checkpoint_weights(checkpoint, genesis)
        assert model_digest(persisted) != initial, "the checkpoint is the initial model"
        with ChainStore.open(victim.data_dir) as store:  # verifies every block
            height_at_kill = store.height
        assert height_at_kill >= height_seen
        if kill in (1, len(KILL_DELAYS)):
            assert verify_by_command_line(victim.data_dir) == height_at_kill

        started = time.monotonic()
        run.start(victim)
        model = first_model(network, victim, READY_TIMEOUT)
        answered = time.monotonic() - started
        back = status(victim)
        untouched = back.transactions_sent == 0 and back.transactions_received < FEDAVG_BUFFER
        if untouched:  # it can neither have trained nor aggregated before answering
            assert model == persisted, f"kill {kill}: the restarted model is not the checkpoint"
            compared += 1
        assert model_digest(model) != initial, f"kill {kill}: restarted from the initial model"
        assert back.address.hex() == victim.address, "the restarted node has another key"
        assert back.chain_height >= height_at_kill, "the finalized height went down"

        wait_for(
            lambda: (s := status_or_none(victim)) is not None and s.transactions_sent > 0,
            max(0.0, NEW_TRANSACTION_WITHIN - (time.monotonic() - started)),
            f"{victim.name} to make a transaction within {NEW_TRANSACTION_WITHIN:.0f} s of "
            f"restart {kill}",
            network,
        )
        figures.append(
            f"kill {kill}: height {height_at_kill} at the kill, {back.chain_height} on restart; "
            f"answered {answered:.1f} s and made a transaction {time.monotonic() - started:.1f} s "
            f"after being started; model {'compared' if untouched else 'not comparable'}"
            f"{'; killed while saving' if mid_save else ''}"
        )
        resumed = [line for line in log_path.read_text().splitlines() if "resuming from" in line]
        assert len(resumed) == kill, resumed
        assert CHECKPOINT_FILE in resumed[-1]
        assert alive(other), "the peer died with the killed node"

    print("\n".join(figures))
    assert compared >= MIN_MODELS_COMPARED, (
        f"the model was compared before any training on {compared} of {len(KILL_DELAYS)} "
        "restarts only"
    )
    final = height(victim)
    wait_for(
        lambda: height(victim) > final,
        90,
        f"{victim.name} to finalize a block after its last restart",
        network,
    )
    assert alive(victim) and alive(other)
