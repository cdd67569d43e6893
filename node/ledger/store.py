"""The chain store: one node's blocks in SQLite.

WAL mode, one SQLite transaction per block append (the block row and its transaction index rows
commit together or not at all), and a full re-verification on open, so a store that was edited or
half-written is refused with the first bad height and the reason. Appends only check the link to
the head: the engine validated every confirmation as it arrived, and a second full check of our
own block would be counted as blockchain overhead that the protocol does not need.

Beside the blocks, a DFL node keeps the draft it has signed and sent but not yet finalized
(`save_draft`, written before the draft leaves the node, and deleted in the same transaction that
appends the block at its height). A node restarted between the two resumes that draft instead of
signing a different block at a height its neighbours already hold a signed draft of.

Both protocols use it: the genesis says which block format the rows hold (DFL's confirmed
`Block`, BLADE-FL's mined `PowBlock`), and everything else (links, index, verification on open,
`dfl chain verify`) is the same. Only BLADE-FL ever truncates, to switch to a longer fork.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias

from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.hashing import digest_message
from node.ledger.validation import (
    ValidationPolicy,
    decode,
    validate_draft_block,
    validate_final_block,
    validate_pow_block,
)
from proto.dfl.v1 import records_pb2 as pb

STORE_FILE = "chain.sqlite"
SCHEMA_VERSION = "2"
UPGRADABLE_SCHEMAS = ("1",)  # schema 1 had no drafts table; opening such a store adds it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    final_digest BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    digest BLOB PRIMARY KEY,
    height INTEGER NOT NULL REFERENCES blocks(height)
);
"""
_DRAFTS = """
CREATE TABLE IF NOT EXISTS drafts (
    height INTEGER PRIMARY KEY,
    digest BLOB NOT NULL,
    data BLOB NOT NULL
);
"""


class ChainCorrupted(Exception):
    """The store does not verify; `height` is the first bad block (0 is the genesis)."""

    def __init__(self, height: int, reason: str, detail: str) -> None:
        super().__init__(f"height {height}: {reason}: {detail}")
        self.height = height
        self.reason = reason
        self.detail = detail


class AppendRejected(Exception):
    """A block does not extend the head; nothing was written."""


AnyBlock: TypeAlias = pb.Block | pb.PowBlock


@dataclass(frozen=True)
class BlockLink:
    """Where a block sits and what it chains from, in either format."""

    height: int
    previous: bytes
    digest: bytes  # what the next block names as its previous


class BlockFormat(Protocol):
    message: type[AnyBlock]

    def link(self, block: AnyBlock) -> BlockLink: ...

    def verify(
        self, block: AnyBlock, policy: ValidationPolicy, height: int, previous: bytes, owner: bytes
    ) -> None: ...


class DflBlocks:
    """The node's own blocks, finalized by its neighbours' confirmations."""

    message = pb.Block

    def link(self, block: pb.Block) -> BlockLink:
        return BlockLink(block.body.height, block.body.previous_digest, block.final_digest)

    def verify(
        self, block: pb.Block, policy: ValidationPolicy, height: int, previous: bytes, owner: bytes
    ) -> None:
        validate_final_block(block, policy, height=height, previous_digest=previous, owner=owner)


class PowBlocks:
    """Blocks mined by any client; the store's owner is only the client keeping the copy."""

    message = pb.PowBlock

    def link(self, block: pb.PowBlock) -> BlockLink:
        return BlockLink(block.header.height, block.header.previous_hash, block.hash)

    def verify(
        self,
        block: pb.PowBlock,
        policy: ValidationPolicy,
        height: int,
        previous: bytes,
        owner: bytes,
    ) -> None:
        validate_pow_block(block, policy, previous_hash=previous)
        if block.header.height != height:
            raise RecordRejected(
                RejectReason.BAD_LINK, f"block says height {block.header.height}, expected {height}"
            )


FORMATS: dict[str, BlockFormat] = {"dfl": DflBlocks(), "blade-fl": PowBlocks()}


def block_format(genesis: pb.Genesis) -> BlockFormat:
    try:
        return FORMATS[genesis.body.protocol]
    except KeyError:
        raise ChainCorrupted(
            0, "malformed", f"the genesis names an unknown protocol {genesis.body.protocol!r}"
        ) from None


@dataclass(frozen=True)
class ChainSummary:
    height: int
    head_digest: bytes
    transactions: int
    receipts: int
    confirmations: int


def store_path(location: Path) -> Path:
    """Accepts a node's data directory or the database file itself (a name ending in .sqlite)."""
    return location if location.suffix == ".sqlite" else location / STORE_FILE


