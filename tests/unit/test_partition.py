"""Partitioners: seeded, as skewed as their parameters say, true to the 2-label split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import seeds
from node.seeds import Purpose
from orchestrator.partition import (
    BLOCK,
    Partition,
    PartitionSpec,
    SampleStream,
    label_weights,
    parse_partition,
)


def top_two_share(weights: np.ndarray) -> np.ndarray:
    return np.sort(weights, axis=1)[:, -2:].sum(axis=1)


def test_the_same_seed_gives_the_same_split_and_another_seed_does_not(mnist) -> None:
    labels = mnist.train_labels

    def split(seed: int):
        partition = Partition.build(parse_partition("dirichlet:0.5"), 10, labels, seed)
        stream = partition.stream(3, mnist.train_images, labels).draw(64)
        return partition.weights, stream[1], partition.local_datasets(labels, 512)

    a, b, c = split(7), split(7), split(8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert all(np.array_equal(x, y) for x, y in zip(a[2], b[2], strict=True))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


def test_node_streams_are_independent_of_each_other(mnist) -> None:
    partition = Partition.build(PartitionSpec("iid"), 4, mnist.train_labels, seed=1)
    first = partition.stream(2, mnist.train_images, mnist.train_labels)
    alone = first.draw(32)[1]
    second = partition.stream(2, mnist.train_images, mnist.train_labels)
    partition.stream(0, mnist.train_images, mnist.train_labels).draw(1000)  # another node draws
    assert np.array_equal(second.draw(32)[1], alone)
    other = partition.stream(3, mnist.train_images, mnist.train_labels).draw(32)[1]
    assert not np.array_equal(other, alone)


def test_dirichlet_alpha_0_1_leaves_most_nodes_dominated_by_one_or_two_labels() -> None:
    weights = label_weights(PartitionSpec("dirichlet", alpha=0.1), 200, seed=11)
    # Statistic: the share of a node's distribution held by its two most likely labels.
    # Under Dirichlet(0.1) over 10 labels about 3 nodes in 4 have >= 80 % on two labels.
    assert (top_two_share(weights) >= 0.8).mean() > 0.6


def test_dirichlet_alpha_100_is_close_to_uniform() -> None:
    weights = label_weights(PartitionSpec("dirichlet", alpha=100), 200, seed=11)
    # Statistic: total variation distance from uniform, 0.5 * sum |p - 0.1|, for every node.
    assert (0.5 * np.abs(weights - 0.1).sum(axis=1)).max() < 0.1
    assert top_two_share(weights).max() < 0.3  # uniform would be exactly 0.2


def test_dirichlet_skew_shows_in_the_real_local_datasets(mnist) -> None:
    def realized_top_two(alpha: float) -> np.ndarray:
        partition = Partition.build(
            PartitionSpec("dirichlet", alpha=alpha), 20, mnist.train_labels, seed=5
        )
        counts = np.stack(
            [
                np.bincount(mnist.train_labels[idx], minlength=10) / 512
                for idx in partition.local_datasets(mnist.train_labels, 512)
            ]
        )
        return top_two_share(counts)

    assert (realized_top_two(0.1) >= 0.8).mean() > 0.6
    assert realized_top_two(100).max() < 0.35


def test_two_labels_per_node_gives_node_k_only_labels_k_and_k_plus_1(mnist) -> None:
    partition = Partition.build(parse_partition("labels:2"), 10, mnist.train_labels, seed=0)
    for k in range(10):
        expected = {k, (k + 1) % 10}
        assert set(np.flatnonzero(partition.weights[k]).tolist()) == expected
        stream = partition.stream(k, mnist.train_images, mnist.train_labels)
        labels = mnist.train_labels[stream.draw_indices(640)]
        assert set(labels.tolist()) == expected
        assert abs(int((labels == k).sum()) - 320) < 60  # equal parts
        assert len(np.unique(stream.draw_indices(640))) > 500  # many different samples


def test_iid_streams_follow_the_datasets_own_label_frequencies(mnist) -> None:
    partition = Partition.build(PartitionSpec("iid"), 3, mnist.train_labels, seed=2)
    _, labels = partition.stream(0, mnist.train_images, mnist.train_labels).draw(60_000)
    drawn = np.bincount(labels, minlength=10) / 60_000
    natural = np.bincount(mnist.train_labels, minlength=10) / 60_000
    assert np.abs(drawn - natural).max() < 0.01


def test_fixed_local_datasets_are_disjoint_and_of_the_given_size(mnist) -> None:
    partition = Partition.build(PartitionSpec("labels", per_node=2), 20, mnist.train_labels, seed=3)
    local = partition.local_datasets(mnist.train_labels, 512)
    assert [len(idx) for idx in local] == [512] * 20
    everything = np.concatenate(local)
    assert len(np.unique(everything)) == 20 * 512
    assert set(mnist.train_labels[local[13]].tolist()) == {3, 4}  # node 13: labels 3 and 4


def test_asking_for_more_samples_than_a_label_has_is_an_error(mnist) -> None:
    partition = Partition.build(PartitionSpec("labels", per_node=1), 10, mnist.train_labels, seed=0)
    with pytest.raises(ValueError, match="not enough samples of label 0"):
        partition.local_datasets(mnist.train_labels, 6000)  # label 0 has 5,923


def test_explicit_weights_with_ranges_like_the_dfl_simulator() -> None:
    spec = PartitionSpec("weights", weights=[{0: 1.0, 1: 3.0}, {9: (10.0, 15.0), 2: 5.0}])
    weights = label_weights(spec, 3, seed=4)
    assert weights[0].tolist() == pytest.approx([0.25, 0.75] + [0.0] * 8)
    assert np.array_equal(weights[2], weights[0])  # rows repeat cyclically
    assert set(np.flatnonzero(weights[1]).tolist()) == {2, 9}
    ratio = weights[1][9] / weights[1][2]  # drawn in [10, 15] against 5
    assert 2.0 <= ratio <= 3.0
    # The original simulator gives every label a node leaves out a weight drawn from [10, 15].
    spec = PartitionSpec("weights", weights=[{0: 100.0}], unset=(10.0, 15.0))
    row = label_weights(spec, 1, seed=4)[0]
    drawn = 100.0 * row[1:] / row[0]  # the unset labels' weights, recovered from the ratios
    assert ((drawn >= 10.0) & (drawn <= 15.0)).all()
    assert len(set(drawn.round(6))) == 9  # each drawn on its own
    with pytest.raises(ValueError, match="outside"):
        label_weights(PartitionSpec("weights", weights=[{10: 1.0}]), 1, seed=0)


@pytest.mark.parametrize("text", ["dirichlet", "dirichlet:-1", "labels:0", "labels:x", "zipf:2"])
def test_bad_partition_strings_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_partition(text)


def test_partition_build_takes_the_parsed_spec_not_the_text(mnist) -> None:
    with pytest.raises(TypeError, match=r"takes a PartitionSpec \(spec.partition\(\)\)"):
        Partition.build("iid", 4, mnist.train_labels, seed=0)  # type: ignore[arg-type]


# --- one seed scheme ------------------------------------------------------------------------------


def test_label_weights_come_from_the_label_weights_stream() -> None:
    weights = label_weights(PartitionSpec("dirichlet", alpha=0.5), 6, seed=9)
    expected = seeds.stream(9, Purpose.LABEL_WEIGHTS).dirichlet(np.full(10, 0.5), size=6)
    assert np.allclose(weights, expected / expected.sum(axis=1, keepdims=True))


def test_a_node_stream_is_its_train_stream_and_local_datasets_theirs(mnist) -> None:
    labels = mnist.train_labels
    partition = Partition.build(PartitionSpec("iid"), 4, labels, seed=5)
    own = SampleStream(
        mnist.train_images, labels, partition.weights[2], seeds.stream(5, Purpose.TRAIN_STREAM, 2)
    )
    drawn = partition.stream(2, mnist.train_images, labels).draw_indices(100)
    assert np.array_equal(drawn, own.draw_indices(100))
    rng = seeds.stream(5, Purpose.LOCAL_DATASETS)
    pool = rng.permutation(np.flatnonzero(labels == 0))  # label 0's samples, shuffled first
    node0 = partition.local_datasets(labels, 512)[0]
    zeros = node0[labels[node0] == 0]
    assert set(zeros.tolist()) == set(pool[: len(zeros)].tolist())  # node 0 takes the first


# --- the sequence of a stream does not depend on the sizes of the draws -----------------------


def small_stream(seed: int) -> SampleStream:
    labels = np.arange(300) % 10
    weights = np.linspace(1.0, 2.0, 10)
    return SampleStream(
        np.zeros((300, 1)), labels, weights / weights.sum(), np.random.default_rng(seed)
    )


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3 * BLOCK), max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_split_of_draws_gives_the_same_samples(sizes: list[int], seed: int) -> None:
    stream = small_stream(seed)
    parts = [stream.draw_indices(n) for n in sizes]
    together = small_stream(seed).draw_indices(sum(sizes))
    assert np.array_equal(np.concatenate([np.empty(0, np.int64), *parts]), together)
    assert [len(part) for part in parts] == sizes


def test_batches_of_64_are_the_first_samples_of_one_big_batch(mnist) -> None:
    partition = Partition.build(PartitionSpec("dirichlet", alpha=1.0), 3, mnist.train_labels, 1)
    sim = partition.stream(1, mnist.train_images, mnist.train_labels)
    injector = partition.stream(1, mnist.train_images, mnist.train_labels)
    batches = [sim.draw(64) for _ in range(40)]  # the simulator's batches
    images, labels = injector.draw(2560)  # one injection of another size
    assert np.array_equal(np.concatenate([b[1] for b in batches]), labels)
    assert np.array_equal(np.concatenate([b[0] for b in batches]), images)


def test_a_negative_draw_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot draw -1 samples"):
        small_stream(0).draw_indices(-1)
