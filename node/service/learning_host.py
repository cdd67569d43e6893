"""The ML a DFL node does for its engine: collect samples, train, evaluate, aggregate.

The engine asks (Train, Evaluate, Aggregate) and this class answers, on one worker thread of
the node so the gRPC loop never waits on torch. It holds the node's behaviour too: what an
attacker trains on and what it sends are decided here, out of the protocol's sight, as a real
attacker's would be.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from node.learning.aggregation import CheckedAggregator, ReceivedModel
from node.learning.behaviours import Behaviour
from node.learning.codec import decode_f32le, encode_f32le, layer_shapes
from node.learning.training import Learner
from node.ledger import records
from node.protocol.dfl import BufferedModel
from proto.dfl.v1 import records_pb2 as pb


def experiment_genesis(
    model: str,
    seed: int,
    learner: Learner,
    *,
    protocol: str = "dfl",
    extra: Mapping[str, object] | None = None,
) -> pb.Genesis:
    """The genesis every node of an experiment derives alike: model, solver, seed, and `extra`
    protocol parameters (BLADE-FL's difficulty and rounds), so nodes that disagree on any of
    them refuse each other's records."""
    solver = learner.solver_config
    hyperparameters: dict[str, object] = {
        name: getattr(solver, name) for name in sorted(type(solver).__dataclass_fields__)
    }
    hyperparameters.update(extra or {})
    return records.make_genesis(
        protocol=protocol,
        model_architecture=model,
        layers=layer_shapes(learner.module),
        hyperparameters=hyperparameters,
        seed=seed,
    )


class DflLearningHost:
    """One node's model, samples, aggregator and behaviour. Thread-safe for one ML worker."""

    def __init__(
        self,
        *,
        model: str,
        seed: int,
        node_seed: int,
        aggregator: CheckedAggregator,
        behaviour: Behaviour,
        test_batch: int = 100,
        sample_memory: int = 20_000,
    ) -> None:
        self.learner = Learner(model, seed=seed, test_batch_size=test_batch)
        self.genesis = experiment_genesis(model, seed, self.learner)
        self.shapes = layer_shapes(self.learner.module)
        self.aggregator = aggregator
        self.behaviour = behaviour
        self.test_batch = test_batch
        self.reputation: dict[str, float] = {}
        self.local_accuracy: float | None = None
        self._rng = np.random.default_rng(node_seed)
        self._lock = threading.Lock()
        self._pending: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._memory_images = np.zeros((sample_memory, 28, 28), dtype=np.uint8)
        self._memory_labels = np.zeros(sample_memory, dtype=np.int64)
        self._memory_size = 0
        self._memory_next = 0
        self._peer_models: deque[np.ndarray] = deque(maxlen=8)

    def collect(self, images: np.ndarray, labels: np.ndarray) -> None:
        """New samples: queued for training and remembered for evaluation."""
        with self._lock:
            self._pending.append((images, labels))
            capacity = len(self._memory_labels)
            for start in range(0, len(labels), capacity):
                chunk = slice(start, min(start + capacity, len(labels)))
                count = chunk.stop - chunk.start
                index = (self._memory_next + np.arange(count)) % capacity
                self._memory_images[index] = images[chunk]
                self._memory_labels[index] = labels[chunk]
                self._memory_next = (self._memory_next + count) % capacity
                self._memory_size = min(capacity, self._memory_size + count)

    def _take_batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            images, labels, taken = [], [], 0
            while taken < size and self._pending:
                chunk_images, chunk_labels = self._pending.popleft()
                need = size - taken
                if len(chunk_labels) > need:
                    self._pending.appendleft((chunk_images[need:], chunk_labels[need:]))
                    chunk_images, chunk_labels = chunk_images[:need], chunk_labels[:need]
                images.append(chunk_images)
                labels.append(chunk_labels)
                taken += len(chunk_labels)
        if taken < size:
            raise RuntimeError(f"asked to train on {size} samples, {taken} collected")
        return np.concatenate(images), np.concatenate(labels)

    def _test_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """The paper's local test set: random samples from everything received so far."""
        with self._lock:
            size = self._memory_size
            if size == 0:
                raise RuntimeError("no samples collected yet to evaluate on")
            index = self._rng.choice(size, min(self.test_batch, size), replace=False)
            return self._memory_images[index].copy(), self._memory_labels[index].copy()

    def train(self, batch_size: int) -> bytes:
        """One SGD step (unless the behaviour skips it), then the model the behaviour sends."""
        images, labels = self._take_batch(batch_size)
        if self.behaviour.trains:
            images, labels = self.behaviour.batch(images, labels, self._rng)
            self.learner.train_step(images, labels)
        self.local_accuracy = self.learner.accuracy(*self._test_sample())
        outgoing = self.behaviour.outgoing(
            self.learner.weights(), self._rng, peer_models=tuple(self._peer_models)
        )
        return encode_f32le(outgoing)

    def evaluate(self, model: bytes) -> float:
        weights = decode_f32le(model, self.shapes)
        self._peer_models.append(weights)
        return self.learner.accuracy_of(weights, *self._test_sample())

    def aggregate(self, models: Sequence[BufferedModel]) -> None:
        received = [
            ReceivedModel(decode_f32le(m.model, self.shapes), m.accuracy, m.generator.hex())
            for m in models
        ]
        self_accuracy = self.learner.accuracy(*self._test_sample())
        current = self.learner.weights()
        updated = self.aggregator.update_model(current, self_accuracy, received, self.reputation)
        self.learner.set_weights(updated)

    def weights(self) -> bytes:
        return encode_f32le(self.learner.weights())
