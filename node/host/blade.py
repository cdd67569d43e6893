"""The ML a BLADE-FL client does for its engine: a fixed local dataset, local epochs, FedAvg.

One class for a client process and for the simulator. The client keeps the first |D_i| samples
it is given as its local dataset (the paper's clients train on a fixed dataset every round) and
the later ones, up to `holdout`, as its own test shard, on which it measures the global model
after each block. Every round starts from the global model with a fresh optimizer, as the
paper's code builds one per round. Lazy clients never train: they copy a peer's model of the
round and add Gaussian noise (node/learning/behaviours.py: Lazy).

A client that `measures` (a process, for its metrics and rounds.jsonl) also tests the global
model on its shard and sees plagiarism in each block (node/host/resemblance.py); the simulator
measures the global model on the whole test set itself and turns this off.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from node import seeds
from node.host.genesis import initial_learner
from node.host.resemblance import Resemblance, resemblances
from node.host.samples import SampleLog
from node.learning.behaviours import Behaviour
from node.learning.codec import decode_f32le, encode_f32le, layer_shapes
from node.learning.training import train_epochs
from node.protocol.events import PoolModel


def average_models(models: Sequence[np.ndarray]) -> np.ndarray:
    """FedAvg of a block's models, as every client computes its next global model: a float64
    mean cast to float32. A function of its own so that an audit of a chain (`dfl chain
    contributions`) derives each round's previous global model exactly as the clients did."""
    return np.stack(models).mean(axis=0, dtype=np.float64).astype(np.float32)


class BladeHost:
    """One client's dataset, global model and behaviour. Thread-safe for one ML worker."""

    def __init__(
        self,
        *,
        model: str,
        seed: int,
        index: int,
        behaviour: Behaviour,
        dataset_size: int,
        batch_size: int,
        test_batch: int = 100,
        holdout: int = 1000,
        measures: bool = True,
    ) -> None:
        self.learner = initial_learner(model, seed, test_batch)
        self.shapes = layer_shapes(self.learner.module)
        self.behaviour = behaviour
        self.batch_size = batch_size
        self.test_batch = test_batch
        self.measures = measures
        self.local_accuracy: float | None = None
        self.global_weights = self.learner.weights()
        self.sample_log = SampleLog()
        self._rng = seeds.stream(seed, seeds.Purpose.BEHAVIOUR, index)
        self._test_rng = seeds.stream(seed, seeds.Purpose.LOCAL_TEST, index)
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
            self.sample_log.record(images[:taken], labels[:taken])
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
        self.learner.set_weights(self.global_weights)
        self.learner.solver.reset()
        if self.behaviour.trains:
            images, labels = self.behaviour.batch(images, labels, self._rng)
            train_epochs(self.learner, images, labels, iterations, self.batch_size, self._rng)
        return encode_f32le(self.behaviour.outgoing(self.learner.weights(), self._rng))

    def plagiarize(self, round: int, models: Sequence[bytes]) -> bytes:
        """A lazy client's model: a random peer model of the round plus the behaviour's noise."""
        peers = tuple(decode_f32le(model, self.shapes) for model in models)
        outgoing = self.behaviour.outgoing(self.global_weights, self._rng, peer_models=peers)
        return encode_f32le(outgoing)

    def aggregate_round(self, round: int, models: Sequence[PoolModel]) -> list[Resemblance]:
        """FedAvg of the block's models becomes the global model; returns their resemblances."""
        decoded = [(m.generator.hex(), decode_f32le(m.model, self.shapes)) for m in models]
        previous = self.global_weights
        self.global_weights = average_models([w for _, w in decoded])
        self.learner.set_weights(self.global_weights)
        if not self.measures:
            return []
        self._measure_local_accuracy()
        return resemblances(previous, decoded)

    def _measure_local_accuracy(self) -> None:
        with self._lock:
            size = self._holdout_size
            images, labels = self._holdout_images[:size], self._holdout_labels[:size]
            if size == 0:  # no test shard yet: measure on the local dataset
                images, labels = self._images[: self._size], self._labels[: self._size]
            count = min(self.test_batch, len(labels))
            pick = self._test_rng.choice(len(labels), count, replace=False)
            images, labels = images[pick].copy(), labels[pick].copy()
        if len(labels):
            self.local_accuracy = self.learner.accuracy(images, labels)

    def weights(self) -> bytes:
        """The global model (what the block's models average to), not a half-trained local one."""
        return encode_f32le(self.global_weights)

    def resume(self, weights: np.ndarray) -> None:
        """Continues from a saved global model (node/host/checkpoint.py): the next round starts
        from it. Called before any ML work, once the genesis has been built from the initial one."""
        self.global_weights = np.array(weights, dtype=np.float32)
        self.learner.set_weights(self.global_weights)
