"""The chain store: one node's blocks in SQLite.

WAL mode, one SQLite transaction per block append (the block row and its transaction index rows
commit together or not at all), and a full re-verification on open, so a store that was edited or
half-written is refused with the first bad height and the reason. Appends only check the link to
the head: the engine validated every confirmation as it arrived, and a second full check of our
own block would be counted as blockchain overhead that the protocol does not need.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from node.ledger.errors import RecordRejected
from node.ledger.hashing import digest_message
from node.ledger.validation import ValidationPolicy, decode, validate_final_block
from proto.dfl.v1 import records_pb2 as pb

STORE_FILE = "chain.sqlite"
SCHEMA_VERSION = "1"

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


class ChainCorrupted(Exception):
    """The store does not verify; `height` is the first bad block (0 is the genesis)."""

    def __init__(self, height: int, reason: str, detail: str) -> None:
        super().__init__(f"height {height}: {reason}: {detail}")
        self.height = height
        self.reason = reason
        self.detail = detail


class AppendRejected(Exception):
    """A block does not extend the head; nothing was written."""


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
        row = self._db.execute(
            "SELECT height, final_digest FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
        self.height, self.head_digest = (row[0], row[1]) if row else (0, genesis.digest)

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
        connection.executescript(_SCHEMA)
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
        if meta.get("schema") != SCHEMA_VERSION.encode():
            raise ChainCorrupted(0, "malformed", f"{path} is not a chain store of schema 1")
        try:
            genesis = decode(pb.Genesis, meta["genesis"])
        except RecordRejected as error:
            raise ChainCorrupted(0, error.reason.label, error.detail) from None
        if digest_message(genesis.body) != genesis.digest:
            raise ChainCorrupted(0, "digest_mismatch", "genesis body does not hash to its digest")
        store = cls(connection, genesis, meta["owner"])
        if verify:
            store.verify()
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, block: pb.Block) -> None:
        """Adds a finalized block on top of the head, atomically."""
        if block.body.height != self.height + 1 or block.body.previous_digest != self.head_digest:
            raise AppendRejected(
                f"block {block.body.height} does not extend head {self.height}; nothing written"
            )
        if not block.final_digest:
            raise AppendRejected("only finalized blocks are stored")
        height = block.body.height
        with _transaction(self._db):
            self._db.execute(
                "INSERT INTO blocks (height, final_digest, data) VALUES (?, ?, ?)",
                (height, block.final_digest, block.SerializeToString(deterministic=True)),
            )
            self._db.executemany(
                "INSERT INTO transactions (digest, height) VALUES (?, ?)",
                [(tx.digest, height) for tx in block.body.transactions],
            )
        self.height, self.head_digest = height, block.final_digest

    def blocks(self, from_height: int = 1) -> Iterator[tuple[int, bytes, bytes]]:
        """(height, final_digest column, raw block bytes) in height order."""
        yield from self._db.execute(
            "SELECT height, final_digest, data FROM blocks WHERE height >= ? ORDER BY height",
            (from_height,),
        )

    def block(self, height: int) -> pb.Block:
        row = self._db.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise KeyError(f"no block at height {height}")
        return decode(pb.Block, row[0])

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
                block = decode(pb.Block, data)
                validate_final_block(
                    block, self.policy, height=height, previous_digest=previous, owner=self.owner
                )
            except RecordRejected as error:
                raise ChainCorrupted(height, error.reason.label, error.detail) from None
            if block.final_digest != final_digest:
                raise ChainCorrupted(height, "digest_mismatch", "final digest column differs")
            if index.pop(height, set()) != {tx.digest for tx in block.body.transactions}:
                raise ChainCorrupted(height, "index_mismatch", "transaction index differs")
            transactions += len(block.body.transactions)
            receipts += sum(len(tx.receipts) for tx in block.body.transactions)
            confirmations += len(block.finalization.confirmations)
            previous, expected = block.final_digest, height + 1
        if index:
            stray = min(index)
            raise ChainCorrupted(stray, "index_mismatch", "transactions indexed without a block")
        return ChainSummary(expected - 1, previous, transactions, receipts, confirmations)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (the connection is autocommit)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
