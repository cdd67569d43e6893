"""What a node does with its training batch and with the model it sends: honest or not.

A behaviour answers three questions the protocol engines ask, and nothing else:
does this node train, what batch does it actually train on, and which model does it send.
Behaviours are pure: every random draw comes from the numpy Generator the caller passes, so an
engine seeded the same way makes the same attacks. Names follow the DFL simulator's node types,
with short aliases for experiment files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 10


@dataclass(frozen=True)
class Behaviour:
    """The honest node: trains on what it gets and sends what it trained."""

    name: str = "normal"
    trains: bool = True
    sends: bool = True
    copies_peers: bool = False  # sends a peer's model: BLADE-FL's lazy client plagiarizes

    def batch(
        self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The batch the node trains on, given the one it received."""
        return images, labels

    def outgoing(
        self,
        current: np.ndarray,
        rng: np.random.Generator,
        peer_models: Sequence[np.ndarray] = (),
    ) -> np.ndarray:
        """The model the node sends, given its own current weights and the peers' it holds."""
        return current


@dataclass(frozen=True)
class Observer(Behaviour):
    """Aggregates what it receives, never trains and never sends (the paper's measuring node)."""

    name: str = "observer"
    trains: bool = False
    sends: bool = False


@dataclass(frozen=True)
class RandomData(Behaviour):
    """Data poisoning: trains on images whose pixels are uniform random, labels kept.

    The paper's "uniform random numbers from 0 to 1" are network inputs; since inputs are uint8
    pixels scaled by 1/256, uniform pixels in 0..255 are U(0, 1) at the resolution every real
    image has. (The original C++ drew U(0, 1) before Caffe's 1/256 scale, so its attacker in fact
    trained on almost-black images; the paper's description is what this follows.)
    """

    name: str = "random-data"

    def batch(
        self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, size=images.shape, dtype=np.uint8), labels


@dataclass(frozen=True)
class ShuffleLabels(Behaviour):
    """Data poisoning: keeps the images, replaces every label by a uniform random class.

    The original draws from a default-seeded engine created anew on each batch, so its "random"
    labels repeat batch after batch; here they come from the caller's generator.
    """

    name: str = "shuffle-labels"

    def batch(
        self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return images, rng.integers(0, NUM_CLASSES, size=len(labels)).astype(labels.dtype)


@dataclass(frozen=True)
class RandomModel(Behaviour):
    """Model poisoning: trains honestly but sends weights drawn from U(low, high).

    U(0, 0.001) is the paper's choice, small enough that Caffe did not overflow.
    """

    name: str = "random-model"
    low: float = 0.0
    high: float = 0.001

    def outgoing(
        self,
        current: np.ndarray,
        rng: np.random.Generator,
        peer_models: Sequence[np.ndarray] = (),
    ) -> np.ndarray:
        draw = rng.random(current.shape, dtype=np.float32)
        draw *= np.float32(self.high - self.low)
        draw += np.float32(self.low)
        return draw


@dataclass(frozen=True)
class Lazy(Behaviour):
    """BLADE-FL's lazy client (plagiarist): copies a peer's model and adds N(0, variance) noise.

    It does not train. The peer is drawn uniformly from `peer_models` (the honest models of the
    round); with none available it disguises its own current model instead.
    """

    name: str = "lazy"
    copies_peers: bool = True
    trains: bool = False
    variance: float = 0.01

    def outgoing(
        self,
        current: np.ndarray,
        rng: np.random.Generator,
        peer_models: Sequence[np.ndarray] = (),
    ) -> np.ndarray:
        source = peer_models[int(rng.integers(len(peer_models)))] if peer_models else current
        noise = rng.standard_normal(source.shape, dtype=np.float32)
        noise *= np.float32(np.sqrt(self.variance))
        noise += source
        return noise


@dataclass(frozen=True)
class Duplication(Behaviour):
    """Sends its current model again without ever training.

    Its model still changes by aggregation, so it re-broadcasts what it got from others (the
    original's "duplicate other's model and send it to others").
    """

    name: str = "duplication"
    trains: bool = False


BEHAVIOURS: dict[str, Callable[..., Behaviour]] = {
    "normal": Behaviour,
    "observer": Observer,
    "random-data": RandomData,
    "shuffle-labels": ShuffleLabels,
    "random-model": RandomModel,
    "lazy": Lazy,
    "duplication": Duplication,
}
# The DFL simulator's node type names, so its configurations read unchanged.
ALIASES = {
    "malicious_data_poisoning_random_data": "random-data",
    "malicious_data_poisoning_shuffle_label": "shuffle-labels",
    "malicious_model_poisoning_random_model": "random-model",
    "malicious_duplication_attack": "duplication",
    "plagiarist": "lazy",
    "data-poisoning": "random-data",
    "model-poisoning": "random-model",
}


def make_behaviour(name: str, **options: float) -> Behaviour:
    """A behaviour by name (or a DFL simulator node type), with its numeric options."""
    key = ALIASES.get(name, name)
    try:
        factory = BEHAVIOURS[key]
    except KeyError:
        known = ", ".join(sorted(BEHAVIOURS))
        raise ValueError(f"unknown behaviour {name!r}; known: {known}") from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise ValueError(f"behaviour {key!r} does not take options {options}: {exc}") from None
