"""The chain audit: every node's chain of one experiment, checked on its own and against the rest.

`dfl chain verify` proves that one store is a well-formed chain of signed records. It cannot tell
whether those records belong where they are: a receipt copied into another node's block and
re-signed verifies, and so does a chain of a different experiment. Those facts live between the
chains and in the experiment (who the nodes are, who is whose neighbour), so the audit takes
both: an `Experiment` (node names in index order, their addresses, the peer graph) and the chain
stores, and raises `Inconsistency` at the first record that breaks a rule, or returns the counts.

The rules (names as `Inconsistency.rule` gives them), checked in this order: run-wide first
(height 0), then node by node in index order, block by block, record by record in block order:

- `store`: every chain store the run holds is readable. A node's store may be absent (a swarm
  run leaves the chains of other hosts in their volumes; a node may die before it writes one):
  that node's chain is not audited, and the report names it, but its records in the other
  chains are (its address is known from the run);
- `genesis-equal`: every genesis is the one most chains hold; `genesis-protocol`: it is of the
  run's protocol; `genesis-spec`: it records the run's experiment spec (when the caller knows it);
- `owner`: the store belongs to its node (its owner is the node's address);
- `verify`: the chain verifies on its own (`ChainStore.verify`: links, digests, signatures,
  confirmations and quorum, the transaction index, a kept draft);

DFL chains (paper 4.1; node/protocol/dfl.py puts into a block only its creator's own settled
transactions, with the receipts that came back to it, and neighbours confirm their receipts):

- `transaction-belongs`: a transaction's generator is the chain's node;
- `transaction-once`: a transaction is in one block of one chain of the run;
- `receipt-transaction`: a receipt names the transaction it is attached to;
- `receipt-creator`: a receipt's creator is a node of the experiment, not the generator;
- `receipt-ttl`: the hops its ttl says (tx.ttl - received_at_ttl, eq. 1) are 1..tx.ttl;
- `receipt-distance`: the creator is no further from the generator in the topology than those
  hops (a copy can reach a node along a longer path first, never along a shorter one than the
  shortest: hop 1 means a neighbour);
- `receipt-once`: one receipt per creator per transaction, each receipt once in the run;
- `confirmation-block`: a confirmation is for this block's draft;
- `confirmation-signer`: it confirms a receipt of the block that its signer wrote;
- `confirmation-neighbour`: its signer is a neighbour of the chain's node (only they get drafts);
- `confirmation-once`: no receipt is confirmed twice, in one block or in the run;
- `signature`: each record's digest, address and signature check (see below).

BLADE-FL chains (every client keeps a copy of the one mined chain):

- `miner`: a block's miner and `model-generator`: each model's generator are nodes of the run;
- `chains-agree`: at every height below both heads, two chains hold the same block. At the lower
  head they may differ: a split vote is settled only when the next block arrives (the loser then
  switches to the longer chain), and a run may end before it does. Checked after every chain
  checked on its own, height by height.

Signatures. `ChainStore.verify` checks every signature of a chain, so the record rules above
skip the cryptography on a chain that verifies; on the block where verify fails they check every
record's signature too, so that the failure is reported naming the record, not only the block.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from node.ledger.errors import RecordRejected
from node.ledger.store import ChainCorrupted, ChainStore, PowBlocks
from node.ledger.validation import (
    ValidationPolicy,
    check_signed,
    decode,
    find_receipt,
    validate_pool_model,
)
from proto.dfl.v1 import records_pb2 as pb

SHORT = 12  # hex characters of a digest in a message: enough to grep an export for


Failure = Callable[[str, str], "Inconsistency"]  # (rule, detail) -> the record's Inconsistency


def short(digest: bytes) -> str:
    return digest.hex()[:SHORT] if digest else "-"


@dataclass(frozen=True)
class Experiment:
    """What the audit needs to know from outside the chains.

    `names` in node index order (the indices `edges` use); `addresses` by name, absent when the
    run recorded none and none can be derived (that node's `owner` rule is then skipped);
    `spec_digest` the digest of the run's canonical spec, which every genesis must record.
    """

    protocol: str
    names: tuple[str, ...]
    addresses: Mapping[str, bytes]
    edges: tuple[tuple[int, int], ...]
    spec_digest: bytes | None = None

    def __post_init__(self) -> None:
        if len(set(self.names)) != len(self.names):
            raise ValueError("node names repeat")
        n = len(self.names)
        if any(not (0 <= u < n and 0 <= v < n) for u, v in self.edges):
            raise ValueError(f"an edge names a node outside 0..{n - 1}")


class Inconsistency(Exception):
    """The first record that breaks a rule: where it is, what it is, which rule, and why."""

    def __init__(
        self, node: str, height: int, record: str, digest: bytes, rule: str, detail: str
    ) -> None:
        super().__init__(f"{node} height {height} {record} {short(digest)}: {rule}: {detail}")
        self.node = node
        self.height = height
        self.record = record
        self.digest = digest
        self.rule = rule
        self.detail = detail


@dataclass(frozen=True)
class ChainAudit:
    """One node's chain as audited: what was checked in it."""

    node: str
    blocks: int
    transactions: int
    receipts: int
    confirmations: int
    head: bytes


@dataclass(frozen=True)
class AuditReport:
    protocol: str
    genesis_digest: bytes
    chains: tuple[ChainAudit, ...]
    missing: tuple[str, ...] = ()  # nodes whose store the run directory does not hold

    def total(self, what: str) -> int:
        return sum(getattr(chain, what) for chain in self.chains)


@dataclass
class _Run:
    """The audit's view of the run while it walks the chains: names, distances, what was seen."""

    experiment: Experiment
    names_by_address: dict[bytes, str]
    index: dict[str, int]
    adjacency: list[set[int]]
    distances: dict[int, list[int | None]] = field(default_factory=dict)
    transactions: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    receipts: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    confirmed: dict[bytes, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, experiment: Experiment) -> _Run:
        n = len(experiment.names)
        adjacency: list[set[int]] = [set() for _ in range(n)]
        for u, v in experiment.edges:
            adjacency[u].add(v)
            adjacency[v].add(u)
        return cls(
            experiment,
            {address: name for name, address in experiment.addresses.items()},
            {name: i for i, name in enumerate(experiment.names)},
            adjacency,
        )

    def name_of(self, address: bytes) -> str | None:
        return self.names_by_address.get(address)

    def label(self, address: bytes) -> str:
        return self.name_of(address) or f"address {short(address)} (no node of the run)"

    def distance(self, a: str, b: str) -> int | None:
        """Hops between two nodes in the peer graph; None when no path joins them."""
        source = self.index[a]
        if source not in self.distances:
            hops: list[int | None] = [None] * len(self.adjacency)
            hops[source] = 0
            queue = deque([source])
            while queue:
                here = queue.popleft()
                for peer in self.adjacency[here]:
                    if hops[peer] is None:
                        hops[peer] = hops[here] + 1  # type: ignore[operator]
                        queue.append(peer)
            self.distances[source] = hops
        return self.distances[source][self.index[b]]


def audit_run(experiment: Experiment, stores: Mapping[str, Path]) -> AuditReport:
    """Audits the chain store of every node of `experiment` (`stores` by node name).

    Raises Inconsistency at the first broken rule (the module docstring lists them in order).
    """
    run = _Run.of(experiment)
    opened: list[tuple[str, ChainStore]] = []
    try:
        for name in experiment.names:
            path = stores.get(name)
            if path is not None and path.exists():
                opened.append((name, _open(name, path)))
        for name, store in opened:  # a node whose address the run did not record: its store's
            if name not in experiment.addresses:
                run.names_by_address.setdefault(store.owner, name)
        genesis = _check_geneses(run, opened)
        audits = [_audit_chain(run, name, store) for name, store in opened]
        if opened and isinstance(opened[0][1].format, PowBlocks):
            _check_agreement(opened)
    finally:
        for _, store in opened:
            store.close()
    present = {name for name, _ in opened}
    missing = tuple(name for name in experiment.names if name not in present)
    return AuditReport(experiment.protocol, genesis, tuple(audits), missing)


def _open(name: str, path: Path) -> ChainStore:
    try:
        return ChainStore.open(path, verify=False)
    except ChainCorrupted as error:
        raise Inconsistency(
            name, 0, "store", b"", "store", f"unreadable: {error.reason}: {error.detail}"
        ) from None
    except (sqlite3.DatabaseError, KeyError) as error:
        raise Inconsistency(
            name, 0, "store", b"", "store", f"not a readable chain store: {error!r}"
        ) from None


def _check_geneses(run: _Run, opened: Sequence[tuple[str, ChainStore]]) -> bytes:
    """The genesis most chains hold is the run's; the first chain without it is named."""
    if not opened:
        return b""
    counts = Counter(store.genesis.digest for _, store in opened)
    first_seen = {store.genesis.digest: i for i, (_, store) in reversed(list(enumerate(opened)))}
    common = max(counts, key=lambda d: (counts[d], -first_seen[d]))
    holder = next(name for name, store in opened if store.genesis.digest == common)
    experiment = run.experiment
    for name, store in opened:
        genesis = store.genesis
        if genesis.digest != common:
            raise Inconsistency(
                name,
                0,
                "genesis",
                genesis.digest,
                "genesis-equal",
                f"differs from the genesis {short(common)} of {holder} "
                f"({counts[common]} of {len(opened)} chains)",
            )
        if genesis.body.protocol != experiment.protocol:
            raise Inconsistency(
                name,
                0,
                "genesis",
                genesis.digest,
                "genesis-protocol",
                f"the genesis is of protocol {genesis.body.protocol!r}, "
                f"the run of {experiment.protocol!r}",
            )
        if (
            experiment.spec_digest is not None
            and genesis.body.spec_digest != experiment.spec_digest
        ):
            raise Inconsistency(
                name,
                0,
                "genesis",
                genesis.digest,
                "genesis-spec",
                f"the genesis records spec {short(genesis.body.spec_digest)}, "
                f"the run's spec is {short(experiment.spec_digest)}",
            )
        address = experiment.addresses.get(name)
        if address is not None and store.owner != address:
            raise Inconsistency(
                name,
                0,
                "store",
                store.owner,
                "owner",
                f"the store is owned by {run.label(store.owner)}, not by {name} ({short(address)})",
            )
    return common


def _audit_chain(run: _Run, name: str, store: ChainStore) -> ChainAudit:
    """`verify`, then the record rules up to the first block verify refused (with signatures
    there), so the lowest failing height wins and a failure is reported by its record."""
    failure: ChainCorrupted | None = None
    try:
        summary = store.verify()
    except ChainCorrupted as error:
        failure = error
    except sqlite3.DatabaseError as error:
        failure = ChainCorrupted(1, "malformed", f"database error: {error}")
    last = failure.height if failure is not None else store.height
    owner = run.experiment.addresses.get(name, store.owner)
    for height, _, data in store.blocks():
        if height > last:
            break
        crypto = failure is not None and height == failure.height
        try:
            block = decode(store.format.message, data)
        except RecordRejected:
            break  # verify names it
        if isinstance(block, pb.Block):
            _check_dfl_block(run, name, block, owner, crypto=crypto)
        else:
            _check_pow_block(run, name, block, store.policy, crypto=crypto)
    if failure is not None:
        digest = _digest_at(store, failure.height)
        raise Inconsistency(
            name, failure.height, "block", digest, "verify", f"{failure.reason}: {failure.detail}"
        )
    return ChainAudit(
        name,
        summary.height,
        summary.transactions,
        summary.receipts,
        summary.confirmations,
        summary.head_digest,
    )


def _digest_at(store: ChainStore, height: int) -> bytes:
    if height == 0:
        return store.genesis.digest
    for at, digest, _ in store.blocks(height):
        return bytes(digest) if at == height else b""
    return b""


# --- DFL ---------------------------------------------------------------------------------------


def _check_dfl_block(run: _Run, node: str, block: pb.Block, owner: bytes, *, crypto: bool) -> None:
    height = block.body.height
    for tx in block.body.transactions:
        _check_transaction(run, node, height, owner, tx, crypto=crypto)
    _check_confirmations(run, node, block, crypto=crypto)


def _check_transaction(
    run: _Run, node: str, height: int, owner: bytes, tx: pb.Transaction, *, crypto: bool
) -> None:
    fail = _failure(node, height, "transaction", tx.digest)
    generator = tx.body.generator.address
    if generator != owner:
        raise fail(
            "transaction-belongs",
            f"generated by {run.label(generator)}: a block holds only its creator's own "
            "transactions",
        )
    if crypto:
        _signed(tx, tx.body.generator, "transaction", fail)
    if tx.digest in run.transactions:
        raise fail(
            "transaction-once", "also in {} at height {}".format(*run.transactions[tx.digest])
        )
    run.transactions[tx.digest] = (node, height)
    creators: set[bytes] = set()
    for receipt in tx.receipts:
        _check_receipt(run, node, height, tx, receipt, creators, crypto=crypto)


def _check_receipt(
    run: _Run,
    node: str,
    height: int,
    tx: pb.Transaction,
    receipt: pb.Receipt,
    creators: set[bytes],
    *,
    crypto: bool,
) -> None:
    fail = _signed_by_creator(receipt, node, height, "receipt", crypto=crypto)
    body = receipt.body
    if body.transaction_digest != tx.digest:
        raise fail(
            "receipt-transaction",
            f"names transaction {short(body.transaction_digest)}, "
            f"is attached to {short(tx.digest)}",
        )
    creator = run.name_of(body.creator.address)
    if creator is None:
        raise fail(
            "receipt-creator", f"written by {run.label(body.creator.address)}, no node of the run"
        )
    if creator == node:
        raise fail("receipt-creator", f"written by the generator {node} itself")
    hops = tx.body.ttl - body.received_at_ttl
    if not 1 <= hops <= tx.body.ttl:
        raise fail(
            "receipt-ttl",
            f"received_at_ttl {body.received_at_ttl} of a transaction of ttl {tx.body.ttl}",
        )
    distance = run.distance(node, creator)
    if distance is None or distance > hops:
        where = "not connected to it" if distance is None else f"{distance} hops away"
        raise fail(
            "receipt-distance",
            f"received_at_ttl {body.received_at_ttl} of ttl {tx.body.ttl} puts its creator "
            f"{creator} {hops} hop(s) from the generator {node}, but {creator} is {where} in "
            "the topology",
        )
    if body.creator.address in creators:
        raise fail("receipt-once", f"a second receipt of {creator} for one transaction")
    creators.add(body.creator.address)
    if receipt.digest in run.receipts:
        raise fail("receipt-once", "also in {} at height {}".format(*run.receipts[receipt.digest]))
    run.receipts[receipt.digest] = (node, height)


def _check_confirmations(run: _Run, node: str, block: pb.Block, *, crypto: bool) -> None:
    height = block.body.height
    writers = {
        receipt.body.creator.address for tx in block.body.transactions for receipt in tx.receipts
    }
    for confirmation in block.finalization.confirmations:
        fail = _signed_by_creator(confirmation, node, height, "confirmation", crypto=crypto)
        body = confirmation.body
        if body.block_digest != block.digest:
            raise fail(
                "confirmation-block",
                f"is for block {short(body.block_digest)}, not this draft {short(block.digest)}",
            )
        signer = run.label(body.creator.address)
        receipt = find_receipt(block, body.transaction_digest, body.receipt_digest)
        if receipt is None:
            raise fail(
                "confirmation-signer",
                f"signed by {signer}, names receipt {short(body.receipt_digest)}, "
                "which is not in the block",
            )
        if receipt.body.creator.address != body.creator.address:
            wrote = "" if body.creator.address in writers else ", who wrote no receipt in the block"
            raise fail(
                "confirmation-signer",
                f"signed by {signer}{wrote}; receipt {short(receipt.digest)} was written by "
                f"{run.label(receipt.body.creator.address)}",
            )
        name = run.name_of(body.creator.address)
        if name is None or run.distance(node, name) != 1:
            raise fail(
                "confirmation-neighbour",
                f"signed by {signer}, not a neighbour of {node} (only they receive its drafts)",
            )
        where = run.confirmed.get(body.receipt_digest)
        if where is not None:
            raise fail(
                "confirmation-once",
                f"receipt {short(body.receipt_digest)} is confirmed already, in {where[0]} at "
                f"height {where[1]}",
            )
        run.confirmed[body.receipt_digest] = (node, height)


def _failure(node: str, height: int, what: str, digest: bytes) -> Failure:
    """The Inconsistency of one record, bound to where it is, so each check names only the rule
    it breaks and why."""

    def fail(rule: str, detail: str) -> Inconsistency:
        return Inconsistency(node, height, what, digest, rule, detail)

    return fail


def _signed_by_creator(
    record: pb.Receipt | pb.BlockConfirmation, node: str, height: int, what: str, *, crypto: bool
) -> Failure:
    """The record's Failure, once its signature by its body's creator holds (when `crypto`):
    receipts and confirmations are both signed by the node their body names, and that is
    checked before any rule that reads the body."""
    fail = _failure(node, height, what, record.digest)
    if crypto:
        _signed(record, record.body.creator, what, fail)
    return fail


def _signed(record: Message, signer: pb.NodeInfo, what: str, fail: Failure) -> None:
    """check_signed, its refusal turned into this record's Inconsistency (rule `signature`)."""
    try:
        check_signed(record, signer, what)
    except RecordRejected as error:
        raise fail("signature", f"{error.reason.label}: {error.detail}") from None


# --- BLADE-FL ----------------------------------------------------------------------------------


def _check_pow_block(
    run: _Run, node: str, block: pb.PowBlock, policy: ValidationPolicy, *, crypto: bool
) -> None:
    height = block.header.height
    if run.name_of(block.miner.address) is None:
        raise Inconsistency(
            node,
            height,
            "block",
            block.hash,
            "miner",
            f"mined by {run.label(block.miner.address)}",
        )
    for tx in block.transactions:
        generator = tx.body.generator.address
        if run.name_of(generator) is None:
            raise Inconsistency(
                node,
                height,
                "transaction",
                tx.digest,
                "model-generator",
                f"a model of {run.label(generator)}",
            )
        if crypto:
            try:
                validate_pool_model(tx, policy, weights="absent")
            except RecordRejected as error:
                raise Inconsistency(
                    node,
                    height,
                    "transaction",
                    tx.digest,
                    "signature",
                    f"{error.reason.label}: {error.detail}",
                ) from None


def _check_agreement(opened: Iterable[tuple[str, ChainStore]]) -> None:
    """`chains-agree`: at each height, the chains whose head is above it hold one block."""
    chains = [(name, [bytes(digest) for _, digest, _ in store.blocks()]) for name, store in opened]
    top = max((len(hashes) for _, hashes in chains), default=0)
    for height in range(1, top + 1):
        above = [(name, hashes[height - 1]) for name, hashes in chains if len(hashes) > height]
        if not above:
            continue
        holder, expected = above[0]
        for name, digest in above[1:]:
            if digest != expected:
                raise Inconsistency(
                    name,
                    height,
                    "block",
                    digest,
                    "chains-agree",
                    f"{holder} holds block {short(expected)} at this height and both chains go "
                    "on above it (chains may differ only at the lower one's head)",
                )
