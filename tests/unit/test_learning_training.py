"""Caffe's SGD on flat weights, and a learner that actually learns MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from node.learning.codec import layer_shapes, layer_slices
from node.learning.solver import LENET_SOLVER, CaffeSGD, SolverConfig
from node.learning.training import Learner, configure_torch, train_epochs


def test_inv_policy_matches_caffe_formula() -> None:
    assert LENET_SOLVER.learning_rate(0) == 0.01
    # base_lr * (1 + gamma * iter) ^ -power = 0.01 * 2 ^ -0.75 at iteration 10,000
    assert LENET_SOLVER.learning_rate(10_000) == pytest.approx(0.01 * 2**-0.75)
    assert SolverConfig(lr_policy="fixed").learning_rate(10_000) == 0.01
    with pytest.raises(ValueError, match="step"):
        SolverConfig(lr_policy="step").learning_rate(0)


def test_caffe_sgd_two_steps_by_hand() -> None:
    # One weight (lr_mult 1) and one bias (lr_mult 2), decay on both (Caffe's default decay_mult).
    config = SolverConfig(base_lr=0.1, momentum=0.5, weight_decay=0.1, lr_policy="fixed")
    solver = CaffeSGD(config, lr_mult=torch.tensor([1.0, 2.0]), decay_mult=torch.ones(2))
    w = torch.tensor([1.0, 2.0])
    # step 1: g = grad + 0.1 w = [0.6, -0.8]; h = lr * mult * g = [0.06, -0.16]; w -= h
    solver.step(w, torch.tensor([0.5, -1.0]))
    assert w.tolist() == pytest.approx([0.94, 2.16])
    # step 2: g = [0.594, -0.784]; h = 0.5 h + [0.0594, -0.1568] = [0.0894, -0.2368]
    solver.step(w, torch.tensor([0.5, -1.0]))
    assert w.tolist() == pytest.approx([0.8506, 2.3968])
    assert solver.iteration == 2


def test_momentum_history_is_in_update_units_as_in_caffe_not_torch() -> None:
    # rate 0.1 then 0.05 (inv, gamma 1, power 1). Caffe: h1 = 0.1, h2 = 0.5 * 0.1 + 0.05 = 0.1,
    # so w = 1 - 0.1 - 0.1 = 0.8. torch.optim.SGD would give 1 - 0.1 - 0.05 * 1.5 = 0.825.
    config = SolverConfig(
        base_lr=0.1, momentum=0.5, weight_decay=0.0, lr_policy="inv", gamma=1.0, power=1.0
    )
    solver = CaffeSGD(config, lr_mult=torch.ones(1), decay_mult=torch.ones(1))
    w = torch.tensor([1.0])
    for _ in range(2):
        solver.step(w, torch.tensor([1.0]))
    assert w.item() == pytest.approx(0.8)


def test_lenet_learner_doubles_the_bias_rate_and_decays_everything() -> None:
    learner = Learner("lenet", seed=0)
    slices = layer_slices(layer_shapes(learner.module))
    assert torch.all(learner.solver.lr_mult[slices["conv1.bias"]] == 2.0)
    assert torch.all(learner.solver.lr_mult[slices["ip1.weight"]] == 1.0)
    assert torch.all(learner.solver.local_decay == 5e-4)


def test_parameters_are_views_of_the_flat_vector_through_training(mnist) -> None:
    learner = Learner("lenet", seed=0)
    learner.train_step(mnist.train_images[:64], mnist.train_labels[:64])
    flat = learner.weights()
    assert flat.dtype == np.float32 and flat.shape == (431_080,)
    conv1 = learner.module.conv1.weight.detach().numpy().ravel()
    assert np.array_equal(flat[: conv1.size], conv1)
    learner.set_weights(np.zeros_like(flat))
    assert not learner.module.ip2.bias.detach().numpy().any()


def test_set_weights_keeps_momentum_and_schedule_like_caffe_set_parameter(mnist) -> None:
    learner = Learner("lenet", seed=0)
    learner.train_step(mnist.train_images[:64], mnist.train_labels[:64])
    history = learner.solver.history.clone()
    learner.set_weights(Learner("lenet", seed=9).weights())
    assert learner.solver.iteration == 1
    assert torch.equal(learner.solver.history, history)
    assert history.abs().sum() > 0


def test_lenet_learns_mnist_in_a_hundred_steps(mnist) -> None:
    learner = Learner("lenet", seed=1)
    test_x, test_y = mnist.test_images[:1000], mnist.test_labels[:1000]
    before = learner.accuracy(test_x, test_y)
    rng = np.random.default_rng(0)
    for _ in range(100):
        picks = rng.integers(0, len(mnist.train_labels), 64)
        learner.train_step(mnist.train_images[picks], mnist.train_labels[picks])
    after = learner.accuracy(test_x, test_y)
    assert before < 0.3
    assert after > 0.85


def test_mlp_learns_from_a_512_sample_local_dataset(mnist) -> None:
    learner = Learner("mlp", seed=1)
    test_x, test_y = mnist.test_images[:1000], mnist.test_labels[:1000]
    before = learner.accuracy(test_x, test_y)
    x, y = mnist.train_images[:512], mnist.train_labels[:512]
    losses = train_epochs(learner, x, y, 10, 32, np.random.default_rng(0))
    assert len(losses) == 10 * 16  # ten passes of 512 / 32 batches
    assert np.mean(losses[-16:]) < 0.5 * np.mean(losses[:16])
    assert before < 0.2
    assert learner.accuracy(test_x, test_y) > 0.7  # plain SGD at lr 0.01 on 512 samples: ~0.75


def test_accuracy_of_a_received_model_leaves_our_own_alone(mnist) -> None:
    ours = Learner("lenet", seed=1)
    mine = ours.weights()
    theirs = Learner("lenet", seed=2)
    for start in range(0, 64 * 30, 64):
        theirs.train_step(
            mnist.train_images[start : start + 64], mnist.train_labels[start : start + 64]
        )
    x, y = mnist.test_images[:500], mnist.test_labels[:500]
    assert ours.accuracy_of(theirs.weights(), x, y) == theirs.accuracy(x, y)
    assert np.array_equal(ours.weights(), mine)


def test_batches_must_be_uint8_pixels_with_matching_labels() -> None:
    learner = Learner("mlp", seed=0)
    with pytest.raises(TypeError, match="uint8"):
        learner.train_step(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        learner.train_step(np.zeros((2, 28, 28), np.uint8), np.zeros(3, np.int64))


def test_configure_torch_pins_the_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        configure_torch(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
