"""What each DFL node contributed, from the receipts its peers signed on its transactions.

The DFL paper's proof of contribution (sections 4-5) is the receipt: a peer that received a
model tests it on its own samples and signs the accuracy it measured. Receipts are the only
measurements of a model's worth that its generator cannot forge, and they are in the chains, so
everything here is computed from the chains alone.

A transaction sits in its generator's chain, and with ttl > 1 copies of it can reach other
chains: every transaction is counted once, by digest, and the receipts of all its copies are
merged by receipt digest. Confirmations are counted once by their digest as well.

The score (accuracy-weighted proof of contribution):

    q(t)      = max(0, mean over t's receipts of accuracy - chance)
    raw(n)    = sum of q(t) over the transactions t that n generated
    score(n)  = raw(n) / sum over nodes of raw   (0 for all when no model beat chance)

Why this rule: accuracy above chance is the information a model carries, since a model that
knows nothing (random weights, a constant guess) scores chance on any data, so a poisoned
model earns nothing however often it is sent, and a node that trained earns in proportion to
how much its models taught its peers. The mean over one transaction's receipts, not their sum,
keeps a node with more neighbours (more receipts per model) from out-scoring an equally useful
node with fewer. Summing over transactions rewards a node for the models it kept sending, as
the paper's contribution does. Shares make runs of different lengths comparable. A Shapley
value would need coalitions of models re-tested on data; the chains hold one measurement per
(model, peer), which is exactly what this rule needs and no more. `chance` is one over the
number of classes, the width of the genesis model's last layer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.contributions_run import RunChains
from proto.dfl.v1 import records_pb2 as pb

DEFAULT_BINS = 4


@dataclass(frozen=True)
class Measurement:
    """One receipt: a peer's accuracy on a model, and when (seconds from the run's first record)."""

    measurer: str
    accuracy: float
    time_s: float


@dataclass(frozen=True)
class ModelTransaction:
    """One transaction, counted once, with the receipts of every copy of it merged."""

    digest: bytes
    generator: str
    created_s: float
    receipts: tuple[Measurement, ...]

    def quality(self, chance: float) -> float:
        """q(t): the mean receipt accuracy above chance, 0 without receipts."""
        if not self.receipts:
            return 0.0
        return max(0.0, float(np.mean([r.accuracy for r in self.receipts])) - chance)


@dataclass(frozen=True)
class NodeContribution:
    node: str
    transactions: int
    receipts: int  # received on its transactions
    mean_accuracy: float | None  # over those receipts
    slope_per_minute: float | None  # least-squares trend of those receipts' accuracy
    bin_means: tuple[float | None, ...]  # mean receipt accuracy in each time bin
    confirmations: int  # given by the node, to other nodes' blocks
    raw_score: float
    score: float


@dataclass(frozen=True)
class DflContributions:
    nodes: tuple[NodeContribution, ...]  # ranked, the highest score first
    transactions: tuple[ModelTransaction, ...]
    chance: float
    bin_edges_s: tuple[float, ...]  # len(bins) + 1 edges
    duplicates: int  # copies of a transaction found in more than one chain

    def ranking(self) -> tuple[str, ...]:
        return tuple(n.node for n in self.nodes)


def chance_level(genesis: pb.Genesis) -> float:
    """One over the number of classes: the width of the model's last layer."""
    if not genesis.body.layers or not genesis.body.layers[-1].shape:
        return 0.0
    return 1.0 / genesis.body.layers[-1].shape[0]


def _blocks(chains: RunChains) -> Iterable[pb.Block]:
    for store in chains.stores.values():
        for height, _, _ in store.blocks():
            block = store.block(height)
            assert isinstance(block, pb.Block)
            yield block


def collect(chains: RunChains) -> tuple[list[ModelTransaction], Counter[str], int]:
    """Every transaction once, with merged receipts; confirmations given per node; duplicates."""
    receipts: dict[bytes, dict[bytes, pb.Receipt]] = {}
    bodies: dict[bytes, pb.TransactionBody] = {}
    confirmations: dict[bytes, str] = {}
    duplicates = 0
    for block in _blocks(chains):
        for tx in block.body.transactions:
            if tx.digest in bodies:
                duplicates += 1
            bodies.setdefault(tx.digest, tx.body)
            merged = receipts.setdefault(tx.digest, {})
            for receipt in tx.receipts:
                merged.setdefault(receipt.digest, receipt)
        for confirmation in block.finalization.confirmations:
            confirmations[confirmation.digest] = chains.name_of(confirmation.body.creator.address)
    start_ms = min((b.create_time_ms for b in bodies.values()), default=0)
    transactions = [
        ModelTransaction(
            digest=digest,
            generator=chains.name_of(body.generator.address),
            created_s=(body.create_time_ms - start_ms) / 1000.0,
            receipts=tuple(
                Measurement(
                    measurer=chains.name_of(r.body.creator.address),
                    accuracy=float(r.body.accuracy),
                    time_s=(r.body.create_time_ms - start_ms) / 1000.0,
                )
                for r in sorted(receipts[digest].values(), key=lambda r: r.body.create_time_ms)
            ),
        )
        for digest, body in sorted(bodies.items(), key=lambda item: item[1].create_time_ms)
    ]
    return transactions, Counter(confirmations.values()), duplicates


