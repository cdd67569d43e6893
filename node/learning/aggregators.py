"""The aggregation rules that ship with the testbed.

The first three are the DFL paper's (section 5, eq. 2-4, and the original's sample plugins); the
robust ones (coordinate median, trimmed mean, Krum) are the usual baselines against poisoning.
All work on flat float32 vectors: one weighted sum over a handful of 431,080-element vectors is a
few vector operations, where a loop over layers would cost several times more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping, Sequence
from functools import partial

import numpy as np

from node.learning.aggregation import (
    INITIAL_REPUTATION,
    Aggregator,
    GeneratorId,
    ReceivedModel,
)


def weighted_mean(models: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """sum(w_i * m_i) / sum(w_i), accumulated in float32 without stacking the models."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    out = np.zeros_like(models[0], dtype=np.float32)
    scratch = np.empty_like(out)
    for model, weight in zip(models, weights, strict=True):
        if weight:
            np.multiply(model, np.float32(weight / total), out=scratch)
            out += scratch
    return out


def _mean(models: Sequence[np.ndarray]) -> np.ndarray:
    return weighted_mean(models, [1.0] * len(models))


def _half(current: np.ndarray, others: np.ndarray) -> np.ndarray:
    out = current.astype(np.float32, copy=True)
    out += others
    out *= np.float32(0.5)
    return out


class FedAvg:
    """The plain mean of the received models; the node's own model does not take part.

    This is the original's FedAvg sample. With nothing received the model stays as it is.
    """

    reads_self_accuracy = False  # the rule never looks at it: skip the measurement

    def update_model(
        self,
        current: np.ndarray,
        self_accuracy: float,
        received: Sequence[ReceivedModel],
        reputation: MutableMapping[GeneratorId, float],
    ) -> np.ndarray:
        if not received:
            return current.copy()
        return _mean([r.model for r in received])


class HalfFedAvg:
    """Eq. 2: (current + mean(received)) / 2, so the node's own model keeps half the say."""

    reads_self_accuracy = False  # the rule never looks at it: skip the measurement

    def update_model(
        self,
        current: np.ndarray,
        self_accuracy: float,
        received: Sequence[ReceivedModel],
        reputation: MutableMapping[GeneratorId, float],
    ) -> np.ndarray:
        if not received:
            return current.copy()
        return _half(current, _mean([r.model for r in received]))


class Reputation:
    """Eq. 3-4, the paper's "Reputation-0.05" with the penalty as a parameter.

    weight_n = reputation(generator_n) x accuracy_n, with the reputations from before this call;
    next = (current + sum(weight_n / sum(weight) x model_n)) / 2. If every weight is 0 the rule
    falls back to equal weights, which is HalfFedAvg. Then every generator whose model is tied for
    the lowest accuracy loses `penalty` reputation (once per call, even if it sent several of
    the tied models), never going below 0. Unknown generators start at 1.0. As in the original,
    `self_accuracy` plays no part.
    """

    reads_self_accuracy = False  # the rule never looks at it: skip the measurement

    def __init__(self, penalty: float = 0.05) -> None:
        if not 0 <= penalty <= 1:
            raise ValueError(f"penalty must lie in [0, 1], got {penalty}")
        self.penalty = penalty

    def update_model(
        self,
        current: np.ndarray,
        self_accuracy: float,
        received: Sequence[ReceivedModel],
        reputation: MutableMapping[GeneratorId, float],
    ) -> np.ndarray:
        if not received:
            return current.copy()
        before = {r.generator: reputation.get(r.generator, INITIAL_REPUTATION) for r in received}
        weights = [before[r.generator] * r.accuracy for r in received]
        if sum(weights) <= 0:
            weights = [1.0] * len(received)
        result = _half(current, weighted_mean([r.model for r in received], weights))

        lowest = min(r.accuracy for r in received)
        for generator, value in before.items():
            reputation[generator] = value
        for generator in {r.generator for r in received if r.accuracy == lowest}:
            reputation[generator] = max(0.0, before[generator] - self.penalty)
        return result

    def __repr__(self) -> str:
        return f"Reputation(penalty={self.penalty})"


