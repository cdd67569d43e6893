"""Where a DFL host's samples come from: the one thing a runtime may choose about its ML.

A node process is given samples by the orchestrator (`InjectSamples`) and tests received models
on random samples of everything it has been given, as the paper's nodes do. The tick simulator
draws each node's training batches from the node's stream and its test samples from the test
set by the node's label weights, one draw per node per instant shared by every model the node
tests at that instant, as the paper's simulator does. Both sit behind `SampleSource`, so the
host (node/host/dfl.py) makes every other decision, the aggregator's inputs included, once.

`SampleLog` keeps a digest of the first samples a host trained on, so that two runtimes given
one spec can show that they fed every node the same data.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from node.datadir import SAMPLES_FILE, replace_text

Batch = tuple[np.ndarray, np.ndarray]  # uint8 images (n, 28, 28), int64 labels (n,)


class DrawsSamples(Protocol):
    """A stream of samples (orchestrator/partition.py's SampleStream is one)."""

    def draw(self, n: int) -> Batch: ...


class SampleSource(Protocol):
    """Training batches and test samples for one host."""

    def training_batch(self, size: int) -> Batch: ...

    def test_sample(self, size: int) -> Batch: ...


class InjectedSamples:
    """A node's samples as the orchestrator injects them: a training queue and a memory.

    Thread-safe: the gRPC loop collects while the ML worker takes batches and test samples.
    """

    def __init__(self, rng: np.random.Generator, memory: int = 20_000) -> None:
        self._rng = rng
        self._lock = threading.Lock()
        self._pending: deque[Batch] = deque()
        self._images = np.zeros((memory, 28, 28), dtype=np.uint8)
        self._labels = np.zeros(memory, dtype=np.int64)
        self._size = 0
        self._next = 0

    def collect(self, images: np.ndarray, labels: np.ndarray) -> None:
        """New samples: queued for training and remembered for evaluation."""
        with self._lock:
            self._pending.append((images, labels))
            capacity = len(self._labels)
            for start in range(0, len(labels), capacity):
                chunk = slice(start, min(start + capacity, len(labels)))
                count = chunk.stop - chunk.start
                index = (self._next + np.arange(count)) % capacity
                self._images[index] = images[chunk]
                self._labels[index] = labels[chunk]
                self._next = (self._next + count) % capacity
                self._size = min(capacity, self._size + count)

    def training_batch(self, size: int) -> Batch:
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

    def test_sample(self, size: int) -> Batch:
        """The paper's local test set: random samples from everything received so far."""
        with self._lock:
            if self._size == 0:
                raise RuntimeError("no samples collected yet to evaluate on")
            index = self._rng.choice(self._size, min(size, self._size), replace=False)
            return self._images[index].copy(), self._labels[index].copy()


class StreamedSamples:
    """The simulator's samples: training batches from a stream, test draws shared per instant."""

    def __init__(self, train: DrawsSamples, test: DrawsSamples, clock: Callable[[], float]) -> None:
        self._train = train
        self._test = test
        self._clock = clock
        self._draw: tuple[float, int, Batch] | None = None

    def training_batch(self, size: int) -> Batch:
        return self._train.draw(size)

    def test_sample(self, size: int) -> Batch:
        now = self._clock()
        if self._draw is None or self._draw[:2] != (now, size):
            self._draw = (now, size, self._test.draw(size))
        return self._draw[2]


class SampleLog:
    """SHA-256 over the first `limit` training samples (pixels, then int64 labels) of a host."""

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self.count = 0
        self.written = False
        self._hash = hashlib.sha256()

    def record(self, images: np.ndarray, labels: np.ndarray) -> None:
        take = min(len(labels), self.limit - self.count)
        if take <= 0:
            return
        for image, label in zip(images[:take], labels[:take], strict=True):
            self._hash.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
            self._hash.update(np.int64(label).tobytes())
        self.count += take

    @property
    def digest(self) -> str | None:
        """Hex digest once `limit` samples were recorded; None before."""
        return self._hash.hexdigest() if self.count >= self.limit else None

    def write(self, directory: Path) -> bool:
        """samples.json in `directory` once the digest is known; True if it was written now.

        Called after every training step, so it touches the disk once, not every time."""
        digest = self.digest
        if digest is None or self.written:
            return False
        replace_text(
            directory / SAMPLES_FILE, json.dumps({"samples": self.limit, "sha256": digest})
        )
        self.written = True
        return True
