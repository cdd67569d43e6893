"""`dfl chain audit RUN_DIR`: every chain of a run, on its own and against the others.

The run directories are real: the simulator runs a small DFL experiment (four MLP nodes on a
ring, ttl 2, so receipts come from one and two hops away) and a small BLADE-FL one, writing signed
records into SQLite chain stores. Each forgery below is re-signed with the nodes' own keys (they
are derived from the spec's seed) so that every chain still verifies on its own and only the
audit's cross-chain rules can tell.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from node import seeds
from node.ledger import records
from node.ledger.audit import Inconsistency, short
from node.ledger.hashing import digest_message
from node.ledger.keys import NodeKey
from node.ledger.pow import header_prefix, mine
from node.ledger.store import ChainStore
from node.ledger.validation import ValidationPolicy, decode
from orchestrator.chain_audit import NoChains, audit_run_directory
from orchestrator.cli import main
from orchestrator.datasets import Dataset
from orchestrator.sim.run import simulate
from orchestrator.spec import ExperimentSpec, parse_spec
from proto.dfl.v1 import records_pb2 as pb
from tests.support import SMALL_BLADE, SMALL_DFL, assert_audit_passes

DFL = {
    **SMALL_DFL,
    "name": "audit-small",
    "duration": 50,
    "dfl": {"fedavg_buffer": 2, "transactions_per_block": 2, "ttl": 2},
}
BLADE = {
    **SMALL_BLADE,
    "name": "audit-blade",
    "blade": {"rounds": 3, "t_sum": 36, "alpha": 1, "beta": 10, "dataset_size": 64},
}

# ring of four: node0 -- node1 -- node2 -- node3 -- node0


@pytest.fixture(scope="module")
def dfl_run(tmp_path_factory: pytest.TempPathFactory, mnist: Dataset, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("audit") / "dfl"
    simulate(parse_spec(DFL), out, progress=False, data_dir=data_dir, figures=False)
    return out


@pytest.fixture(scope="module")
def blade_run(tmp_path_factory: pytest.TempPathFactory, mnist: Dataset, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("audit") / "blade"
    simulate(parse_spec(BLADE), out, progress=False, data_dir=data_dir, figures=False)
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def keys_of(spec: ExperimentSpec) -> list[NodeKey]:
    return [NodeKey.from_seed(seeds.identity_seed(spec.seed, i)) for i in range(spec.nodes.count)]


def chain_file(run: Path, node: str) -> Path:
    return run / "nodes" / node / "chain.sqlite"


def read_blocks(path: Path, kind: type = pb.Block) -> tuple[ChainStore, list]:
    with ChainStore.open(path) as store:
        return store, [decode(kind, data) for _, _, data in store.blocks()]


def remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


Edit = Callable[[int, pb.BlockBody, list[pb.BlockConfirmation]], None]


def rewrite_dfl_chain(path: Path, keys: list[NodeKey], edit: Edit) -> None:
    """The chain again, block by block, after `edit(height, body, confirmations)`: every draft
    re-signed by its creator, every confirmation by its signer, so the chain verifies."""
    by_address = {key.address: key for key in keys}
    old_store, blocks = read_blocks(path)
    genesis, owner = old_store.genesis, old_store.owner
    remove_store(path)
    with ChainStore.create(path, genesis, owner) as store:
        for old in blocks:
            body = pb.BlockBody()
            body.CopyFrom(old.body)
            confirmations = list(old.finalization.confirmations)
            edit(body.height, body, confirmations)
            body.previous_digest = store.head_digest
            digest = digest_message(body)
            draft = pb.Block(body=body, digest=digest, signature=by_address[owner].sign(digest))
            signed = [
                records.make_confirmation(
                    by_address[c.body.creator.address],
                    block_digest=digest,
                    transaction_digest=c.body.transaction_digest,
                    receipt_digest=c.body.receipt_digest,
                )
                for c in confirmations
            ]
            store.append(
                records.finalize_block(
                    by_address[owner],
                    draft,
                    confirmations=signed,
                    now_ms=old.finalization.finalized_time_ms,
                    quorum=old.finalization.quorum,
                    timed_out=old.finalization.timed_out,
                )
            )


def failure(run: Path) -> Inconsistency:
    with pytest.raises(Inconsistency) as caught:
        audit_run_directory(run)
    return caught.value


def where(found: Inconsistency) -> tuple[str, int, str, bytes, str]:
    """Node, height, record kind, digest and rule: what every forgery test pins down, as one
    tuple so that a test states the expected record in a line."""
    return found.node, found.height, found.record, found.digest, found.rule


def every_chain_verifies(run: Path) -> None:
    for path in sorted((run / "nodes").glob("*/chain.sqlite")):
        ChainStore.open(path).close()  # raises ChainCorrupted if it does not


# --- a genuine run ------------------------------------------------------------------------------


def test_a_genuine_dfl_run_passes_with_every_record_counted(dfl_run: Path) -> None:
    report = audit_run_directory(dfl_run)
    assert not isinstance(report, NoChains)
    assert [c.node for c in report.chains] == ["node0", "node1", "node2", "node3"]
    assert report.total("blocks") > 0 and report.total("confirmations") > 0
    for chain in report.chains:
        with ChainStore.open(chain_file(dfl_run, chain.node)) as store:
            summary = store.verify()
        assert (chain.blocks, chain.transactions, chain.receipts, chain.confirmations) == (
            summary.height,
            summary.transactions,
            summary.receipts,
            summary.confirmations,
        )
    # ttl 2 on a ring of four: receipts from one hop (neighbours) and from two (the far node)
    _, blocks = read_blocks(chain_file(dfl_run, "node0"))
    hops = {
        tx.body.ttl - r.body.received_at_ttl
        for b in blocks
        for tx in b.body.transactions
        for r in tx.receipts
    }
    assert hops == {1, 2}
    assert_audit_passes(dfl_run)


def test_the_command_prints_a_line_per_node_and_a_total(
    dfl_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chain", "audit", str(dfl_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == ["node0", "node1", "node2", "node3"]
    assert lines[4].startswith("OK: 4 chains, ") and "confirmations checked" in lines[4]
    assert len(lines) == 5


def test_a_store_the_run_directory_lacks_is_named_and_its_records_elsewhere_still_checked(
    dfl_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A swarm run leaves other hosts' chains in their volumes: not an inconsistency."""
    run = copy_run(dfl_run, tmp_path)
    remove_store(chain_file(run, "node1"))
    report = audit_run_directory(run)
    assert not isinstance(report, NoChains)
    assert [c.node for c in report.chains] == ["node0", "node2", "node3"]
    assert report.missing == ("node1",)
    assert main(["chain", "audit", str(run)]) == 0
    assert "node1: not audited" in capsys.readouterr().out


