"""The orchestrator's own measure of every node: its current model on the common test set.

The paper measures each node on its own recent samples, which flatters a node that only sees two
labels; a fixed test set (the same samples for every node and every measurement) is the fair
comparison, and the report shows both.
"""

from __future__ import annotations

import numpy as np

from node import seeds
from node.learning.codec import decode_f32le, layer_shapes
from node.learning.training import Learner
from orchestrator.datasets import Dataset


class TestSetEvaluator:
    __test__ = False  # not a pytest class, despite the name

    def __init__(self, model: str, dataset: Dataset, samples: int, seed: int = 0) -> None:
        rng = seeds.stream(seed, seeds.Purpose.TEST_SET)
        count = min(samples, len(dataset.test_labels))
        index = rng.choice(len(dataset.test_labels), count, replace=False)
        self.images = dataset.test_images[index]
        self.labels = dataset.test_labels[index].astype(np.int64)
        self.learner = Learner(model, seed=0, test_batch_size=500)
        self.shapes = layer_shapes(self.learner.module)

    def accuracy(self, weights: bytes) -> float:
        flat = decode_f32le(weights, self.shapes)
        return self.learner.accuracy_of(flat, self.images, self.labels)
