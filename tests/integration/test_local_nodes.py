"""Real node processes on 127.0.0.1 (the local runtime), read like a functional test.

One small network (three nodes, full mesh, the smoke experiment with small blocks) is started
once for the module and driven as `dfl run --runtime local` drives it: samples injected at the
spec's rate, every node's model measured on the test set. The tests then look at it from outside,
in order: its metrics endpoint, bad input over its real gRPC port, a node killed with SIGKILL and
restarted on its data directory, and finally the run directory and report it leaves behind.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from node.ledger import records
from node.ledger.errors import RejectReason
from node.ledger.keys import NodeKey
from node.ledger.store import ChainStore
from orchestrator.genesis import spec_genesis
from orchestrator.report import SUMMARY_FILE, render_report
from orchestrator.runtimes.local import free_ports
from orchestrator.spec import with_overrides
from proto.dfl.v1 import node_pb2, node_pb2_grpc
from proto.dfl.v1 import records_pb2 as pb
from tests.integration.live import (
    READY_TIMEOUT,
    LiveNetwork,
    alive,
    channel,
    height,
    live_spec,
    rejected,
    running,
    scrape,
    status,
    status_or_none,
    submit,
    total,
    wait_for,
)
from tests.support import assert_audit_passes

pytestmark = pytest.mark.integration

TARGET = 0  # the node that gets the bad input
VICTIM = 2  # the node that is killed and restarted
MIN_ACCURACY = 0.3  # ten classes: chance is 0.1


# --- the network ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNetwork]:
    spec = live_spec()
    with running(spec, tmp_path_factory.mktemp("local-run")) as live:
        yield live


# --- 1. the metrics endpoint ---------------------------------------------------------------------


def test_the_model_is_sent_again_only_once_it_changed(network: LiveNetwork) -> None:
    node = network.nodes[TARGET]
    address = bytes.fromhex(node.address)
    with channel(node) as ch:
        stub = node_pb2_grpc.NodeStub(ch)

        def fetch(known: bytes) -> node_pb2.ModelWeights:
            signed = network.run.control.metadata("GetModel", address)
            return stub.GetModel(
                node_pb2.ModelRequest(known_version=known), timeout=30, metadata=signed
            )

        first = fetch(b"")
        assert first.weights and first.version and not first.unchanged
        again = fetch(first.version)
        if again.version == first.version:  # no training or merge in between
            assert again.unchanged and not again.weights
        # Samples keep arriving: the next training gives a new version, and the weights with it.
        wait_for(lambda: fetch(first.version).version != first.version, 60, "a new model", network)
        changed = fetch(first.version)
        assert not changed.unchanged and len(changed.weights) == len(first.weights)


MOVING_COUNTERS = {
    "samples injected": ("dfl_samples_injected_total", {}),
    "transactions generated": ("dfl_transactions_generated_total", {}),
    "transactions received": ("dfl_transactions_received_total", {}),
    "receipts written": ("dfl_receipts_total", {"direction": "written"}),
    "confirmations sent": ("dfl_confirmations_total", {"direction": "sent"}),
    "blocks": ("dfl_blocks_total", {}),
    "ML CPU": ("dfl_cpu_seconds_total", {"category": "ml"}),
    "blockchain CPU": ("dfl_cpu_seconds_total", {"category": "blockchain"}),
    "process CPU": ("dfl_process_cpu_seconds_total", {}),
}


def test_the_container_health_check_speaks_grpc_to_a_real_node(network: LiveNetwork) -> None:
    """node/healthcheck.py hand-rolls one HTTP/2 call; a real gRPC server must accept it."""
    node = network.nodes[0]
    command = [sys.executable, "-m", "node.healthcheck", "--port", str(node.port)]
    answer = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert answer.returncode == 0, answer.stdout + answer.stderr

    closed = free_ports(1)[0]
    command[-1] = str(closed)
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert refused.stdout.startswith(f"unhealthy: cannot reach 127.0.0.1:{closed}")

    metrics = subprocess.run(  # an HTTP/1 server, not gRPC: no GetStatus answer
        [*command[:-1], str(node.metrics_port), "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert metrics.returncode == 1 and metrics.stdout.startswith("unhealthy:"), metrics.stdout


def test_metrics_endpoint_parses_and_its_counters_move(network: LiveNetwork) -> None:
    first = {node.name: scrape(node) for node in network.nodes}
    for node in network.nodes:
        samples = first[node.name]
        names = {name for name, _ in samples}
        assert {"dfl_chain_height", "dfl_peers", "dfl_info", "dfl_accuracy"} <= names
        assert total(samples, "dfl_peers") == len(network.nodes) - 1
        assert set(rejected(samples)) == {reason.label for reason in RejectReason}
        assert total(samples, "dfl_info", address=node.address) == 1

    def stuck() -> dict[str, list[str]]:
        """The counters of each node that have not moved since the first scrape."""
        result = {}
        for node in network.nodes:
            now, then = scrape(node), first[node.name]
            still = [
                what
                for what, (name, labels) in MOVING_COUNTERS.items()
                if total(now, name, **labels) <= total(then, name, **labels)
            ]
            if still:
                result[node.name] = still
        return result

    deadline = time.monotonic() + 30
    while (still := stuck()) and time.monotonic() < deadline:
        network.check()
        time.sleep(0.5)
    assert not still, f"counters that did not move in 30 s: {still}"


# --- 2. bad input over the real gRPC port --------------------------------------------------------


def test_bad_input_is_refused_counted_and_survived(network: LiveNetwork) -> None:
    node = network.nodes[TARGET]
    with ChainStore.open(node.data_dir, verify=False) as store:  # WAL: reading beside the node
        genesis = store.genesis
    signed = network.run.control.metadata("GetModel", bytes.fromhex(node.address))
    with channel(node) as ch:
        stub = node_pb2_grpc.NodeStub(ch)
        weights = stub.GetModel(node_pb2.ModelRequest(), timeout=30, metadata=signed).weights
    assert len(weights) == records.parameter_count(genesis) * 4

    stranger = NodeKey.generate()
    now_ms = int(time.time() * 1000)

    def transaction(created_ms: int, lifetime_ms: int = 60_000, **fields: Any) -> pb.Transaction:
        return records.make_transaction(
            stranger,
            genesis_digest=fields.get("genesis_digest", genesis.digest),
            weights=weights,  # the node's own model: accepting it does the node no harm
            now_ms=created_ms,
            ttl=1,
            lifetime_ms=lifetime_ms,
        )

    valid = transaction(now_ms).SerializeToString()
    forged = transaction(now_ms - 1)  # another digest: the node never saw this one
    signature = bytearray(forged.signature)
    signature[5] ^= 0x40
    forged.signature = bytes(signature)
    expired = transaction(now_ms - 3_600_000, lifetime_ms=60_000)
    another_genesis = hashlib.sha256(b"another experiment").digest()[: len(genesis.digest)]
    wrong_genesis = transaction(now_ms - 2, genesis_digest=another_genesis)
    # the same model and seed, another experiment: ttl 2 instead of 1
    other = with_overrides(network.run.spec, {"dfl.ttl": 2})
    other_genesis = spec_genesis(other)
    assert other_genesis.body.layers == genesis.body.layers
    other_experiment = transaction(now_ms - 3, genesis_digest=other_genesis.digest)
    garbage = random.Random(20240501).randbytes(4096)
    too_large = bytes(16 * 1024 * 1024 + 1)  # records may be 16 MB

    cases = [
        ("forged signature", "SubmitTransaction", forged.SerializeToString(), "bad_signature"),
        ("replayed", "SubmitTransaction", valid, "duplicate"),
        ("expired", "SubmitTransaction", expired.SerializeToString(), "expired"),
        (
            "wrong genesis",
            "SubmitTransaction",
            wrong_genesis.SerializeToString(),
            "genesis_mismatch",
        ),
        (
            "another experiment's genesis",
            "SubmitTransaction",
            other_experiment.SerializeToString(),
            "genesis_mismatch",
        ),
        ("16 MB and a byte", "SubmitTransaction", too_large, "message_too_large"),
        ("random bytes", "SubmitTransaction", garbage, "malformed"),
        ("random bytes as a draft block", "SubmitDraftBlock", garbage, "malformed"),
        ("random bytes as confirmations", "SubmitConfirmations", garbage, "malformed"),
    ]
    expected: dict[str, int] = {}
    for *_, label in cases:
        expected[label] = expected.get(label, 0) + 1
    status_of = {reason.label: grpc.StatusCode[reason.grpc_status] for reason in RejectReason}

    height_before = height(node)
    trained_before = status(node).transactions_sent
    before = rejected(scrape(node))
    with channel(node) as ch:
        assert submit(ch, "SubmitTransaction", valid) is None, "a valid transaction was refused"
    # One connection each: five of these from one connection get it banned, which is the
    # flooding test's subject, not this one's.
    for what, method, payload, label in cases:
        with channel(node, own_connection=True) as ch:
            error = submit(ch, method, payload)
        assert error is not None, f"{what}: accepted"
        assert error.code() == status_of[label], f"{what}: {error.code()} {error.details()}"
        assert error.details().startswith(f"{label}: "), f"{what}: {error.details()!r}"
    with channel(node, own_connection=True) as ch:  # beyond any record: gRPC refuses it itself
        error = submit(ch, "SubmitTransaction", bytes(100 * 1024 * 1024))
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    after = rejected(scrape(node))
    moved = {
        label: after[label] - before[label] for label in after if after[label] != before[label]
    }
    assert moved == expected

    assert alive(node)
    wait_for(
        lambda: height(node) > height_before and status(node).transactions_sent > trained_before,
        60,
        f"{node.name} to train and finalize a block after the bad input",
        network,
    )
    assert all(alive(n) for n in network.nodes)


# --- 3. a crash and a restart --------------------------------------------------------------------


def test_killed_node_restarts_on_its_data_directory(network: LiveNetwork) -> None:
    run = network.run
    victim = network.nodes[VICTIM]
    others = [n for n in network.nodes if n is not victim]
    wait_for(lambda: height(victim) >= 2, 60, f"{victim.name} to finalize two blocks", network)
    address = status(victim).address.hex()
    assert address == victim.address
    heights_before = {n.name: height(n) for n in others}

    killed_at = time.time()
    run.stop(victim, kill=True)
    assert victim.process is not None and victim.process.returncode == -signal.SIGKILL
    assert all(alive(n) for n in others), "a neighbour died with the killed node"
    assert all(status(n).chain_height >= heights_before[n.name] for n in others)

    # What SIGKILL left on disk verifies, by the store and by the command line.
    with ChainStore.open(victim.data_dir) as store:
        height_at_kill = store.height
    verify = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "chain", "verify", str(victim.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith(f"OK: {height_at_kill} blocks")

    run.start(victim)  # same config: same ports, same data directory
    back = wait_for(
        lambda: status_or_none(victim), READY_TIMEOUT, f"{victim.name} to restart", network
    )
    network.crash = (killed_at, time.time())
    assert back.address.hex() == address, "the restarted node has another key"
    assert back.chain_height == height_at_kill

    wait_for(
        lambda: height(victim) >= height_at_kill + 2,
        90,
        f"{victim.name} to finalize new blocks after its restart",
        network,
    )
    assert all(alive(n) for n in network.nodes)
    assert all(height(n) > heights_before[n.name] for n in others), "a neighbour stopped"
    with ChainStore.open(victim.data_dir) as store:  # verifies every block
        heights = [h for h, _, _ in store.blocks()]
        assert heights == list(range(1, store.height + 1))
        after_crash = store.block(height_at_kill + 1)
        assert after_crash.body.previous_digest == store.block(height_at_kill).final_digest


# --- the run directory and its report ------------------------------------------------------------


@pytest.fixture(scope="module")
def summary(network: LiveNetwork) -> dict[str, Any]:
    """Ends the run (after enough of it for a final accuracy) and renders its report."""
    wait_for(lambda: network.elapsed >= 40, 60, "the run to last 40 s", network)
    wait_for(
        lambda: all(alive(n) and height(n) >= 2 for n in network.nodes),
        60,
        "every node to finalize two blocks",
        network,
    )
    network.finish()
    network.check()
    assert_audit_passes(network.out)
    render_report(network.out)
    return json.loads((network.out / SUMMARY_FILE).read_text())


def test_run_directory_shows_the_mechanics(network: LiveNetwork, summary: dict[str, Any]) -> None:
    run_info = json.loads((network.out / "run.json").read_text())
    addresses = {node["name"]: node["address"] for node in run_info["nodes"]}
    assert len(set(addresses.values())) == len(network.nodes)
    # Blocks finalized while the killed node was down lack its confirmations, by design.
    killed_ms = network.crash[0] * 1000 if network.crash else float("inf")

    for node in run_info["nodes"]:
        name = node["name"]
        figures = summary["nodes"][name]
        assert figures["blocks"] >= 2, name
        assert figures["chain_verifies"] is True, (name, figures["chain_problem"])
        assert figures["final_test_accuracy"] > MIN_ACCURACY, (name, figures)

        neighbours = {addresses[peer] for peer in node["peers"]}
        assert neighbours == set(addresses.values()) - {addresses[name]}  # full mesh
        fully_confirmed = 0
        with ChainStore.open(network.out / "nodes" / name) as store:
            for height_ in range(1, store.height + 1):
                block = store.block(height_)
                creators = {c.body.creator.address.hex() for c in block.finalization.confirmations}
                assert creators <= neighbours, (name, height_)
                if block.finalization.finalized_time_ms < killed_ms:
                    assert creators == neighbours, f"{name} block {height_}: {creators}"
                    fully_confirmed += 1
        assert fully_confirmed >= 2, name


def test_every_cpu_second_after_start_up_is_charged_to_a_task(
    network: LiveNetwork, summary: dict[str, Any]
) -> None:
    for node in network.nodes:
        profile = json.loads((node.data_dir / "profile.json").read_text())
        seconds = {(e["task"], e["category"]): e["seconds"] for e in profile["entries"]}
        assert profile["startup_cpu_seconds"] > 0.5, node.name  # torch's import alone is more
        assert profile["attributed_share"] >= 0.85, (node.name, profile["remainder_seconds"])
        # Network CPU goes to the task it serves: a model broadcast, a receipt sent back, and the
        # orchestrator's calls and the idle loop to `observe`.
        for task in ("generate_transaction", "receive_transaction", "observe"):
            assert seconds.get((task, "network"), 0.0) > 0, (node.name, task, seconds)
        assert seconds.get(("other", "network"), 0.0) < seconds[("observe", "network")]
        moved = profile["bytes_by_task"]
        assert moved["generate_transaction"] > 1_000_000 and moved["observe"] > 1_000_000
