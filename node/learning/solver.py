"""Caffe's SGD solver, on one flat weight vector.

torch.optim.SGD is not Caffe's SGD: torch keeps the momentum history in gradient units and
multiplies by the learning rate afterwards, Caffe keeps it in update units (history = momentum *
history + lr * grad). The two agree only while the learning rate is constant, and the DFL paper's
solver decays it (`inv` policy) on every step. Caffe also multiplies each blob's rate by its
lr_mult (2 for LeNet's biases). So the update is written out here, and because the weights are
one vector the whole step is three vector operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SolverConfig:
    """A Caffe solver.prototxt reduced to what SGD reads; defaults are the DFL paper's LeNet."""

    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_policy: str = "inv"  # "inv" or "fixed"
    gamma: float = 1e-4
    power: float = 0.75
    # lenet_train_test.prototxt: param { lr_mult: 1 } param { lr_mult: 2 } on every layer
    bias_lr_mult: float = 2.0
    bias_decay_mult: float = 1.0  # the prototxt sets no decay_mult, and Caffe's default is 1

    def learning_rate(self, iteration: int) -> float:
        """The rate Caffe's SGDSolver::GetLearningRate returns at `iteration` (counted from 0)."""
        if self.lr_policy == "fixed":
            return self.base_lr
        if self.lr_policy == "inv":
            return self.base_lr * (1.0 + self.gamma * iteration) ** (-self.power)
        raise ValueError(f"unsupported lr_policy {self.lr_policy!r} (use 'inv' or 'fixed')")


LENET_SOLVER = SolverConfig()
# BLADE-FL trains with torch.optim.SGD(lr=0.01, momentum=0): constant rate, no decay.
MLP_SOLVER = SolverConfig(
    base_lr=0.01, momentum=0.0, weight_decay=0.0, lr_policy="fixed", bias_lr_mult=1.0
)
SOLVERS = {"lenet": LENET_SOLVER, "mlp": MLP_SOLVER}


class CaffeSGD:
    """Caffe's SGDSolver::ApplyUpdate for one flat parameter vector.

    `lr_mult` and `decay_mult` are per-element vectors (one entry per weight), so weights and
    biases get their multipliers without a loop over blobs. The iteration count and the momentum
    history survive a weight replacement, as Caffe's set_parameter leaves them alone.
    """

    def __init__(
        self, config: SolverConfig, lr_mult: torch.Tensor, decay_mult: torch.Tensor
    ) -> None:
        if lr_mult.shape != decay_mult.shape or lr_mult.dim() != 1:
            raise ValueError("lr_mult and decay_mult must be flat vectors of the same length")
        self.config = config
        self.lr_mult = lr_mult
        # Caffe's local_decay = weight_decay * decay_mult; folded once here.
        self.local_decay = decay_mult * config.weight_decay
        self.uniform_decay = bool(torch.all(self.local_decay == self.local_decay[0]))
        self.history = torch.zeros_like(lr_mult)
        self.iteration = 0

    def step(self, weights: torch.Tensor, grads: torch.Tensor) -> float:
        """Apply one update in place (grads are consumed as scratch); returns the rate used."""
        rate = self.config.learning_rate(self.iteration)
        with torch.no_grad():
            if self.config.weight_decay:
                if self.uniform_decay:
                    grads.add_(weights, alpha=float(self.local_decay[0]))
                else:
                    grads.addcmul_(self.local_decay, weights)
            self.history.mul_(self.config.momentum).addcmul_(self.lr_mult, grads, value=rate)
            weights.sub_(self.history)
        self.iteration += 1
        return rate

    def reset(self) -> None:
        """Forget momentum and restart the schedule (a fresh solver, as BLADE-FL's rounds use)."""
        self.history.zero_()
        self.iteration = 0
