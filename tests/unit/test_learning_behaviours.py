"""Honest and malicious node behaviours: what they train on, what they send, all seeded."""

from __future__ import annotations

import numpy as np
import pytest

from node.learning.behaviours import Behaviour, make_behaviour


@pytest.fixture
def batch(mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist.train_images[:64], mnist.train_labels[:64]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_a_normal_node_trains_on_its_batch_and_sends_its_model(batch) -> None:
    normal = make_behaviour("normal")
    assert (normal.trains, normal.sends) == (True, True)
    images, labels = normal.batch(*batch, rng())
    assert images is batch[0] and labels is batch[1]
    current = np.ones(5, np.float32)
    assert normal.outgoing(current, rng()) is current


def test_an_observer_neither_trains_nor_sends() -> None:
    observer = make_behaviour("observer")
    assert (observer.trains, observer.sends) == (False, False)


def test_random_data_replaces_every_pixel_with_uniform_noise_and_keeps_labels(batch) -> None:
    images, labels = make_behaviour("random-data").batch(*batch, rng())
    assert images.dtype == np.uint8 and images.shape == batch[0].shape
    assert labels is batch[1]
    # 50,176 uniform draws over 0..255: mean 127.5 (std of the mean ~0.33), both ends reached,
    # and unlike MNIST (about 80 % black) almost no zeros.
    assert images.mean() == pytest.approx(127.5, abs=2)
    assert images.min() == 0 and images.max() == 255
    assert (images == 0).mean() < 0.01
    again, _ = make_behaviour("random-data").batch(*batch, rng())
    assert np.array_equal(images, again)


def test_shuffled_labels_are_uniform_random_classes_on_the_same_images(batch) -> None:
    images, labels = make_behaviour("shuffle-labels").batch(*batch, rng())
    assert images is batch[0]
    assert labels.dtype == batch[1].dtype and labels.shape == (64,)
    assert set(labels.tolist()) <= set(range(10))
    assert (labels != batch[1]).mean() > 0.7  # a random label is right 1 time in 10
    _, other_seed = make_behaviour("shuffle-labels").batch(*batch, rng(1))
    assert not np.array_equal(labels, other_seed)


def test_model_poisoning_trains_but_sends_uniform_weights_in_0_to_0_001() -> None:
    poisoner = make_behaviour("random-model")
    assert poisoner.trains and poisoner.sends
    current = np.full(431_080, 7.0, np.float32)
    sent = poisoner.outgoing(current, rng())
    assert sent.dtype == np.float32 and sent.shape == current.shape
    assert sent.min() >= 0.0 and sent.max() < 0.001
    assert sent.mean() == pytest.approx(0.0005, rel=0.01)
    assert (current == 7.0).all()


def test_a_lazy_client_copies_a_peer_and_adds_gaussian_noise_of_the_given_variance() -> None:
    lazy = make_behaviour("lazy", variance=0.04)
    assert not lazy.trains and lazy.sends
    peers = [np.zeros(200_000, np.float32), np.full(200_000, 100.0, np.float32)]
    sent = lazy.outgoing(np.full(200_000, -50.0, np.float32), rng(), peers)
    copied = min(peers, key=lambda p: np.abs(sent - p).mean())
    noise = sent - copied
    assert noise.mean() == pytest.approx(0.0, abs=0.002)
    assert noise.var() == pytest.approx(0.04, rel=0.02)
    picks = {
        float(np.round(lazy.outgoing(peers[0][:10], rng(s), [p[:10] for p in peers]).mean()))
        for s in range(20)
    }
    assert picks == {0.0, 100.0}  # the peer is drawn at random, both get copied


def test_a_lazy_client_with_no_peer_disguises_its_own_model() -> None:
    sent = make_behaviour("plagiarist").outgoing(np.full(100_000, 3.0, np.float32), rng())
    assert sent.mean() == pytest.approx(3.0, abs=0.01)
    assert sent.var() == pytest.approx(0.01, rel=0.05)


def test_duplication_never_trains_and_resends_its_current_model() -> None:
    duplicator = make_behaviour("malicious_duplication_attack")
    assert duplicator.name == "duplication"
    assert not duplicator.trains and duplicator.sends
    current = np.arange(4, dtype=np.float32)
    assert duplicator.outgoing(current, rng(), [np.zeros(4, np.float32)]) is current


def test_behaviours_are_looked_up_by_name_or_by_the_dfl_simulator_type() -> None:
    assert make_behaviour("malicious_model_poisoning_random_model").name == "random-model"
    assert make_behaviour("malicious_data_poisoning_random_data").name == "random-data"
    assert isinstance(make_behaviour("model-poisoning", high=0.5), Behaviour)
    with pytest.raises(ValueError, match="unknown behaviour 'sleepy'"):
        make_behaviour("sleepy")
    with pytest.raises(ValueError, match="does not take options"):
        make_behaviour("normal", variance=1.0)