def sorted_columns(models: Sequence[np.ndarray]) -> np.ndarray:
    """The models stacked and sorted per coordinate (row 0 holds each coordinate's minimum).

    For the few models of a buffer, a compare-exchange network of whole-vector minimum/maximum
    runs several times faster than np.sort along the short strided axis (3 ms against 20 ms
    for six LeNets); beyond a few dozen models np.sort wins again.
    """
    if len(models) > 16:
        return np.sort(np.stack(models), axis=0)
    rows = [np.array(m, dtype=np.float32) for m in models]
    for end in range(len(rows) - 1, 0, -1):
        for j in range(end):
            low = np.minimum(rows[j], rows[j + 1])
            np.maximum(rows[j], rows[j + 1], out=rows[j + 1])
            rows[j] = low
    return np.stack(rows)


class _RobustRule:
    """The shared shape of the robust rules: pool the models (the node's own included unless
    told otherwise), keep the current model when there is nothing to pool, else `combine`."""

    reads_self_accuracy = False  # the rule never looks at it: skip the measurement

    include_current: bool = True

    def update_model(
        self,
        current: np.ndarray,
        self_accuracy: float,
        received: Sequence[ReceivedModel],
        reputation: MutableMapping[GeneratorId, float],
    ) -> np.ndarray:
        models = [r.model for r in received]
        if self.include_current:
            models.insert(0, current)
        if not models:
            return current.copy()
        return self.combine(models)

    def combine(self, models: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class CoordinateMedian(_RobustRule):
    """The per-coordinate median of the models (the node's own included unless told otherwise).

    With an even count numpy's median averages the two middle values.
    """

    def __init__(self, include_current: bool = True) -> None:
        self.include_current = include_current

    def combine(self, models: Sequence[np.ndarray]) -> np.ndarray:
        ordered = sorted_columns(models)
        middle = len(models) // 2
        if len(models) % 2:
            return ordered[middle]
        return ((ordered[middle - 1].astype(np.float64) + ordered[middle]) / 2).astype(np.float32)


class TrimmedMean(_RobustRule):
    """Per coordinate, drop the k largest and k smallest values and average the rest.

    k = floor(trim_fraction x n) for n models, capped so that at least one value remains.
    """

    def __init__(self, trim_fraction: float = 0.2, include_current: bool = True) -> None:
        if not 0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must lie in [0, 0.5), got {trim_fraction}")
        self.trim_fraction = trim_fraction
        self.include_current = include_current

    def combine(self, models: Sequence[np.ndarray]) -> np.ndarray:
        n = len(models)
        k = min(math.floor(self.trim_fraction * n), (n - 1) // 2)
        ordered = sorted_columns(models)
        return ordered[k : n - k].mean(axis=0, dtype=np.float64).astype(np.float32)


class Krum(_RobustRule):
    """Krum (Blanchard et al., 2017): keep the model closest to its n - f - 2 nearest others.

    Each model's score is the sum of squared distances to its n - f - 2 nearest neighbours (at
    least 1, so small buffers still get a choice); the lowest score wins, ties to the earliest.
    With `multi` > 1 it is Multi-Krum: the mean of the `multi` best-scored models.
    """

    def __init__(self, f: int = 1, multi: int = 1, include_current: bool = True) -> None:
        if f < 0 or multi < 1:
            raise ValueError("Krum needs f >= 0 and multi >= 1")
        self.f = f
        self.multi = multi
        self.include_current = include_current

    def scores(self, models: Sequence[np.ndarray]) -> np.ndarray:
        stacked = np.stack(models).astype(np.float64)
        squares = np.einsum("ij,ij->i", stacked, stacked)
        distances = squares[:, None] + squares[None, :] - 2.0 * stacked @ stacked.T
        np.maximum(distances, 0.0, out=distances)
        n = len(models)
        neighbours = max(n - self.f - 2, 1)
        out = np.empty(n)
        for i in range(n):
            others = np.delete(distances[i], i)
            out[i] = np.sort(others)[: min(neighbours, n - 1)].sum()
        return out

    def combine(self, models: Sequence[np.ndarray]) -> np.ndarray:
        if len(models) == 1:
            return models[0].astype(np.float32, copy=True)
        best = np.argsort(self.scores(models), kind="stable")[: self.multi]
        return _mean([models[i] for i in best])


BUILTIN: dict[str, Callable[..., Aggregator]] = {
    "fedavg": FedAvg,
    "half-fedavg": HalfFedAvg,
    "reputation": Reputation,
    "reputation-0.05": partial(Reputation, penalty=0.05),
    "reputation-0.01": partial(Reputation, penalty=0.01),
    "median": CoordinateMedian,
    "trimmed-mean": TrimmedMean,
    "krum": Krum,
}
