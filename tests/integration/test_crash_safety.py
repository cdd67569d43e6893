"""A node killed with SIGKILL again and again resumes its model, its chain and its work.

Two real node processes (the smoke experiment cut to two peered nodes, small buffers so they
aggregate every couple of seconds) are driven as `dfl run --runtime local` drives them. One of
them is killed ten times and restarted on its data directory each time. Five kills are timed
from its aggregate-and-save cycle (right after a save, between two, around the next one), so
some land while the next save is written. The other five land inside a block append: the
victim runs with the node's crash test hook (`NodeConfig.hold_append`), and the test arms it by
deleting its marker file; the next append writes the marker (with the height it is appending)
inside its SQLite transaction and waits there, and the test kills it then.

After each kill, before the restart:

- the checkpoint on disk is whole and is not the experiment's initial model;
- the chain verifies (opening the store re-verifies every block) and holds at least the height
  the node reported; after a kill inside an append it holds exactly the height before that
  append (the half-written block is gone), and `dfl chain verify` agrees;
- the signed draft the node had sent and not finalized, if any, is still in the store (after a
  kill inside an append there always is one: the draft of the block being appended).

After each restart:

- its model is the checkpoint it left on disk (read with the safetensors library, not with the
  node's own decoder), not the experiment's initial model;
- its finalized height is at least what it was at the kill: it never goes down;
- it makes a new transaction within 30 s of being started again;
- it finalizes a block again, and the block at the kept draft's height is that draft (the same
  digest): it never signs a second, different draft at a height it had signed one for;
- its log says once that it resumed from the checkpoint.

The model is compared as soon as the node answers, before it can have trained or aggregated
(the status read right after says so: no transaction made, fewer models received than one
aggregation needs). Whether that window was caught depends on scheduling, so each restart checks
it when it can and the test requires it of some restarts.
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
import yaml

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
from tests.support import assert_audit_passes

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
IN_APPEND = None  # a kill inside a block append, held there by the node's test hook
# The other kills: seconds after the victim's latest save, right after one, between two, around
# the next one (a save every ~2 s), so some land while the next save is written. The first kill
# is a timed one: the hook is in the victim's config from its first restart on.
KILLS: tuple[float | None, ...] = (
    0.0,
    IN_APPEND,
    0.9,
    IN_APPEND,
    1.7,
    IN_APPEND,
    0.3,
    IN_APPEND,
    2.6,
    IN_APPEND,
)
NEW_TRANSACTION_WITHIN = 30.0
FINALIZES_AGAIN_WITHIN = 60.0  # a resumed draft times out 10 s after it was made, at the latest
MIN_MODELS_COMPARED = 3
HOLD_MARKER = "append-held"


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNetwork]:
    spec = with_overrides(load_spec(SMOKE_SPEC), OVERRIDES)
    with running(spec, tmp_path_factory.mktemp("crash-safety")) as live:
        yield live
    assert_audit_passes(live.out)


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


def hold_appends(node: LocalNode) -> Path:
    """Puts the crash test hook into the node's config (read when it next starts) and returns
    its marker, present: appends run as usual until the test deletes it."""
    marker = node.data_dir / HOLD_MARKER
    marker.write_text("armed by deleting this file\n")
    config_path = node.data_dir / "node.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["hold_append"] = str(marker)
    config_path.write_text(yaml.safe_dump(config))
    return marker


def held_height(marker: Path) -> int | None:
    """The height of the append the node is holding in, once it has written the marker."""
    try:
        return int(marker.read_text())
    except (FileNotFoundError, ValueError):
        return None


def height_above(node: LocalNode, at: int) -> int | None:
    """The node's finalized height once it is above `at` (None before, or while it is busy)."""
    answer = status_or_none(node)
    return answer.chain_height if answer is not None and answer.chain_height > at else None


def finalized_block(directory: Path, at: int) -> pb.Block:
    with ChainStore.open(directory, verify=False) as store:  # WAL: reading beside the node
        block = store.block(at)
    assert isinstance(block, pb.Block)
    return block


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


