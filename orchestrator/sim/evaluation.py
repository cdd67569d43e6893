"""Testing models without copying their weights into a module: the simulator's hot loop.

In a DFL simulation nearly all the time goes into testing models: every receiver tests every
model it gets on 100 samples, and every node's model is tested for accuracy.csv. Every node's
host therefore tests through this one evaluator, and the weights are never copied into a
module: `functional_call` runs a shared module on views of each flat vector.

How a batch runs was chosen by measurement (`benchmarks/simulator.py` prints the figures):
the models go one after another through the shared module, whose LeNet keeps its activations
channels-last (about 9 ms a model for 100 samples on one core). Stacking the weights and running
`torch.func.vmap` over `functional_call` was slower (about 24 ms a model): vmap turns each
convolution into a grouped one, which oneDNN runs slower than a plain one, and it cannot keep
channels-last activations. Stacking BLADE-FL's MLP clients for training did not pay either: a
step of 20 stacked clients took 18 ms, one client 0.8-0.9 ms; the products are compute-bound.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from node.learning.models import build_model


@dataclass(frozen=True)
class Job:
    """One model to test: flat float32 weights, uint8 images and their labels."""

    weights: np.ndarray
    images: np.ndarray
    labels: np.ndarray


class BatchEvaluator:
    """Accuracy and loss of flat weight vectors for one architecture, leaving every node alone."""

    def __init__(self, model: str) -> None:
        self.module = build_model(model, seed=0)
        self.module.eval()
        self._shapes = [(name, p.shape, p.numel()) for name, p in self.module.named_parameters()]
        self.size = sum(n for _, _, n in self._shapes)
        self.evaluations = 0  # models tested, records included

    def _params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of `flat` shaped as the layers."""
        out, offset = {}, 0
        for name, shape, count in self._shapes:
            out[name] = flat[offset : offset + count].view(shape)
            offset += count
        return out

    def _flat(self, weights: np.ndarray) -> torch.Tensor:
        if weights.shape != (self.size,):
            raise ValueError(f"expected {self.size} weights, got shape {weights.shape}")
        with warnings.catch_warnings():
            # Received weights are read-only views of the message bytes; they are only read.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32))

    def _forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self._params(flat), (x,))

    def logits(self, jobs: Sequence[Job]) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [
                self._forward(
                    self._flat(job.weights),
                    self.module.prepare(torch.from_numpy(np.ascontiguousarray(job.images))),
                )
                for job in jobs
            ]

    def accuracy_of(self, weights: np.ndarray, images: np.ndarray, labels: np.ndarray) -> float:
        """One model: what a host asks (node/host/dfl.py: ModelTester)."""
        return self.accuracies([Job(weights, images, labels)])[0]

    def accuracies(self, jobs: Sequence[Job]) -> list[float]:
        self.evaluations += len(jobs)
        return [
            float((logits.argmax(dim=1) == torch.from_numpy(j.labels)).float().mean())
            for j, logits in zip(jobs, self.logits(jobs), strict=True)
        ]

    def losses(self, jobs: Sequence[Job]) -> list[tuple[float, float]]:
        """(cross-entropy loss, accuracy) of each job."""
        out = []
        for job, logits in zip(jobs, self.logits(jobs), strict=True):
            labels = torch.from_numpy(np.asarray(job.labels, dtype=np.int64))
            loss = float(torch.nn.functional.cross_entropy(logits, labels))
            out.append((loss, float((logits.argmax(dim=1) == labels).float().mean())))
        return out