# --- forgeries the chains' own verification cannot see ------------------------------------------


def test_a_receipt_moved_into_another_nodes_chain_is_named_by_height_and_digest(
    dfl_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(dfl_run, tmp_path)
    keys = keys_of(parse_spec(DFL))
    node1 = keys[1]
    # a receipt node1 wrote straight from node0 (one hop), taken out of node0's chain ...
    _, blocks = read_blocks(chain_file(run, "node0"))
    height, tx, receipt = next(
        (b.body.height, tx, r)
        for b in blocks
        for tx in b.body.transactions
        for r in tx.receipts
        if r.body.creator.address == node1.address and r.body.received_at_ttl == tx.body.ttl - 1
    )

    def take_out(at: int, body: pb.BlockBody, confirmations: list[pb.BlockConfirmation]) -> None:
        if at == height:
            for candidate in body.transactions:
                if candidate.digest == tx.digest:
                    candidate.receipts.remove(receipt)
            confirmations[:] = [c for c in confirmations if c.body.receipt_digest != receipt.digest]

    rewrite_dfl_chain(chain_file(run, "node0"), keys, take_out)
    # ... and re-signed by node1 for a transaction of node3, which is two hops from node1
    _, theirs = read_blocks(chain_file(run, "node3"))
    target = theirs[0].body.transactions[0]
    body = pb.ReceiptBody()
    body.CopyFrom(receipt.body)
    body.transaction_digest = target.digest
    moved = pb.Receipt(body=body, digest=digest_message(body))
    moved.signature = node1.sign(moved.digest)

    def put_in(at: int, block: pb.BlockBody, confirmations: list[pb.BlockConfirmation]) -> None:
        if at == 1:
            tx3 = block.transactions[0]
            kept = [r for r in tx3.receipts if r.body.creator.address != node1.address]
            del tx3.receipts[:]
            tx3.receipts.extend([*kept, moved])

    rewrite_dfl_chain(chain_file(run, "node3"), keys, put_in)
    every_chain_verifies(run)

    found = failure(run)
    assert where(found) == ("node3", 1, "receipt", moved.digest, "receipt-distance")
    assert "1 hop(s) from the generator node3, but node1 is 2 hops away" in found.detail
    assert main(["chain", "audit", str(run)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"INCONSISTENT: node node3, height 1, receipt {short(moved.digest)}: ")
    assert "receipt-distance" in out


def test_a_confirmation_whose_signer_wrote_no_receipt_is_named(
    dfl_run: Path, tmp_path: Path
) -> None:
    run = copy_run(dfl_run, tmp_path)
    keys = keys_of(parse_spec(DFL))
    node2 = keys[2].address  # node0's far node: its receipts in node0's block 1 are dropped

    def forge(at: int, body: pb.BlockBody, confirmations: list[pb.BlockConfirmation]) -> None:
        if at != 1:
            return
        for tx in body.transactions:
            kept = [r for r in tx.receipts if r.body.creator.address != node2]
            del tx.receipts[:]
            tx.receipts.extend(kept)
        victim = confirmations[0]  # a neighbour's confirmation of its receipt, copied by node2
        forged = pb.BlockConfirmation()
        forged.CopyFrom(victim)
        forged.body.creator.CopyFrom(records.node_info(keys[2]))
        confirmations.append(forged)

    rewrite_dfl_chain(chain_file(run, "node0"), keys, forge)
    with ChainStore.open(chain_file(run, "node0"), verify=False) as store:
        block = store.block(1)
    forged = next(c for c in block.finalization.confirmations if c.body.creator.address == node2)

    found = failure(run)
    assert where(found) == ("node0", 1, "confirmation", forged.digest, "confirmation-signer")
    assert "signed by node2, who wrote no receipt in the block" in found.detail


def test_two_chains_with_different_geneses_are_named_at_height_zero(
    dfl_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(dfl_run, tmp_path)
    path = chain_file(run, "node2")
    with ChainStore.open(path) as store:
        body, owner = pb.GenesisBody(), store.owner
        body.CopyFrom(store.genesis.body)
    body.seed += 1  # the same experiment in every other respect
    other = pb.Genesis(body=body, digest=digest_message(body))
    remove_store(path)
    ChainStore.create(path, other, owner).close()
    every_chain_verifies(run)

    found = failure(run)
    assert where(found) == ("node2", 0, "genesis", other.digest, "genesis-equal")
    assert main(["chain", "audit", str(run)]) == 1
    assert "node node2, height 0, genesis" in capsys.readouterr().out


def test_a_record_altered_in_place_is_named_by_the_verify_step(
    dfl_run: Path, tmp_path: Path
) -> None:
    """A receipt's accuracy changed in the stored bytes: the chain no longer verifies, and the
    audit names the receipt (its digest no longer matches its body), not only the block."""
    run = copy_run(dfl_run, tmp_path)
    path = chain_file(run, "node1")
    _, blocks = read_blocks(path)
    block = blocks[1]
    receipt = block.body.transactions[0].receipts[0]
    receipt.body.accuracy = 1.0 if receipt.body.accuracy < 1.0 else 0.0
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE blocks SET data = ? WHERE height = 2",
            (block.SerializeToString(deterministic=True),),
        )
    found = failure(run)
    assert where(found) == ("node1", 2, "receipt", receipt.digest, "signature")


def test_a_run_record_that_contradicts_its_spec_is_named(dfl_run: Path, tmp_path: Path) -> None:
    """The node order and the edges come from the record and the spec; where they disagree
    the audit could check receipts against the wrong graph, so it says so first."""
    run = copy_run(dfl_run, tmp_path)
    path = run / "summary.json"
    summary = json.loads(path.read_text())
    addresses = summary["addresses"]
    addresses["node0"], addresses["node1"] = addresses["node1"], addresses["node0"]
    path.write_text(json.dumps(summary))
    found = failure(run)
    assert (found.node, found.height, found.rule) == ("node0", 0, "identity")
    summary["edges"] = [[0, 1], [1, 2], [2, 3]]
    path.write_text(json.dumps(summary))
    found = failure(run)
    assert (found.node, found.rule) == ("summary.json", "edges")


# --- not a run directory, and runs without chains -----------------------------------------------


def test_a_directory_that_is_not_a_run_exits_2_saying_what_one_holds(
    tmp_path: Path, dfl_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chain", "audit", str(tmp_path)]) == 2
    assert "spec.yaml" in capsys.readouterr().err
    assert main(["chain", "audit", str(tmp_path / "missing")]) == 2
    (tmp_path / "spec.yaml").write_text((dfl_run / "spec.yaml").read_text())
    assert main(["chain", "audit", str(tmp_path)]) == 2
    assert "run.json nor summary.json" in capsys.readouterr().err


def test_another_nodes_transaction_in_a_chain_is_named(dfl_run: Path, tmp_path: Path) -> None:
    """node1's transaction, receipts and all, in node0's block 1 (re-signed by node0): the
    chain's own check refuses the block, and the audit names the transaction and the rule."""
    run = copy_run(dfl_run, tmp_path)
    keys = keys_of(parse_spec(DFL))
    _, theirs = read_blocks(chain_file(run, "node1"))
    stolen = theirs[0].body.transactions[0]

    def steal(at: int, body: pb.BlockBody, confirmations: list[pb.BlockConfirmation]) -> None:
        if at == 1:
            body.transactions.append(stolen)

    rewrite_dfl_chain(chain_file(run, "node0"), keys, steal)
    found = failure(run)
    assert where(found) == ("node0", 1, "transaction", stolen.digest, "transaction-belongs")
    assert "generated by node1" in found.detail


def test_a_chainless_run_has_no_chains_to_audit(
    tmp_path: Path, mnist: Dataset, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = parse_spec({**DFL, "duration": 10, "dfl": {"ttl": 1}})
    simulate(
        spec, tmp_path / "plain", chain=False, progress=False, data_dir=data_dir, figures=False
    )
    assert main(["chain", "audit", str(tmp_path / "plain")]) == 0
    assert "no chains to audit" in capsys.readouterr().out


def test_a_fedavg_run_has_no_chains_to_audit_and_exits_0(
    tmp_path: Path, mnist: Dataset, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid run directory in which nothing can be inconsistent: exit 0, not 2 (which says
    the directory is not a run at all), so every run directory can be audited alike."""
    spec = parse_spec(
        {
            **DFL,
            "protocol": "fedavg",
            "topology": {"kind": "star"},
            "fedavg": {"rounds": 1},
            "dfl": {},
        }
    )
    simulate(spec, tmp_path / "fedavg", progress=False, data_dir=data_dir, figures=False)
    assert main(["chain", "audit", str(tmp_path / "fedavg")]) == 0
    assert "OK: no chains to audit (fedavg)" in capsys.readouterr().out


# --- BLADE-FL -----------------------------------------------------------------------------------


def remine(path: Path, keys: list[NodeKey], from_height: int) -> None:
    """The chain with every block from `from_height` up mined again a millisecond later (another
    hash, the same models), by the same miners."""
    by_address = {key.address: key for key in keys}
    old_store, blocks = read_blocks(path, pb.PowBlock)
    genesis, owner = old_store.genesis, old_store.owner
    target = ValidationPolicy.for_genesis(genesis).pow_target
    assert target is not None
    remove_store(path)
    with ChainStore.create(path, genesis, owner) as store:
        for old in blocks:
            if old.header.height < from_height:
                store.append(old)
                continue
            header = records.pow_header(
                height=old.header.height,
                previous_hash=store.head_digest,
                transactions=old.transactions,
                miner=old.header.miner,
                time_ms=old.header.time_ms + 1,
            )
            nonce = mine(header_prefix(header), target, 0, 1 << 20).nonce
            assert nonce is not None
            store.append(
                records.make_pow_block(
                    by_address[old.header.miner], header, nonce, old.transactions
                )
            )


def test_blade_chains_pass_and_may_differ_only_at_the_lower_head(
    blade_run: Path, tmp_path: Path
) -> None:
    report = audit_run_directory(blade_run)
    assert not isinstance(report, NoChains) and report.total("blocks") == 12
    keys = keys_of(parse_spec(BLADE))
    run = copy_run(blade_run, tmp_path)
    remine(chain_file(run, "client3"), keys, from_height=3)  # a competitor at the head: allowed
    every_chain_verifies(run)
    assert_audit_passes(run)
    remine(chain_file(run, "client3"), keys, from_height=2)  # a fork below both heads
    every_chain_verifies(run)
    found = failure(run)
    with ChainStore.open(chain_file(run, "client3")) as store:
        forked = store.block(2).hash
    assert where(found) == ("client3", 2, "block", forked, "chains-agree")