def test_a_node_killed_ten_times_resumes_its_model_chain_and_work(network: LiveNetwork) -> None:
    run = network.run
    victim = network.nodes[VICTIM]
    other = network.nodes[1 - VICTIM]
    checkpoint = victim.data_dir / CHECKPOINT_FILE
    log_path = victim.data_dir / "node.log"
    with ChainStore.open(victim.data_dir, verify=False) as store:  # WAL: reading beside the node
        genesis = store.genesis
    initial = genesis.body.initial_model_digest
    wait_for(lambda: saved_at(checkpoint), 90, f"{victim.name}'s first checkpoint", network)

    marker: Path | None = None
    compared = drafts_resumed = 0
    highest = 0  # the highest finalized height seen so far: it must never go down
    figures: list[str] = []  # printed at the end (pytest -s): what each restart showed
    for kill, delay in enumerate(KILLS, start=1):
        appending: int | None = None
        if delay is IN_APPEND:
            assert marker is not None
            marker.unlink()  # arms the hook: the next append holds inside its transaction
            appending = wait_for(
                lambda marker=marker: held_height(marker),
                90,
                f"{victim.name} to hold inside a block append (kill {kill})",
                network,
            )
            height_seen = appending - 1
        else:
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
        highest = max(highest, height_seen)

        # What the kill left: a whole checkpoint that is no longer the initial model, a chain
        # that verifies and holds at least what the node reported, the draft it had sent.
        mid_save = checkpoint.with_name(CHECKPOINT_FILE + ".part").exists()
        persisted = checkpoint_weights(checkpoint, genesis)
        assert model_digest(persisted) != initial, "the checkpoint is the initial model"
        with ChainStore.open(victim.data_dir) as store:  # verifies every block and the draft
            height_at_kill = store.height
            kept = store.draft()
        assert height_at_kill >= highest, f"kill {kill}: a finalized block was lost"
        if appending is not None:
            assert height_at_kill == appending - 1, "the half-written block is in the store"
            assert kept is not None and kept.body.height == appending, "the draft was lost"
        if appending is not None or kill in (1, len(KILLS)):
            assert verify_by_command_line(victim.data_dir) == height_at_kill
        if kill == 1:
            marker = hold_appends(victim)

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
        transacted = time.monotonic() - started
        highest = wait_for(
            lambda at=height_at_kill: height_above(victim, at),
            FINALIZES_AGAIN_WITHIN,
            f"{victim.name} to finalize a block after restart {kill}",
            network,
        )
        finalized = time.monotonic() - started
        resumed_as = ""
        if kept is not None:  # the block at that height is the draft it had signed and sent
            block = finalized_block(victim.data_dir, kept.body.height)
            assert block.digest == kept.digest and block.body == kept.body, (
                f"kill {kill}: another draft was signed at height {kept.body.height}"
            )
            drafts_resumed += 1
            how = "at the timeout" if block.finalization.timed_out else "on its confirmations"
            resumed_as = f"; draft of block {kept.body.height} kept and finalized {how}"
        where = (
            f"in the append of block {appending}"
            if appending is not None
            else f"{delay:.1f} s after a save"
        )
        figures.append(
            f"kill {kill} ({where}): height {height_at_kill} at the kill, {back.chain_height} "
            f"on restart; answered {answered:.1f} s, made a transaction {transacted:.1f} s and "
            f"finalized block {height_at_kill + 1} {finalized:.1f} s after being started; "
            f"model {'compared' if untouched else 'not comparable'}"
            f"{resumed_as}"
            f"{'; killed while saving' if mid_save else ''}"
        )
        resumed = [line for line in log_path.read_text().splitlines() if "resuming from" in line]
        assert len(resumed) == kill, resumed
        assert CHECKPOINT_FILE in resumed[-1]
        assert alive(other), "the peer died with the killed node"

    print("\n".join(figures))
    in_append = sum(delay is IN_APPEND for delay in KILLS)
    assert drafts_resumed >= in_append, "every kill inside an append left a draft to finalize"
    assert compared >= MIN_MODELS_COMPARED, (
        f"the model was compared before any training on {compared} of {len(KILLS)} restarts only"
    )
    assert alive(victim) and alive(other)