def slope_per_minute(points: Sequence[Measurement]) -> float | None:
    """Least-squares slope of accuracy against time, per minute; None without two instants."""
    times = np.array([p.time_s / 60.0 for p in points])
    if len(points) < 2 or np.ptp(times) == 0:
        return None
    return float(np.polyfit(times, [p.accuracy for p in points], 1)[0])


def bin_edges(transactions: Sequence[ModelTransaction], bins: int) -> tuple[float, ...]:
    """`bins` equal spans of the receipts' times (one span when they all share an instant)."""
    times = [r.time_s for t in transactions for r in t.receipts]
    low, high = (min(times), max(times)) if times else (0.0, 0.0)
    if high <= low:
        high = low + 1.0
    return tuple(float(edge) for edge in np.linspace(low, high, bins + 1))


def _bin_index(time_s: float, edges: Sequence[float]) -> int:
    """The bin a time falls in; the last edge belongs to the last bin."""
    index = int(np.searchsorted(edges, time_s, side="right")) - 1
    return min(max(index, 0), len(edges) - 2)


def _bin_means(points: Sequence[Measurement], edges: Sequence[float]) -> tuple[float | None, ...]:
    sums = [[] for _ in range(len(edges) - 1)]  # type: list[list[float]]
    for point in points:
        sums[_bin_index(point.time_s, edges)].append(point.accuracy)
    return tuple(float(np.mean(values)) if values else None for values in sums)


def compute(chains: RunChains, *, bins: int = DEFAULT_BINS) -> DflContributions:
    """Each node's figures and score, ranked (ties: higher mean accuracy, then name)."""
    transactions, confirmations, duplicates = collect(chains)
    chance = chance_level(chains.genesis)
    edges = bin_edges(transactions, bins)
    names = list(chains.nodes) + sorted(
        {t.generator for t in transactions} - set(chains.nodes)
    )  # a generator that left no chain of its own still gets its row
    raw = {name: 0.0 for name in names}
    for transaction in transactions:
        raw[transaction.generator] += transaction.quality(chance)
    total = sum(raw.values())
    rows = []
    for name in names:
        own = [t for t in transactions if t.generator == name]
        points = [r for t in own for r in t.receipts]
        rows.append(
            NodeContribution(
                node=name,
                transactions=len(own),
                receipts=len(points),
                mean_accuracy=float(np.mean([p.accuracy for p in points])) if points else None,
                slope_per_minute=slope_per_minute(points),
                bin_means=_bin_means(points, edges),
                confirmations=confirmations.get(name, 0),
                raw_score=raw[name],
                score=raw[name] / total if total > 0 else 0.0,
            )
        )
    rows.sort(key=lambda r: (-r.score, -(r.mean_accuracy or 0.0), r.node))
    return DflContributions(tuple(rows), tuple(transactions), chance, edges, duplicates)


def accuracy_matrix(
    result: DflContributions, nodes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(mean accuracy, receipt count), row: the generator, column: the peer that measured it;
    NaN where a peer never measured that generator's models."""
    index = {name: i for i, name in enumerate(nodes)}
    sums = np.zeros((len(nodes), len(nodes)))
    counts = np.zeros((len(nodes), len(nodes)), dtype=np.int64)
    for transaction in result.transactions:
        for receipt in transaction.receipts:
            if transaction.generator in index and receipt.measurer in index:
                row, column = index[transaction.generator], index[receipt.measurer]
                sums[row, column] += receipt.accuracy
                counts[row, column] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, counts


def score_over_time(result: DflContributions) -> Mapping[str, tuple[float, ...]]:
    """Each node's share of the score earned up to the end of each time bin (a transaction
    earns at its last receipt): how the ranking formed over the run."""
    edges = result.bin_edges_s
    earned = {n.node: [0.0] * (len(edges) - 1) for n in result.nodes}
    for transaction in result.transactions:
        if transaction.receipts:
            when = _bin_index(transaction.receipts[-1].time_s, edges)
            earned[transaction.generator][when] += transaction.quality(result.chance)
    cumulative = {name: np.cumsum(values) for name, values in earned.items()}
    totals = np.sum(list(cumulative.values()), axis=0) if cumulative else np.zeros(0)
    return {
        name: tuple(float(v / t) if t > 0 else 0.0 for v, t in zip(values, totals, strict=True))
        for name, values in cumulative.items()
    }
