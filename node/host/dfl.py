"""The ML a DFL node does for its engine, in a node process and in the simulator alike.

The engine asks (Train, Evaluate, Aggregate) and this class answers. It holds the node's
behaviour too: what an attacker trains on and what it sends are decided here, out of the
protocol's sight, as a real attacker's would be. Every input the aggregator sees is decided
here, once: the received models with our accuracy for them, generators as hex addresses,
`self_accuracy` as the node's current model on a fresh test sample of its own (NaN for a rule
that declares it never reads it: node/learning/aggregation.py), and for a lazy node the peers'
models it may copy.

A runtime chooses two things only: where samples come from (`SampleSource`: injection in a node,
the partition's streams in the simulator) and what runs a model on test samples (`ModelTester`:
the host's own scratch model, or the simulator's shared evaluator).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from node import seeds
from node.host.checkpoint import Checkpoint, SavedModel
from node.host.genesis import initial_learner
from node.host.samples import SampleLog, SampleSource
from node.learning.aggregation import CheckedAggregator, ReceivedModel
from node.learning.behaviours import Behaviour
from node.learning.codec import encode_f32le, layer_shapes, view_f32le
from node.protocol.events import BufferedModel, ModelBytes

PEER_MODELS_KEPT = 8  # what a lazy node may copy from: the latest models it tested


class ModelTester(Protocol):
    """Accuracy of flat float32 weights on uint8 images."""

    def accuracy_of(self, weights: np.ndarray, images: np.ndarray, labels: np.ndarray) -> float: ...


class DflHost:
    """One node's model, samples, aggregator and behaviour. Thread-safe for one ML worker."""

    def __init__(
        self,
        *,
        model: str,
        seed: int,
        index: int,
        aggregator: CheckedAggregator,
        behaviour: Behaviour,
        samples: SampleSource,
        test_batch: int = 100,
        tester: ModelTester | None = None,
        track_local_accuracy: bool = True,
    ) -> None:
        self.learner = initial_learner(model, seed, test_batch)
        self.shapes = layer_shapes(self.learner.module)
        self.aggregator = aggregator
        self.behaviour = behaviour
        self.samples = samples
        self.test_batch = test_batch
        self.tester: ModelTester = tester or self.learner  # its scratch model, ours untouched
        self.track_local_accuracy = track_local_accuracy  # the simulator records its own
        self.reputation: dict[str, float] = {}
        self.local_accuracy: float | None = None
        self.sample_log = SampleLog()
        self._rng = seeds.stream(seed, seeds.Purpose.BEHAVIOUR, index)
        # only a behaviour that copies peers needs them (about 14 MB for 8 LeNets)
        kept = PEER_MODELS_KEPT if behaviour.copies_peers else 0
        self._peer_models: deque[np.ndarray] = deque(maxlen=kept)

    def train(self, batch_size: int) -> bytes:
        """One SGD step (unless the behaviour skips it), then the model the behaviour sends."""
        images, labels = self.samples.training_batch(batch_size)
        self.sample_log.record(images, labels)
        if self.behaviour.trains:
            images, labels = self.behaviour.batch(images, labels, self._rng)
            self.learner.train_step(images, labels)
        current = self.learner.weights()
        if self.track_local_accuracy:
            self.local_accuracy = self._test(current)
        outgoing = self.behaviour.outgoing(current, self._rng, peer_models=self.peer_models)
        return encode_f32le(outgoing)

    def evaluate(self, model: ModelBytes) -> float:
        """The engine checked the weights (node/ledger/validation.py) before asking: read them
        in place."""
        weights = view_f32le(model, self.shapes)
        self._peer_models.append(weights)
        return self._test(weights)

    def aggregate(self, models: Sequence[BufferedModel]) -> dict[str, float]:
        """Merges the models into ours; returns a copy of the reputations after the merge (the
        worker thread's own: the node reads it on its event loop while the next merge runs)."""
        received = [
            ReceivedModel(view_f32le(m.model, self.shapes), m.accuracy, m.generator.hex())
            for m in models
        ]
        current = self.learner.weights()
        reads = self.aggregator.reads_self_accuracy
        self_accuracy = self._test(current) if reads else float("nan")
        updated = self.aggregator.update_model(current, self_accuracy, received, self.reputation)
        self.learner.set_weights(updated)
        return dict(self.reputation)

    @property
    def peer_models(self) -> tuple[np.ndarray, ...]:
        """The latest models this node tested, which a copying behaviour may send as its own."""
        return tuple(self._peer_models)

    def weights(self) -> bytes:
        return encode_f32le(self.learner.weights())

    def resume(self, weights: np.ndarray, iteration: int = 0) -> None:
        """Continues from a saved model (node/host/checkpoint.py) instead of the initial one,
        the learning-rate schedule at `iteration` steps. Called before any ML work, once the
        genesis has been built from the initial model. Momentum is not saved: it restarts from
        zero, a transient of a few steps."""
        self.learner.set_weights(weights)
        self.learner.solver.iteration = iteration

    def save(self, checkpoint: Checkpoint, reason: str, height: int) -> float:
        """Writes the current model to `checkpoint` (on the ML thread, or once it has
        stopped); returns the seconds it took. What `resume_from` reads back."""
        return checkpoint.save(
            self.learner.weights(),
            reason=reason,
            height=height,
            solver_iteration=self.learner.solver.iteration,
        )

    def resume_from(self, saved: SavedModel) -> None:
        """Continues from what `save` wrote."""
        self.resume(saved.weights, int(saved.metadata.get("solver_iteration", "0")))

    def _test(self, weights: np.ndarray) -> float:
        return self.tester.accuracy_of(weights, *self.samples.test_sample(self.test_batch))
