"""How the training data is spread over the nodes: one label distribution per node, then samples.

A partition is described by per-node label weights (a nodes x classes matrix whose rows sum to 1):

- `iid`: every node sees the dataset's own label frequencies, i.e. samples uniformly from it;
- `dirichlet:ALPHA`: each row drawn from a symmetric Dirichlet(alpha) (the original's tool draws
  Gamma(alpha, .) per label and normalises, which is the same distribution);
- `labels:N`: node k gets labels k, k+1, ..., k+N-1 (mod 10) in equal parts (the paper's
  "1node2labels" is labels:2);
- explicit weights: per node, a weight or a [min, max] range per label, as the original
  simulator's `non_iid_distribution` (a range is drawn uniformly once); labels a node leaves
  out get `unset` (0 by default; the original simulator's `ml_non_iid_normal_weight` is [10, 15]).

From the weights, the data reaches a node in one of two ways, both seeded:

- a stream (`SampleStream`): the DFL injector draws each sample at random from the node's
  distribution (a label by weight, then an image of that label), with replacement; the sequence
  does not depend on the sizes of the draws, so the simulator and a real run's injector hand a
  node the same samples in the same order;
- fixed local datasets (`local_datasets`): BLADE-FL's |D_i| samples per client, disjoint across
  clients, label counts drawn from each client's weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from node import seeds
from node.seeds import Purpose

NUM_CLASSES = 10
# Samples a stream takes from its generator at a time, whatever a caller asks for; changing it
# changes every stream's samples.
BLOCK = 1024

LabelWeight = float | tuple[float, float] | Sequence[float]


@dataclass(frozen=True)
class PartitionSpec:
    """A partition by kind: iid, dirichlet (alpha), labels (per_node), or weights (explicit)."""

    kind: str
    alpha: float = 1.0
    per_node: int = 2
    weights: Sequence[Mapping[int, LabelWeight] | Sequence[float]] = field(default_factory=tuple)
    unset: LabelWeight = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("iid", "dirichlet", "labels", "weights"):
            raise ValueError(f"unknown partition kind {self.kind!r}")
        if self.kind == "dirichlet" and not self.alpha > 0:
            raise ValueError(f"Dirichlet alpha must be positive, got {self.alpha}")
        if self.kind == "labels" and not 1 <= self.per_node <= NUM_CLASSES:
            raise ValueError(f"labels per node must be 1..{NUM_CLASSES}, got {self.per_node}")
        if self.kind == "weights" and not self.weights:
            raise ValueError("explicit weights need at least one node's weights")


def parse_partition(text: str) -> PartitionSpec:
    """`iid`, `dirichlet:0.1` or `labels:2` (explicit weights come from the experiment file)."""
    kind, _, argument = text.strip().partition(":")
    try:
        if kind == "iid" and not argument:
            return PartitionSpec("iid")
        if kind == "dirichlet":
            return PartitionSpec("dirichlet", alpha=float(argument))
        if kind == "labels":
            return PartitionSpec("labels", per_node=int(argument))
    except ValueError as exc:
        raise ValueError(f"bad partition {text!r}: {exc}") from None
    raise ValueError(f"bad partition {text!r}; expected iid, dirichlet:ALPHA or labels:N")


def _draw(weight: LabelWeight, rng: np.random.Generator) -> float:
    if isinstance(weight, Sequence):
        low, high = (float(w) for w in weight)
        return float(rng.uniform(low, high))
    return float(weight)


def _explicit_row(
    entry: Mapping[int, LabelWeight] | Sequence[float],
    unset: LabelWeight,
    rng: np.random.Generator,
) -> np.ndarray:
    given = dict(entry.items() if isinstance(entry, Mapping) else enumerate(entry))
    if any(not 0 <= int(label) < NUM_CLASSES for label in given):
        raise ValueError(f"labels outside 0..{NUM_CLASSES - 1} in {entry}")
    row = np.array([_draw(given.get(label, unset), rng) for label in range(NUM_CLASSES)])
    if (row < 0).any() or row.sum() <= 0:
        raise ValueError(f"label weights must be non-negative with a positive sum: {entry}")
    return row


def label_weights(
    spec: PartitionSpec,
    num_nodes: int,
    seed: int,
    class_frequencies: np.ndarray | None = None,
) -> np.ndarray:
    """The nodes x classes matrix of label probabilities (rows sum to 1).

    `class_frequencies` (the dataset's label histogram) is what `iid` means; without it iid is
    uniform over labels. Explicit weights repeat cyclically when there are more nodes than rows.
    """
    rng = seeds.stream(seed, Purpose.LABEL_WEIGHTS)
    if spec.kind == "iid":
        base = np.ones(NUM_CLASSES) if class_frequencies is None else class_frequencies
        rows = np.tile(np.asarray(base, dtype=np.float64), (num_nodes, 1))
    elif spec.kind == "dirichlet":
        rows = rng.dirichlet(np.full(NUM_CLASSES, spec.alpha), size=num_nodes)
    elif spec.kind == "labels":
        rows = np.zeros((num_nodes, NUM_CLASSES))
        for k in range(num_nodes):
            rows[k, [(k + j) % NUM_CLASSES for j in range(spec.per_node)]] = 1.0
    else:
        rows = np.stack(
            [
                _explicit_row(spec.weights[k % len(spec.weights)], spec.unset, rng)
                for k in range(num_nodes)
            ]
        )
    return rows / rows.sum(axis=1, keepdims=True)


class _ByLabel:
    """Sample indices grouped by label, for drawing "an image of label c" in O(1)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.order = np.argsort(labels, kind="stable")
        self.counts = np.bincount(labels, minlength=NUM_CLASSES)[:NUM_CLASSES]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])


