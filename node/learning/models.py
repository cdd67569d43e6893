"""The two networks the papers train, built so that every node starts from identical weights.

LeNet follows the DFL paper's Caffe model layer for layer (names included, so that a genesis block
reads like the prototxt); the MLP is BLADE-FL's one-hidden-layer network. Each model carries its own
input transform, because the two papers feed the same uint8 pixels differently: Caffe multiplies
by 1/256 (the prototxt's `scale: 0.00390625`), BLADE-FL normalises with MNIST's mean and std.
"""

from __future__ import annotations

import math

import torch
from torch import nn

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

# BLADE-FL's transform: ToTensor (x/255) then Normalize((0.1307,), (0.3081,)).
_MNIST_MEAN = 0.1307
_MNIST_STD = 0.3081


def caffe_xavier_(weight: torch.Tensor, generator: torch.Generator | None = None) -> None:
    """Caffe's `xavier` filler with its defaults: U(-a, a), a = sqrt(3 / fan_in).

    Caffe's fan_in is count / num_output (in_channels * kh * kw for a convolution), which is not
    what torch's xavier_uniform_ uses (it averages fan_in and fan_out), hence this function.
    """
    fan_in = weight[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound, generator=generator)


def _torch_default_init_(layer: nn.Linear, generator: torch.Generator | None) -> None:
    """nn.Linear's own reset_parameters, but drawing from `generator` instead of the global RNG."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(layer.weight.shape[1])
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class LeNet(nn.Module):
    """Caffe's MNIST LeNet: conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2, ip 500, ReLU, ip 10.

    431,080 parameters. There is no ReLU after the convolutions: the Caffe example has none.
    The softmax lives in the loss, as in SoftmaxWithLoss.
    """

    input_scale = 1.0 / 256.0

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.ip1 = nn.Linear(50 * 4 * 4, 500)
        self.ip2 = nn.Linear(500, NUM_CLASSES)
        for layer in (self.conv1, self.conv2, self.ip1, self.ip2):
            caffe_xavier_(layer.weight, generator)
            nn.init.zeros_(layer.bias)  # bias_filler { type: "constant" }, value 0

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, 28, 28) to the network's input (N, 1, 28, 28), scaled as Caffe does."""
        return images.reshape(-1, 1, *IMAGE_SHAPE).to(torch.float32) * self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last from conv1's output on: on CPU, max-pooling an NCHW tensor and
        # convolving it cost about twice as much (9 ms against 19 ms for 100 samples; a training
        # step 17 ms against 26 ms). The weights stay NCHW views of the flat vector.
        x = self.conv1(x).contiguous(memory_format=torch.channels_last)
        x = nn.functional.max_pool2d(x, 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2)
        x = nn.functional.relu(self.ip1(x.flatten(1)))
        return self.ip2(x)


class MLP(nn.Module):
    """BLADE-FL's MLP 784-256-10 (one hidden layer of 256 ReLU units), torch's default init."""

    def __init__(self, hidden: int = 256, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IMAGE_SHAPE[0] * IMAGE_SHAPE[1], hidden)
        self.fc2 = nn.Linear(hidden, NUM_CLASSES)
        for layer in (self.fc1, self.fc2):
            _torch_default_init_(layer, generator)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float vectors (N, 784), as BLADE-FL's loader does."""
        x = images.reshape(images.shape[0], -1).to(torch.float32) / 255.0
        return (x - _MNIST_MEAN) / _MNIST_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.relu(self.fc1(x)))


MODELS = {"lenet": LeNet, "mlp": MLP}


def build_model(name: str, seed: int | None = None) -> nn.Module:
    """A fresh model by name; the same seed gives bit-identical weights in every process."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    return cls(generator=generator)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
