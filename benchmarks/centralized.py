"""Centralized baselines and per-operation costs for the two models, on one CPU thread.

Checks that the learning stack reproduces what the papers' models can do before any federation
is layered on top: LeNet with the DFL paper's Caffe solver, one epoch of MNIST at batch 64
(>= 0.975 test accuracy), and BLADE-FL's MLP, three epochs at its local batch size 32
(>= 0.90). It also times what a node pays per event: one SGD step (batch 64), one accuracy
measurement on 100 samples, and a model's encode + decode on the wire. Exit status 1 if an
accuracy target is missed.

The accuracy targets are the papers' figures, not a baseline measured here, so no ratio is
printed; the per-operation costs are absolute milliseconds (DESIGN.md's cost table).

`--quick` runs the same training, testing and timing code on the first 6,000 training samples
with a few repetitions per cost, in a few seconds: a check that the benchmark still runs, so its
accuracies are printed but not held to the targets (which are for the full training set).

    python benchmarks/centralized.py [--quick] [--data-dir DIR] [--seed N] [--dataset mnist]
"""

from __future__ import annotations

import argparse
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much work one run does: the full benchmark's, or --quick's smoke-sized one."""

    train_samples: int | None  # None: the whole training set
    step_repeats: int  # timed SGD steps and accuracy measurements per figure
    codec_repeats: int  # timed encode + decode round trips per figure
    warmup: int  # untimed calls before each figure


FULL = Sizes(train_samples=None, step_repeats=30, codec_repeats=100, warmup=3)
QUICK = Sizes(train_samples=6000, step_repeats=5, codec_repeats=10, warmup=1)


def median_ms(action: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of `action` in ms, after `warmup` calls that fill the caches."""
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
    """Trains a fresh model centrally; returns it, its test accuracy and the training time."""
    learner = Learner(model, seed=seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    train_epochs(learner, data.train_images, data.train_labels, epochs, batch, rng)
    seconds = time.perf_counter() - start
    return learner, learner.accuracy(data.test_images, data.test_labels), seconds


def costs(
    learner: Learner, data: Dataset, rng: np.random.Generator, sizes: Sizes = FULL
) -> dict[str, float]:
    """What a node pays per event with this model, in median milliseconds."""

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        picks = rng.integers(0, len(data.train_labels), n)
        return data.train_images[picks], data.train_labels[picks]

    train_x, train_y = batch(64)
    test_x, test_y = batch(100)
    weights = learner.weights()
    shapes = layer_shapes(learner.module)
    steps, codec, warmup = sizes.step_repeats, sizes.codec_repeats, sizes.warmup
    return {
        "sgd_step_ms": median_ms(lambda: learner.train_step(train_x, train_y), steps, warmup),
        "eval_100_ms": median_ms(lambda: learner.accuracy(test_x, test_y), steps, warmup),
        "f32le_roundtrip_ms": median_ms(
            lambda: decode_f32le(encode_f32le(weights), shapes), codec, warmup
        ),
        "safetensors_roundtrip_ms": median_ms(
            lambda: decode_safetensors(encode_safetensors(weights, shapes), shapes), codec, warmup
        ),
    }


def subset(data: Dataset, train_samples: int | None) -> Dataset:
    """The first `train_samples` training samples (all of them for None); the test set whole."""
    if train_samples is None:
        return data
    return dataclasses.replace(
        data,
        train_images=data.train_images[:train_samples],
        train_labels=data.train_labels[:train_samples],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status 1 if an accuracy target is missed (full runs on MNIST only).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a few seconds: train on the first {QUICK.train_samples} samples, time each "
        f"cost {QUICK.step_repeats}-{QUICK.codec_repeats} times; accuracies not judged",
    )
    parser.add_argument(
        "--data-dir", default=None, help="where the datasets are (default: $DFL_DATA_DIR, ./data)"
    )
    parser.add_argument(
        "--dataset",
        default="mnist",
        choices=("mnist", "fashion-mnist"),
        help="the targets apply to MNIST only (default: mnist)",
    )
    parser.add_argument("--seed", type=int, default=1, help="model init and shuffling (default: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL

    configure_torch(args.threads)
    data = subset(ensure_dataset(args.dataset, args.data_dir), sizes.train_samples)
    ok = True
    mode = " (--quick: accuracies not held to the targets)" if args.quick else ""
    print(
        f"dataset {args.dataset}: {len(data.train_labels)} train / "
        f"{len(data.test_labels)} test{mode}"
    )

    runs = (("lenet", 1, 64, LENET_TARGET), ("mlp", 3, 32, MLP_TARGET))
    for model, epochs, batch, target in runs:
        learner, accuracy, seconds = train_and_test(model, data, epochs, batch, args.seed)
        judged = args.dataset == "mnist" and not args.quick
        passed = accuracy >= target or not judged
        ok &= passed
        verdict = ", not judged" if not judged else "" if passed else ", MISSED"
        print(
            f"{model}: {epochs} epoch(s), batch {batch}: test accuracy {accuracy:.4f} "
            f"(target >= {target}{verdict}), trained in {seconds:.1f} s"
        )
        figures = costs(learner, data, np.random.default_rng(args.seed), sizes)
        for name, value in figures.items():
            print(f"  {model} {name}: {value:.3f}")

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    print(f"peak RSS: {peak_mib:.0f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
