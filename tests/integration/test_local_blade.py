"""BLADE-FL clients as real processes on 127.0.0.1 (the local runtime), seen from outside.

Four clients run the smoke experiment, shortened (fewer rounds, a quicker block time), while the
tests send forged blocks to one of them over its real gRPC port. Then the run must still have
completed: every client holds the same verified chain of every round's four models, mining shows
as blockchain CPU, and the run report says so.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.ledger import records
from node.ledger.errors import RejectReason
from node.ledger.keys import NodeKey
from node.ledger.pow import MAX_NONCE, difficulty_of, header_hash, header_prefix, mine, target_for
from node.ledger.store import ChainStore
from orchestrator.spec import load_spec, with_overrides
from proto.dfl.v1 import records_pb2 as pb
from tests.integration.live import (
    LiveNetwork,
    channel,
    rejected,
    running,
    scrape,
    status,
    submit,
    wait_for,
)
from tests.support import assert_refused, finished_summary

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6
OVERRIDES = {
    "name": "blade-it",
    "blade.rounds": ROUNDS,
    "blade.t_sum": None,
    "blade.alpha": None,
    "blade.local_iterations": 2,
    "blade.beta": "1s",
    "blade.collect_timeout": "15s",
    "evaluation.interval": "3s",
    "evaluation.test_samples": 500,
}
TARGET = 0  # the client that gets the forged blocks


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNetwork]:
    spec = with_overrides(load_spec(REPO_ROOT / "experiments" / "smoke-blade.yaml"), OVERRIDES)
    with running(spec, tmp_path_factory.mktemp("blade-run")) as live:
        yield live


def genesis_of(network: LiveNetwork) -> pb.Genesis:
    with ChainStore.open(network.nodes[TARGET].data_dir, verify=False) as store:
        return store.genesis


def forged_block(
    genesis: pb.Genesis,
    *,
    height: int,
    previous: bytes,
    models: list[pb.Transaction],
    enough_work: bool = True,
    signer: NodeKey | None = None,
) -> pb.PowBlock:
    miner = NodeKey.generate()
    target = target_for(difficulty_of(genesis) or 1)
    header = records.pow_header(
        height=height,
        previous_hash=previous,
        transactions=models,
        miner=miner.address,
        time_ms=int(time.time() * 1000),
    )
    if enough_work:
        nonce = mine(header_prefix(header), target, 0, MAX_NONCE).nonce or 0
    else:
        nonce = next(n for n in range(MAX_NONCE) if header_hash(_with(header, n)) >= target)
    block = records.make_pow_block(miner, header, nonce, models)
    if signer is not None:
        block.signature = signer.sign(block.hash)
    return block


def _with(header: pb.PowHeader, nonce: int) -> pb.PowHeader:
    copy = pb.PowHeader()
    copy.CopyFrom(header)
    copy.nonce = nonce
    return copy


def stranger_model(genesis: pb.Genesis, round: int) -> pb.Transaction:
    weights = bytes(records.parameter_count(genesis) * 4)  # zeros: finite, the right size
    return records.make_transaction(
        NodeKey.generate(),
        genesis_digest=genesis.digest,
        weights=weights,
        now_ms=int(time.time() * 1000),
        ttl=0,
        lifetime_ms=60_000,
        round=round,
    )


def refuse(network: LiveNetwork, block: pb.PowBlock, reason: RejectReason) -> None:
    with channel(network.nodes[TARGET]) as ch:
        error = submit(ch, "SubmitPowBlock", block.SerializeToString())
    assert_refused(error, reason, "a block")


def test_forged_blocks_during_the_rounds_are_refused_and_counted(network: LiveNetwork) -> None:
    wait_for(lambda: status(network.nodes[TARGET]).chain_height >= 1, 120, "block 1", network)
    genesis = genesis_of(network)
    before = rejected(scrape(network.nodes[TARGET]))
    head = status(network.nodes[TARGET]).chain_height
    models = [stranger_model(genesis, head + 1)]
    refuse(
        network,
        forged_block(
            genesis, height=head + 1, previous=bytes(32), models=models, enough_work=False
        ),
        RejectReason.INSUFFICIENT_WORK,
    )
    refuse(
        network,
        forged_block(
            genesis, height=head + 1, previous=bytes(32), models=models, signer=NodeKey.generate()
        ),
        RejectReason.BAD_SIGNATURE,
    )
    after = rejected(scrape(network.nodes[TARGET]))
    for reason in (RejectReason.INSUFFICIENT_WORK, RejectReason.BAD_SIGNATURE):
        assert after[reason.label] == before[reason.label] + 1, reason.label


def test_every_client_completes_every_round(network: LiveNetwork) -> None:
    wait_for(
        lambda: all(status(node).chain_height >= ROUNDS for node in network.nodes),
        300,
        f"all {ROUNDS} rounds on every client",
        network,
    )


def test_blocks_that_do_not_extend_the_chain_or_hold_foreign_models_are_refused(
    network: LiveNetwork,
) -> None:
    genesis = genesis_of(network)
    with ChainStore.open(network.nodes[TARGET].data_dir, verify=False) as store:
        head, head_hash = store.height, store.head_digest
    round = head + 1
    refuse(
        network,
        forged_block(
            genesis, height=round, previous=bytes(32), models=[stranger_model(genesis, round)]
        ),
        RejectReason.BAD_LINK,
    )
    refuse(
        network,
        forged_block(
            genesis, height=round, previous=head_hash, models=[stranger_model(genesis, round)]
        ),
        RejectReason.UNKNOWN_MODEL,
    )
    assert status(network.nodes[TARGET]).chain_height == head  # nothing was appended


@pytest.fixture(scope="module")
def summary(network: LiveNetwork) -> dict[str, Any]:
    return finished_summary(network, audit=True)


def test_every_chain_is_the_same_verified_chain_of_every_model(
    network: LiveNetwork, summary: dict[str, Any]
) -> None:
    chains = []
    for node in network.nodes:
        verify = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "chain", "verify", str(node.data_dir)],
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        with ChainStore.open(node.data_dir) as store:
            blocks = [store.block(h) for h in range(1, store.height + 1)]
        assert len(blocks) == ROUNDS
        assert all(len(block.transactions) == len(network.nodes) for block in blocks)
        chains.append([block.hash for block in blocks])
    assert all(chain == chains[0] for chain in chains)


def test_the_report_shows_learning_and_mining_as_blockchain_cpu(
    network: LiveNetwork, summary: dict[str, Any]
) -> None:
    assert summary["protocol"] == "blade-fl"
    for name, node in summary["nodes"].items():
        assert node["final_test_accuracy"] >= 0.8, name
        assert node["chain_verifies"] is True, name
        assert node["blockchain_share"] > 0.3, name  # the proof of work dominates
