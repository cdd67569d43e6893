"""Four DFL engines wired in memory: the paper's four-node example (section 4.1), end to end.

Read like a functional test: start the nodes, let them train and gossip, then assert on what
their chains say and on what `dfl chain verify` says about the stores they wrote.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from node.ledger.store import ChainStore
from node.ledger.validation import decode
from proto.dfl.v1 import records_pb2 as pb
from tests.support import NAMES, run_four_nodes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("four-nodes")
    network = run_four_nodes(directory)
    for node in network.nodes.values():
        assert not node.rejections, f"{node.name} rejected {dict(node.rejections)}"
        node.store.close()
    return directory


def dfl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True
    )


def test_every_node_finalizes_blocks_with_receipts_and_confirmations_from_all_neighbours(
    run_dir: Path,
) -> None:
    for name in NAMES:
        with ChainStore.open(run_dir / name) as store:
            assert store.height >= 3, f"{name} finalized only {store.height} blocks"
            neighbours = {
                ChainStore.open(run_dir / other, verify=False).owner
                for other in NAMES
                if other != name
            }
            for height in range(1, store.height + 1):
                block = store.block(height)
                assert block.body.creator.address == store.owner
                assert not block.finalization.timed_out
                for tx in block.body.transactions:
                    assert tx.body.generator.address == store.owner
                    assert {r.body.creator.address for r in tx.receipts} == neighbours
                    assert all(r.body.received_at_ttl == 0 for r in tx.receipts)  # ttl 1, eq. 1
                confirmers = {c.body.creator.address for c in block.finalization.confirmations}
                assert confirmers == neighbours
                assert len(block.finalization.confirmations) == 3 * len(block.body.transactions)


def test_chains_link_each_block_to_the_previous_final_digest(run_dir: Path) -> None:
    with ChainStore.open(run_dir / "n0") as store:
        previous = store.genesis.digest
        for height in range(1, store.height + 1):
            block = store.block(height)
            assert block.body.previous_digest == previous
            previous = block.final_digest


def test_dfl_chain_verify_accepts_every_store_of_the_run(run_dir: Path) -> None:
    for name in NAMES:
        result = dfl("chain", "verify", str(run_dir / name))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("OK: ")


def _flip_byte(path: Path, height: int, offset: int) -> None:
    connection = sqlite3.connect(path)
    (data,) = connection.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
    changed = bytearray(data)
    changed[offset % len(changed)] ^= 0x01
    connection.execute("UPDATE blocks SET data = ? WHERE height = ?", (bytes(changed), height))
    connection.commit()
    connection.close()


@pytest.mark.parametrize("height", [1, 2, 3])
@pytest.mark.parametrize("offset", [0, 17, 250, 700, -40, -3])
def test_one_changed_byte_in_any_stored_block_fails_verify_naming_that_height(
    run_dir: Path, tmp_path: Path, height: int, offset: int
) -> None:
    copy = tmp_path / "chain.sqlite"
    with sqlite3.connect(run_dir / "n1" / "chain.sqlite") as source, sqlite3.connect(copy) as dest:
        source.backup(dest)
    _flip_byte(copy, height, offset)

    result = dfl("chain", "verify", str(copy))

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith(f"INVALID at height {height}: ")
    reason = result.stdout.split(": ")[1]
    assert reason in {
        "malformed",
        "digest_mismatch",
        "bad_signature",
        "address_mismatch",
        "bad_link",
        "ttl_mismatch",
        "wrong_creator",
        "unknown_receipt",
        "model_shape_mismatch",
        "genesis_mismatch",
    }


def test_export_prints_the_genesis_then_every_block_with_model_digests(run_dir: Path) -> None:
    import json

    result = dfl("chain", "export", str(run_dir / "n2"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["height"] == 0 and lines[0]["genesis"]["body"]["model_architecture"] == "tiny"
    with ChainStore.open(run_dir / "n2") as store:
        assert len(lines) == store.height + 1
        first = decode(pb.Block, next(store.blocks())[2])
    tx = lines[1]["block"]["body"]["transactions"][0]
    assert "model" not in tx  # weights are never exported
    assert tx["body"]["model"]["digest"] == first.body.transactions[0].body.model.digest.hex()
    assert lines[1]["confirmed_fraction"] == 1.0
