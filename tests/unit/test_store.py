"""The SQLite chain store: atomic appends, re-verification on open, clear errors on tamper."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node.ledger.store import SCHEMA_VERSION, AppendRejected, ChainCorrupted, ChainStore
from node.ledger.validation import decode
from node.service.crashpoint import hold_inside_append
from proto.dfl.v1 import records_pb2 as pb
from tests.support import run_four_nodes


@pytest.fixture(scope="module")
def source_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chains")
    network = run_four_nodes(directory, until=25.0)
    for node in network.nodes.values():
        node.store.close()
    return directory / "n0" / "chain.sqlite"


@pytest.fixture
def chain(source_chain: Path, tmp_path: Path) -> Path:
    """A private copy of a verified chain with at least three blocks."""
    path = tmp_path / "chain.sqlite"
    with sqlite3.connect(source_chain) as source, sqlite3.connect(path) as dest:
        source.backup(dest)
    return path


def test_open_verifies_and_reports_the_head(chain: Path) -> None:
    with ChainStore.open(chain) as store:
        summary = store.verify()
        assert summary.height == store.height >= 3
        assert summary.head_digest == store.head_digest
        assert summary.receipts == summary.confirmations == 3 * summary.transactions


def test_store_uses_wal_and_indexes_every_transaction(chain: Path) -> None:
    with ChainStore.open(chain) as store:
        block = store.block(2)
        assert all(store.height_of_transaction(tx.digest) == 2 for tx in block.body.transactions)
    with sqlite3.connect(chain) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _truncate_to(chain: Path, height: int) -> list[bytes]:
    """Removes blocks above `height`, returning their raw bytes (highest last)."""
    with sqlite3.connect(chain) as connection:
        rows = connection.execute(
            "SELECT data FROM blocks WHERE height > ? ORDER BY height", (height,)
        ).fetchall()
        connection.execute("DELETE FROM transactions WHERE height > ?", (height,))
        connection.execute("DELETE FROM blocks WHERE height > ?", (height,))
    return [row[0] for row in rows]


def test_append_extends_the_head_and_survives_reopening(chain: Path) -> None:
    from node.ledger.validation import decode
    from proto.dfl.v1 import records_pb2 as pb

    removed = [decode(pb.Block, data) for data in _truncate_to(chain, 1)]
    with ChainStore.open(chain) as store:
        for block in removed:
            store.append(block)
        head = store.head_digest
    with ChainStore.open(chain) as store:
        assert store.head_digest == head and store.height == 1 + len(removed)


def test_append_refuses_a_block_that_does_not_extend_the_head(chain: Path) -> None:
    with ChainStore.open(chain) as store:
        height = store.height
        with pytest.raises(AppendRejected, match="does not extend"):
            store.append(store.block(2))
        assert store.height == height
    with ChainStore.open(chain) as store:
        assert store.height == height


def test_a_failing_append_rolls_back_the_whole_block(chain: Path) -> None:
    from node.ledger.validation import decode
    from proto.dfl.v1 import records_pb2 as pb

    last = decode(pb.Block, _truncate_to(chain, 2)[0])
    with sqlite3.connect(chain) as connection:  # make the second index insert fail midway
        connection.execute(
            "INSERT INTO transactions (digest, height) VALUES (?, 1)",
            (last.body.transactions[1].digest,),
        )
    with ChainStore.open(chain, verify=False) as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.append(last)
        assert store.height == 2
    with sqlite3.connect(chain) as connection:
        assert connection.execute("SELECT max(height) FROM blocks").fetchone()[0] == 2
        assert connection.execute(
            "SELECT count(*) FROM transactions WHERE digest = ?",
            (last.body.transactions[0].digest,),
        ).fetchone() == (0,)


def test_a_process_killed_in_the_middle_of_an_append_leaves_no_partial_block(
    chain: Path,
) -> None:
    removed = _truncate_to(chain, 2)
    # The child appends the next block and dies (os._exit, no cleanup) right after SQLite has
    # executed the block row insert, before the transaction index rows and the commit.
    child = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from node.ledger.store import ChainStore
        from node.ledger.validation import decode
        from proto.dfl.v1 import records_pb2 as pb

        store = ChainStore.open(Path({str(chain)!r}))
        block = decode(pb.Block, {removed[0]!r})

        def die_after_block_row(statement):
            if statement.startswith("INSERT INTO transactions"):
                os._exit(3)

        store._db.set_trace_callback(die_after_block_row)
        store.append(block)
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr

    with ChainStore.open(chain) as store:
        assert store.height == 2
        assert store.verify().height == 2


def test_open_names_the_first_tampered_height(chain: Path) -> None:
    with sqlite3.connect(chain) as connection:
        for height in (2, 3):
            data = connection.execute(
                "SELECT data FROM blocks WHERE height = ?", (height,)
            ).fetchone()[0]
            changed = bytearray(data)
            changed[len(changed) // 2] ^= 0xFF
            connection.execute(
                "UPDATE blocks SET data = ? WHERE height = ?", (bytes(changed), height)
            )
    with pytest.raises(ChainCorrupted) as corrupted:
        ChainStore.open(chain)
    assert corrupted.value.height == 2
    assert "height 2" in str(corrupted.value)


def test_a_missing_block_is_a_broken_link(chain: Path) -> None:
    with sqlite3.connect(chain) as connection:
        connection.execute("DELETE FROM transactions WHERE height = 2")
        connection.execute("DELETE FROM blocks WHERE height = 2")
    with pytest.raises(ChainCorrupted) as corrupted:
        ChainStore.open(chain)
    assert (corrupted.value.height, corrupted.value.reason) == (2, "bad_link")


def test_a_tampered_transaction_index_is_reported(chain: Path) -> None:
    with sqlite3.connect(chain) as connection:
        connection.execute("UPDATE transactions SET height = 1 WHERE height = 3")
    with pytest.raises(ChainCorrupted) as corrupted:
        ChainStore.open(chain)
    assert corrupted.value.reason == "index_mismatch"
    assert corrupted.value.height == 1


def test_a_tampered_genesis_is_height_zero(chain: Path) -> None:
    with sqlite3.connect(chain) as connection:
        genesis = bytearray(
            connection.execute("SELECT value FROM meta WHERE key='genesis'").fetchone()[0]
        )
        genesis[-1] ^= 0x01
        connection.execute("UPDATE meta SET value = ? WHERE key = 'genesis'", (bytes(genesis),))
    with pytest.raises(ChainCorrupted) as corrupted:
        ChainStore.open(chain)
    assert corrupted.value.height == 0


def test_create_refuses_to_overwrite(chain: Path) -> None:
    with ChainStore.open(chain) as store:
        genesis, owner = store.genesis, store.owner
    with pytest.raises(FileExistsError):
        ChainStore.create(chain, genesis, owner)


# --- the kept draft -----------------------------------------------------------------------------


def _as_draft(block: pb.Block) -> pb.Block:
    """What the creator signed and sent before any confirmation: the block without them."""
    draft = pb.Block()
    draft.CopyFrom(block)
    for name in ("finalization", "final_digest", "final_signature"):
        draft.ClearField(name)
    return draft


def _next_block_and_draft(chain: Path) -> tuple[pb.Block, pb.Block]:
    """The chain cut back to height 2; its block 3 and the draft it was finalized from."""
    block = decode(pb.Block, _truncate_to(chain, 2)[0])
    return block, _as_draft(block)


def test_a_draft_is_kept_across_reopening_and_cleared_by_the_append_at_its_height(
    chain: Path,
) -> None:
    block, draft = _next_block_and_draft(chain)
    with ChainStore.open(chain) as store:
        assert store.draft() is None
        store.save_draft(draft)
    with ChainStore.open(chain) as store:  # verifies the kept draft too
        assert store.draft() == draft
        store.append(block)
        assert store.draft() is None
    with sqlite3.connect(chain) as connection:
        assert connection.execute("SELECT count(*) FROM drafts").fetchone() == (0,)


def test_an_append_that_fails_keeps_the_draft(chain: Path) -> None:
    block, draft = _next_block_and_draft(chain)
    with ChainStore.open(chain) as store:
        store.save_draft(draft)
        seen: list[tuple[int, bool]] = []

        def fail(height: int) -> None:  # inside the transaction, after the rows are written
            seen.append((height, store._db.in_transaction))
            raise OSError("the process dies here")

        store.inside_append = fail
        with pytest.raises(OSError):
            store.append(block)
        assert seen == [(3, True)] and store.height == 2
    with ChainStore.open(chain) as store:
        assert store.height == 2 and store.draft() == draft


def test_only_a_signed_unfinalized_draft_of_the_next_height_is_kept(chain: Path) -> None:
    block, _ = _next_block_and_draft(chain)
    with ChainStore.open(chain) as store:
        with pytest.raises(AppendRejected, match="not finalized"):
            store.save_draft(block)
        with pytest.raises(AppendRejected, match="does not extend"):
            store.save_draft(_as_draft(store.block(2)))
        assert store.draft() is None


def test_a_tampered_draft_is_refused_on_open(chain: Path) -> None:
    _, draft = _next_block_and_draft(chain)
    with ChainStore.open(chain) as store:
        store.save_draft(draft)
    with sqlite3.connect(chain) as connection:
        draft.body.time_ms += 1  # the signature no longer covers it
        connection.execute("UPDATE drafts SET data = ?", (draft.SerializeToString(),))
    with pytest.raises(ChainCorrupted) as corrupted:
        ChainStore.open(chain)
    assert corrupted.value.height == 3 and "kept draft" in corrupted.value.detail


def test_a_store_of_schema_1_gets_the_drafts_table_when_opened(chain: Path) -> None:
    with sqlite3.connect(chain) as connection:
        connection.execute("DROP TABLE drafts")
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (b"1",))
    _, draft = _next_block_and_draft(chain)
    with ChainStore.open(chain) as store:
        assert store.height == 2 and store.draft() is None
        store.save_draft(draft)
    with sqlite3.connect(chain) as connection:
        schema = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        assert schema == (SCHEMA_VERSION.encode(),)
    with sqlite3.connect(chain) as connection:
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (b"0",))
    with pytest.raises(ChainCorrupted, match="not a chain store of schema"):
        ChainStore.open(chain)


def test_the_crash_hook_holds_an_append_once_per_missing_marker(chain: Path) -> None:
    marker = chain.parent / "hold"
    hold = hold_inside_append(marker, seconds=0.0)
    block, _ = _next_block_and_draft(chain)
    with ChainStore.open(chain) as store:
        store.inside_append = hold
        store.append(block)
        assert marker.read_text() == "3\n"  # written inside the append of block 3
        marker.write_text("kept")
        hold(4)
        assert marker.read_text() == "kept"  # an existing marker leaves appends alone
