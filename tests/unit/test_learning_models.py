"""The models are the papers' models: layers, sizes, initialisation, input scaling, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from node.learning.codec import layer_shapes
from node.learning.models import LeNet, build_model, parameter_count

LENET_LAYERS = [
    ("conv1.weight", (20, 1, 5, 5)),
    ("conv1.bias", (20,)),
    ("conv2.weight", (50, 20, 5, 5)),
    ("conv2.bias", (50,)),
    ("ip1.weight", (500, 800)),
    ("ip1.bias", (500,)),
    ("ip2.weight", (10, 500)),
    ("ip2.bias", (10,)),
]


def test_lenet_has_the_caffe_layers_and_431080_parameters() -> None:
    model = build_model("lenet", seed=0)
    assert layer_shapes(model) == LENET_LAYERS
    assert parameter_count(model) == 431_080
    assert model(model.prepare(torch.zeros(3, 28, 28, dtype=torch.uint8))).shape == (3, 10)


def test_mlp_is_784_256_10() -> None:
    model = build_model("mlp", seed=0)
    assert layer_shapes(model) == [
        ("fc1.weight", (256, 784)),
        ("fc1.bias", (256,)),
        ("fc2.weight", (10, 256)),
        ("fc2.bias", (10,)),
    ]
    assert parameter_count(model) == 784 * 256 + 256 + 256 * 10 + 10


@pytest.mark.parametrize(("layer", "fan_in"), [("conv1", 25), ("conv2", 500), ("ip1", 800)])
def test_lenet_weights_follow_caffe_xavier_and_biases_start_at_zero(
    layer: str, fan_in: int
) -> None:
    model = build_model("lenet", seed=3)
    weight = getattr(model, layer).weight.detach().numpy()
    bound = math.sqrt(3.0 / fan_in)  # Caffe: U(-a, a), a = sqrt(3 / fan_in)
    assert np.abs(weight).max() <= bound
    assert np.abs(weight).max() > 0.95 * bound
    # The std of U(-a, a) is a / sqrt(3) = sqrt(1 / fan_in); torch's xavier would give less.
    assert weight.std() == pytest.approx(math.sqrt(1.0 / fan_in), rel=0.05)
    assert not getattr(model, layer).bias.detach().numpy().any()


def test_lenet_scales_uint8_pixels_by_1_over_256() -> None:
    pixels = torch.tensor([[0, 128, 255] + [0] * 781], dtype=torch.uint8)
    x = LeNet().prepare(pixels)
    assert x.shape == (1, 1, 28, 28)
    assert x.flatten()[:3].tolist() == [0.0, 0.5, 255 / 256]


def test_the_same_seed_gives_identical_weights_and_another_seed_does_not() -> None:
    for name in ("lenet", "mlp"):
        a, b, c = (build_model(name, seed=s).state_dict() for s in (5, 5, 6))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not torch.equal(a[next(iter(a))], c[next(iter(c))])


def test_an_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="lenet, mlp"):
        build_model("resnet")