class SampleStream:
    """A node's endless supply of training samples, drawn at random from its label weights.

    The generator is consumed in blocks of BLOCK samples, so the sequence is the stream's own:
    `draw(a)` then `draw(b)` gives exactly the first a + b samples that one `draw(a + b)` would.
    Without that, the simulator (batches of 64) and an injector (batches of whatever it sends)
    would train the same node on different samples.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.images = images
        self.labels = labels
        self.index = _ByLabel(labels)
        missing = (weights > 0) & (self.index.counts == 0)
        if missing.any():
            raise ValueError(f"labels {np.flatnonzero(missing).tolist()} have weight but no data")
        self.weights = weights
        self.rng = rng
        self._pending = np.empty(0, dtype=np.int64)  # drawn from the generator, not handed out

    def _block(self) -> np.ndarray:
        """The next BLOCK indices: a label by weight, then a uniform sample of that label."""
        chosen = self.rng.choice(NUM_CLASSES, size=BLOCK, p=self.weights)
        offsets = self.rng.integers(0, self.index.counts[chosen])
        return self.index.order[self.index.starts[chosen] + offsets]

    def draw_indices(self, n: int) -> np.ndarray:
        """Indices of the next `n` samples of the stream."""
        if n < 0:
            raise ValueError(f"cannot draw {n} samples")
        missing = n - len(self._pending)
        if missing > 0:
            blocks = [self._block() for _ in range(-(-missing // BLOCK))]
            self._pending = np.concatenate([self._pending, *blocks])
        picks, self._pending = self._pending[:n], self._pending[n:]
        return picks

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        picks = self.draw_indices(n)
        return self.images[picks], self.labels[picks]


@dataclass(frozen=True)
class Partition:
    """A spec applied to a dataset's training labels for a number of nodes under one seed."""

    spec: PartitionSpec
    weights: np.ndarray  # nodes x classes
    seed: int

    @classmethod
    def build(cls, spec: PartitionSpec, num_nodes: int, labels: np.ndarray, seed: int) -> Partition:
        """The partition of `labels` for `num_nodes` nodes under `seed`.

        It takes the parsed spec (`ExperimentSpec.partition()`), never the text, so that one
        experiment has one parse of its distribution.
        """
        if not isinstance(spec, PartitionSpec):
            raise TypeError(
                f"Partition.build takes a PartitionSpec (spec.partition()), not {spec!r}"
            )
        frequencies = np.bincount(labels, minlength=NUM_CLASSES)[:NUM_CLASSES].astype(np.float64)
        return cls(spec, label_weights(spec, num_nodes, seed, frequencies), seed)

    @property
    def num_nodes(self) -> int:
        return len(self.weights)

    def stream(self, node: int, images: np.ndarray, labels: np.ndarray) -> SampleStream:
        """Node `node`'s sample stream; independent of every other node's."""
        rng = seeds.stream(self.seed, Purpose.TRAIN_STREAM, node)
        return SampleStream(images, labels, self.weights[node], rng)

    def local_datasets(self, labels: np.ndarray, size: int) -> list[np.ndarray]:
        """Per node, `size` sample indices, disjoint across nodes, labels by the node's weights.

        Label counts are a multinomial draw from the node's weights; samples of each label are
        handed out without replacement from one shuffled pool, so no two nodes share a sample.
        """
        rng = seeds.stream(self.seed, Purpose.LOCAL_DATASETS)
        index = _ByLabel(labels)
        pools = [
            rng.permutation(index.order[index.starts[c] : index.starts[c] + index.counts[c]])
            for c in range(NUM_CLASSES)
        ]
        taken = np.zeros(NUM_CLASSES, dtype=np.int64)
        out = []
        for node in range(self.num_nodes):
            counts = rng.multinomial(size, self.weights[node])
            if (taken + counts > index.counts).any():
                label = int(np.flatnonzero(taken + counts > index.counts)[0])
                raise ValueError(
                    f"not enough samples of label {label} for {self.num_nodes} nodes x {size}"
                )
            parts = [pools[c][taken[c] : taken[c] + counts[c]] for c in range(NUM_CLASSES)]
            taken += counts
            out.append(rng.permutation(np.concatenate(parts)))
        return out
