"""Centralized baselines and per-operation costs for the two models, on one CPU thread.

Checks that the learning stack reproduces what the papers' models can do before any federation
is layered on top: LeNet with the DFL paper's Caffe solver, one epoch of MNIST at batch 64
(>= 0.975 test accuracy), and BLADE-FL's MLP, three epochs at its local batch size 32
(>= 0.90). It also times what a node pays per event: one SGD step (batch 64), one accuracy
measurement on 100 samples, and a model's encode + decode on the wire. Exit status 1 if an
accuracy target is missed.

    python benchmarks/centralized.py [--data-dir DIR] [--seed N] [--dataset mnist]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from node.learning.codec import (
    decode_f32le,
    decode_safetensors,
    encode_f32le,
    encode_safetensors,
    layer_shapes,
)
from node.learning.training import Learner, configure_torch, train_epochs
from orchestrator.datasets import Dataset, ensure_dataset

LENET_TARGET = 0.975
MLP_TARGET = 0.90


def median_ms(action: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def train_and_test(
    model: str, data: Dataset, epochs: int, batch: int, seed: int
) -> tuple[Learner, float, float]:
    learner = Learner(model, seed=seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    train_epochs(learner, data.train_images, data.train_labels, epochs, batch, rng)
    seconds = time.perf_counter() - start
    return learner, learner.accuracy(data.test_images, data.test_labels), seconds


def costs(learner: Learner, data: Dataset, rng: np.random.Generator) -> dict[str, float]:
    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        picks = rng.integers(0, len(data.train_labels), n)
        return data.train_images[picks], data.train_labels[picks]

    train_x, train_y = batch(64)
    test_x, test_y = batch(100)
    weights = learner.weights()
    shapes = layer_shapes(learner.module)
    return {
        "sgd_step_ms": median_ms(lambda: learner.train_step(train_x, train_y), 30),
        "eval_100_ms": median_ms(lambda: learner.accuracy(test_x, test_y), 30),
        "f32le_roundtrip_ms": median_ms(lambda: decode_f32le(encode_f32le(weights), shapes), 100),
        "safetensors_roundtrip_ms": median_ms(
            lambda: decode_safetensors(encode_safetensors(weights, shapes), shapes), 100
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    configure_torch(args.threads)
    data = ensure_dataset(args.dataset, args.data_dir)
    ok = True
    print(f"dataset {args.dataset}: {len(data.train_labels)} train / {len(data.test_labels)} test")

    runs = (("lenet", 1, 64, LENET_TARGET), ("mlp", 3, 32, MLP_TARGET))
    for model, epochs, batch, target in runs:
        learner, accuracy, seconds = train_and_test(model, data, epochs, batch, args.seed)
        passed = accuracy >= target or args.dataset != "mnist"
        ok &= passed
        print(
            f"{model}: {epochs} epoch(s), batch {batch}: test accuracy {accuracy:.4f} "
            f"(target >= {target}{'' if passed else ', MISSED'}), trained in {seconds:.1f} s"
        )
        for name, value in costs(learner, data, np.random.default_rng(args.seed)).items():
            print(f"  {model} {name}: {value:.3f}")

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    print(f"peak RSS: {peak_mib:.0f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