class ChainStore:
    """Open with `create` for a new chain or `open` for an existing one (which verifies it)."""

    def __init__(self, connection: sqlite3.Connection, genesis: pb.Genesis, owner: bytes) -> None:
        self._db = connection
        self.genesis = genesis
        self.owner = owner
        self.policy = ValidationPolicy.for_genesis(genesis, max_ttl=None)
        self.format = block_format(genesis)
        row = self._db.execute(
            "SELECT height, final_digest FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
        self.height, self.head_digest = (row[0], row[1]) if row else (0, genesis.digest)
        # Called with the height being appended, inside the append's transaction once its rows
        # are written and before the commit. Only the node's crash test hook sets it
        # (NodeConfig.hold_append): the one way to kill a process in the middle of an append.
        self.inside_append: Callable[[int], None] | None = None

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    @classmethod
    def create(cls, location: Path, genesis: pb.Genesis, owner: bytes) -> ChainStore:
        path = store_path(location)
        if path.exists():
            raise FileExistsError(f"{path} already holds a chain; open it instead")
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = cls._connect(path)
        connection.executescript(_SCHEMA + _DRAFTS)
        with _transaction(connection):
            connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema", SCHEMA_VERSION.encode()),
                    ("genesis", genesis.SerializeToString(deterministic=True)),
                    ("owner", owner),
                ],
            )
        return cls(connection, genesis, owner)

    @classmethod
    def open(cls, location: Path, *, verify: bool = True) -> ChainStore:
        """Opens and (by default) re-verifies every block; ChainCorrupted names the first bad."""
        path = store_path(location)
        if not path.exists():
            raise FileNotFoundError(f"no chain store at {path}")
        connection = cls._connect(path)
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        schema = meta.get("schema", b"").decode(errors="replace")
        if schema in UPGRADABLE_SCHEMAS:
            _upgrade(connection)
        elif schema != SCHEMA_VERSION:
            connection.close()
            raise ChainCorrupted(
                0, "malformed", f"{path} is not a chain store of schema {SCHEMA_VERSION}"
            )
        try:
            genesis = decode(pb.Genesis, meta["genesis"])
        except RecordRejected as error:
            raise ChainCorrupted(0, error.reason.label, error.detail) from None
        if digest_message(genesis.body) != genesis.digest:
            raise ChainCorrupted(0, "digest_mismatch", "genesis body does not hash to its digest")
        try:
            store = cls(connection, genesis, meta["owner"])
        except RecordRejected as error:  # a genesis no policy can be made of
            connection.close()
            raise ChainCorrupted(0, error.reason.label, error.detail) from None
        if verify:
            store.verify()
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, block: AnyBlock) -> None:
        """Adds a finalized (DFL) or mined (BLADE-FL) block on top of the head, atomically."""
        if not isinstance(block, self.format.message):
            raise AppendRejected(f"this chain stores {self.format.message.DESCRIPTOR.name}s")
        link = self.format.link(block)
        if link.height != self.height + 1 or link.previous != self.head_digest:
            raise AppendRejected(
                f"block {link.height} does not extend head {self.height}; nothing written"
            )
        if not link.digest:
            raise AppendRejected("only finalized blocks are stored")
        with _transaction(self._db):
            self._db.execute(
                "INSERT INTO blocks (height, final_digest, data) VALUES (?, ?, ?)",
                (link.height, link.digest, block.SerializeToString(deterministic=True)),
            )
            self._db.executemany(
                "INSERT INTO transactions (digest, height) VALUES (?, ?)",
                [(tx.digest, link.height) for tx in _transactions(block)],
            )
            self._db.execute("DELETE FROM drafts WHERE height <= ?", (link.height,))
            if self.inside_append is not None:
                self.inside_append(link.height)
        self.height, self.head_digest = link.height, link.digest

    def save_draft(self, block: pb.Block) -> None:
        """Keeps a signed DFL draft for the next height (replacing any other) until the block at
        that height is appended; call it before the draft is sent anywhere."""
        if not isinstance(block, pb.Block) or not isinstance(self.format, DflBlocks):
            raise AppendRejected("only a DFL chain keeps drafts")
        if block.body.height != self.height + 1 or block.body.previous_digest != self.head_digest:
            raise AppendRejected(
                f"draft {block.body.height} does not extend head {self.height}; nothing written"
            )
        if not block.digest or not block.signature or block.final_digest:
            raise AppendRejected("only a signed draft that is not finalized is kept")
        with _transaction(self._db):
            self._db.execute("DELETE FROM drafts")
            self._db.execute(
                "INSERT INTO drafts (height, digest, data) VALUES (?, ?, ?)",
                (block.body.height, block.digest, block.SerializeToString(deterministic=True)),
            )

    def draft(self) -> pb.Block | None:
        """The signed draft for the next height that was saved and not yet finalized, if any."""
        row = self._db.execute(
            "SELECT data FROM drafts WHERE height = ?", (self.height + 1,)
        ).fetchone()
        return None if row is None else decode(pb.Block, row[0])

    def truncate(self, height: int) -> None:
        """Drops every block above `height` (a switch to a longer fork), atomically."""
        if not 0 <= height <= self.height:
            raise AppendRejected(f"cannot truncate to {height}: the head is {self.height}")
        head = self.genesis.digest
        if height:
            head = self._db.execute(
                "SELECT final_digest FROM blocks WHERE height = ?", (height,)
            ).fetchone()[0]
        with _transaction(self._db):
            self._db.execute("DELETE FROM transactions WHERE height > ?", (height,))
            self._db.execute("DELETE FROM blocks WHERE height > ?", (height,))
            self._db.execute("DELETE FROM drafts")
        self.height, self.head_digest = height, head

    def blocks(self, from_height: int = 1) -> Iterator[tuple[int, bytes, bytes]]:
        """(height, final_digest column, raw block bytes) in height order."""
        yield from self._db.execute(
            "SELECT height, final_digest, data FROM blocks WHERE height >= ? ORDER BY height",
            (from_height,),
        )

    def block(self, height: int) -> AnyBlock:
        row = self._db.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise KeyError(f"no block at height {height}")
        return decode(self.format.message, row[0])

    def height_of_transaction(self, digest: bytes) -> int | None:
        row = self._db.execute(
            "SELECT height FROM transactions WHERE digest = ?", (digest,)
        ).fetchone()
        return row[0] if row else None

    def verify(self) -> ChainSummary:
        """Re-checks every link, digest, signature and confirmation from height 1 up."""
        previous, expected = self.genesis.digest, 1
        transactions = receipts = confirmations = 0
        index: dict[int, set[bytes]] = {}
        for height, digest in self._db.execute("SELECT height, digest FROM transactions"):
            index.setdefault(height, set()).add(digest)
        for height, final_digest, data in self.blocks():
            if height != expected:
                raise ChainCorrupted(expected, "bad_link", f"height {expected} is missing")
            try:
                block = decode(self.format.message, data)
                self.format.verify(block, self.policy, height, previous, self.owner)
            except RecordRejected as error:
                raise ChainCorrupted(height, error.reason.label, error.detail) from None
            link = self.format.link(block)
            if link.digest != final_digest:
                raise ChainCorrupted(height, "digest_mismatch", "final digest column differs")
            contents = _transactions(block)
            if index.pop(height, set()) != {tx.digest for tx in contents}:
                raise ChainCorrupted(height, "index_mismatch", "transaction index differs")
            transactions += len(contents)
            receipts += sum(len(tx.receipts) for tx in contents)
            if isinstance(block, pb.Block):
                confirmations += len(block.finalization.confirmations)
            previous, expected = link.digest, height + 1
        if index:
            stray = min(index)
            raise ChainCorrupted(stray, "index_mismatch", "transactions indexed without a block")
        self._verify_drafts(expected, previous)
        return ChainSummary(expected - 1, previous, transactions, receipts, confirmations)

    def _verify_drafts(self, height: int, previous: bytes) -> None:
        """A kept draft is our own signed draft of the block after the head, and nothing else:
        the node would finalize it as it stands."""
        for draft_height, digest, data in self._db.execute(
            "SELECT height, digest, data FROM drafts"
        ):
            try:
                if draft_height != height:
                    raise RecordRejected(
                        RejectReason.BAD_LINK, f"a draft for height {draft_height} is kept"
                    )
                block = decode(pb.Block, data)
                validate_draft_block(block, self.policy)
                if block.body.creator.address != self.owner:
                    raise RecordRejected(RejectReason.WRONG_CREATOR, "a draft of another node")
                if block.body.height != height or block.body.previous_digest != previous:
                    raise RecordRejected(RejectReason.BAD_LINK, "it does not extend the head")
                if block.digest != digest or block.final_digest:
                    raise RecordRejected(RejectReason.DIGEST_MISMATCH, "not the draft kept")
            except RecordRejected as error:
                raise ChainCorrupted(
                    draft_height, error.reason.label, f"kept draft: {error.detail}"
                ) from None


def _upgrade(connection: sqlite3.Connection) -> None:
    """Schema 1 to the current one: the drafts table, and the schema it makes, in one commit."""
    with _transaction(connection):
        connection.execute(_DRAFTS)
        connection.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION.encode(),)
        )


def _transactions(block: AnyBlock) -> Sequence[pb.Transaction]:
    return block.body.transactions if isinstance(block, pb.Block) else block.transactions


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (the connection is autocommit)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
