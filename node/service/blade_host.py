"""The ML a BLADE-FL client does for its engine: a fixed local dataset, local epochs, FedAvg.

The client keeps the first |D_i| samples it is given as its local dataset (the paper's clients
train on a fixed dataset every round) and the later ones, up to `holdout`, as its own test
shard, on which it measures the global model after each block. Lazy clients never train: they
copy a peer's model of the round and add Gaussian noise (node/learning/behaviours.py: Lazy).

Every client can see plagiarism in the block it aggregates, so it measures it. For each model
w_i with update u_i (w_i minus the previous global model) the nearest peer j is the one with the
largest copy coefficient <u_i, u_j> / |u_j|^2, which is 1 when u_i holds all of u_j, however much
noise was added on top (the noise is independent of u_j). For that pair it reports the cosine
similarity of the models and of the updates, and the spread of w_i - w_j, which for a noisy copy
is the noise's own standard deviation (sigma) and for honest clients is far smaller.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from node.learning.behaviours import Behaviour
from node.learning.codec import decode_f32le, encode_f32le, layer_shapes
from node.learning.training import Learner, train_epochs
from node.ledger.pow import DIFFICULTY_PARAMETER
from node.protocol.blade import PoolModel
from node.service.learning_host import experiment_genesis
from proto.dfl.v1 import records_pb2 as pb


@dataclass(frozen=True)
class Resemblance:
    """How much one model of a block looks like another client's model of the same block."""

    client: str  # hex address
    nearest: str  # the peer whose update it holds most of
    model_cosine: float
    update_cosine: float
    copy_coefficient: float
    difference_std: float


def resemblances(
    previous_global: np.ndarray, models: Sequence[tuple[str, np.ndarray]]
) -> list[Resemblance]:
    """For each model, its nearest peer by copy coefficient (needs two models or more)."""
    if len(models) < 2:
        return []
    names = [name for name, _ in models]
    weights = np.stack([w for _, w in models]).astype(np.float64)
    updates = weights - previous_global.astype(np.float64)
    gram = updates @ updates.T
    squares = np.clip(np.diag(gram), 1e-30, None)
    copy = gram / squares[np.newaxis, :]
    np.fill_diagonal(copy, -np.inf)
    model_norms = np.linalg.norm(weights, axis=1)
    out = []
    for i, name in enumerate(names):
        j = int(np.argmax(copy[i]))
        out.append(
            Resemblance(
                client=name,
                nearest=names[j],
                model_cosine=float(weights[i] @ weights[j] / (model_norms[i] * model_norms[j])),
                update_cosine=float(gram[i, j] / np.sqrt(squares[i] * squares[j])),
                copy_coefficient=float(copy[i, j]),
                difference_std=float(np.std(weights[i] - weights[j])),
            )
        )
    return out


class BladeLearningHost:
    """One client's dataset, global model and behaviour. Thread-safe for one ML worker."""

    def __init__(
        self,
        *,
        model: str,
        seed: int,
        node_seed: int,
        behaviour: Behaviour,
        dataset_size: int,
        batch_size: int,
        difficulty: float,
        rounds: int,
        local_iterations: int,
        test_batch: int = 100,
        holdout: int = 1000,
    ) -> None:
        self.learner = Learner(model, seed=seed, test_batch_size=test_batch)
        self.genesis: pb.Genesis = experiment_genesis(
            model,
            seed,
            self.learner,
            protocol="blade-fl",
            extra={
                DIFFICULTY_PARAMETER: difficulty,
                "rounds": rounds,
                "local_iterations": local_iterations,
                "dataset_size": dataset_size,
                "batch_size": batch_size,
            },
        )
        self.shapes = layer_shapes(self.learner.module)
        self.behaviour = behaviour
        self.batch_size = batch_size
        self.test_batch = test_batch
        self.local_accuracy: float | None = None
        self._global = self.learner.weights()
        self._rng = np.random.default_rng(node_seed)
        self._lock = threading.Lock()
        self._images = np.zeros((dataset_size, 28, 28), dtype=np.uint8)
        self._labels = np.zeros(dataset_size, dtype=np.int64)
        self._size = 0
        self._holdout_images = np.zeros((holdout, 28, 28), dtype=np.uint8)
        self._holdout_labels = np.zeros(holdout, dtype=np.int64)
        self._holdout_size = 0

    @property
    def dataset_size(self) -> int:
        return len(self._labels)

    def collect(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Fills the local dataset first, then the test shard; anything beyond is dropped."""
        with self._lock:
            taken = min(len(labels), self.dataset_size - self._size)
            self._images[self._size : self._size + taken] = images[:taken]
            self._labels[self._size : self._size + taken] = labels[:taken]
            self._size += taken
            rest = slice(taken, taken + len(self._holdout_labels) - self._holdout_size)
            count = len(labels[rest])
            end = self._holdout_size + count
            self._holdout_images[self._holdout_size : end] = images[rest]
            self._holdout_labels[self._holdout_size : end] = labels[rest]
            self._holdout_size = end

    def train_local(self, round: int, iterations: int) -> bytes:
        """`iterations` shuffled epochs over the local dataset, from the global model."""
        with self._lock:
            if self._size < self.dataset_size:
                raise RuntimeError(f"{self._size} of {self.dataset_size} local samples collected")
            images, labels = self._images.copy(), self._labels.copy()
        self.learner.set_weights(self._global)
        if self.behaviour.trains:
            images, labels = self.behaviour.batch(images, labels, self._rng)
            train_epochs(self.learner, images, labels, iterations, self.batch_size, self._rng)
        return encode_f32le(self.behaviour.outgoing(self.learner.weights(), self._rng))

    def plagiarize(self, round: int, models: Sequence[bytes]) -> bytes:
        """A lazy client's model: a random peer model of the round plus the behaviour's noise."""
        peers = tuple(decode_f32le(model, self.shapes) for model in models)
        return encode_f32le(self.behaviour.outgoing(self._global, self._rng, peer_models=peers))

    def aggregate_round(self, round: int, models: Sequence[PoolModel]) -> list[Resemblance]:
        """FedAvg of the block's models becomes the global model; returns their resemblances."""
        decoded = [(m.generator.hex(), decode_f32le(m.model, self.shapes)) for m in models]
        previous = self._global
        self._global = np.mean(np.stack([w for _, w in decoded]), axis=0).astype(np.float32)
        self.learner.set_weights(self._global)
        with self._lock:
            size = self._holdout_size
            images, labels = self._holdout_images[:size], self._holdout_labels[:size]
            if size == 0:  # no test shard yet: measure on the local dataset
                images, labels = self._images[: self._size], self._labels[: self._size]
            pick = self._rng.choice(len(labels), min(self.test_batch, len(labels)), replace=False)
            images, labels = images[pick].copy(), labels[pick].copy()
        if len(labels):
            self.local_accuracy = self.learner.accuracy(images, labels)
        return resemblances(previous, decoded)

    def weights(self) -> bytes:
        """The global model (what the block's models average to), not a half-trained local one."""
        return encode_f32le(self._global)
