"""Training and evaluation of one node's model, with its weights kept as one flat float32 vector.

Everything above this module (codec, aggregators, behaviours, the ledger) speaks flat vectors, so
the model's parameters are views into a single buffer: reading the weights is one copy, replacing
them is one copy, and the solver updates them with three vector operations. Batches come in as
numpy uint8 images and integer labels, the form the data injector and the partitioners produce.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from node.learning.models import build_model
from node.learning.solver import SOLVERS, CaffeSGD, SolverConfig


def configure_torch(threads: int = 1) -> None:
    """Pin torch to `threads` threads; a node process calls this once at start.

    Several node processes share a machine's cores, and torch's default (one thread per core in
    every process) makes them fight: one thread each is faster in aggregate and keeps the CPU
    accounting per node honest. Called explicitly rather than on import so that a library user
    (a notebook, the benchmark) keeps control of its own process.
    """
    torch.set_num_threads(threads)
    # The inter-op pool can only be sized before its first use; the intra-op setting is what
    # matters for a node's convolutions, so a late call is not an error.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


class FlatModel:
    """A module whose parameters (in state order) are views into one flat weight vector."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.params = list(module.parameters())
        if any(p.dtype != torch.float32 for p in self.params):
            raise TypeError("flat models hold float32 parameters only")
        if len(self.params) != len(module.state_dict()):
            raise TypeError("flat models cannot carry buffers: every state entry must be a weight")
        sizes = [p.numel() for p in self.params]
        self.size = sum(sizes)
        self.weights = torch.empty(self.size, dtype=torch.float32)
        self.grads = torch.zeros(self.size, dtype=torch.float32)
        self.slices: list[slice] = []
        offset = 0
        for p, n in zip(self.params, sizes, strict=True):
            chunk = slice(offset, offset + n)
            self.weights[chunk].copy_(p.detach().reshape(-1))
            p.data = self.weights[chunk].view_as(p)
            p.grad = self.grads[chunk].view_as(p)
            self.slices.append(chunk)
            offset += n

    def get(self) -> np.ndarray:
        """A copy of the weights, safe to hand to other components."""
        return self.weights.numpy().copy()

    def set(self, flat: np.ndarray) -> None:
        if flat.shape != (self.size,):
            raise ValueError(f"expected {self.size} weights, got shape {flat.shape}")
        # Through numpy: `flat` may be a read-only view of a received payload, which torch
        # cannot wrap without a warning (and a copy of its own).
        np.copyto(self.weights.numpy(), flat, casting="same_kind")

    def collect_grads(self) -> torch.Tensor:
        """The flat gradient; autograd accumulates in place into the views, this guards that."""
        storage = self.grads.untyped_storage().data_ptr()
        for p, chunk in zip(self.params, self.slices, strict=True):
            g = p.grad
            if g is None or g.untyped_storage().data_ptr() != storage:
                self.grads[chunk].copy_(
                    g.reshape(-1) if g is not None else torch.zeros(chunk.stop - chunk.start)
                )
                p.grad = self.grads[chunk].view_as(p)
        return self.grads

    def per_weight(self, bias_value: float, weight_value: float = 1.0) -> torch.Tensor:
        """`bias_value` at each bias, `weight_value` elsewhere: per-blob solver multipliers."""
        out = torch.full((self.size,), weight_value, dtype=torch.float32)
        for (name, _), chunk in zip(self.module.named_parameters(), self.slices, strict=True):
            if name.endswith("bias"):
                out[chunk] = bias_value
        return out


def _batch(images: np.ndarray, labels: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 pixels, got {images.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    if labels is None:
        return (x,)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def _accuracy(module: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    if len(images) == 0:
        raise ValueError("cannot measure accuracy on zero samples")
    x, y = _batch(images, labels)
    correct = 0
    module.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = module(module.prepare(x[start : start + batch_size]))
            correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    return correct / len(x)


class Learner:
    """One node's model and solver: an SGD step per batch, accuracy on demand."""

    def __init__(
        self,
        model: str = "lenet",
        seed: int | None = None,
        solver: SolverConfig | None = None,
        test_batch_size: int = 100,
    ) -> None:
        self.model_name = model
        self.flat = FlatModel(build_model(model, seed))
        self.solver_config = solver or SOLVERS[model]
        self.solver = CaffeSGD(
            self.solver_config,
            lr_mult=self.flat.per_weight(self.solver_config.bias_lr_mult),
            decay_mult=self.flat.per_weight(self.solver_config.bias_decay_mult),
        )
        self.test_batch_size = test_batch_size
        self._scratch: FlatModel | None = None

    @property
    def module(self) -> nn.Module:
        return self.flat.module

    def weights(self) -> np.ndarray:
        return self.flat.get()

    def set_weights(self, flat: np.ndarray) -> None:
        """Replace the weights; momentum and the schedule carry on, as Caffe's set_parameter."""
        self.flat.set(flat)

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> float:
        """One SGD step on one batch; returns the batch's loss before the step."""
        x, y = _batch(images, labels)
        module = self.flat.module
        module.train()
        self.flat.grads.zero_()
        loss = nn.functional.cross_entropy(module(module.prepare(x)), y)
        loss.backward()
        self.solver.step(self.flat.weights, self.flat.collect_grads())
        return float(loss.detach())

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return _accuracy(self.flat.module, images, labels, self.test_batch_size)

    def accuracy_of(self, flat: np.ndarray, images: np.ndarray, labels: np.ndarray) -> float:
        """Accuracy of someone else's weights (a received model), leaving our own untouched."""
        if self._scratch is None:
            # seeded only so that building it leaves torch's global generator alone
            self._scratch = FlatModel(build_model(self.model_name, seed=0))
        self._scratch.set(flat)
        return _accuracy(self._scratch.module, images, labels, self.test_batch_size)


def train_epochs(
    learner: Learner,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
) -> list[float]:
    """Shuffled passes over a fixed local dataset (BLADE-FL's local epochs); returns the losses."""
    losses: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            losses.append(learner.train_step(images[batch], labels[batch]))
    return losses
