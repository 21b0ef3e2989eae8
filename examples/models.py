"""Networks of one's own for the harness: ``hlop train|compare BENCHMARK --model
examples/models.py:FUNCTION``.

Each factory takes the keywords it needs of ``input_shape``, ``num_classes``, ``tasks`` and
``timesteps`` and returns an ``nn.Module`` whose forward maps a batch of inputs to class
scores ``[B, num_classes]``.  The harness resets SpikingJelly's neuron states after every
batch, protects every ``nn.Linear`` / ``nn.Conv2d`` (biases included) for HLOP and GPM, and
fixes what no circuit protects (batch norm, learnable time constants) after the first task
(``--set unprotected=train`` lets them train)::

    hlop compare pmnist-subset --model examples/models.py:ann \\
        --methods baseline,hlop,ewc,gpm,replay --seeds 1,2,3 --out-dir study-ann
    hlop compare pmnist-subset --model examples/models.py:spikingjelly_cnn --timesteps 4 \\
        --methods baseline,hlop,ewc,gpm,replay --seeds 1,2,3 --out-dir study-sj-cnn

The SpikingJelly networks need ``pip install -e ".[spikingjelly]"``.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


def ann(input_shape, num_classes, hidden: int = 800) -> nn.Module:
    """A plain ReLU network: flatten - 800 - ReLU - 800 - ReLU - classes."""
    n = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )  # fmt: skip


class Repeated(nn.Module):
    """A SpikingJelly multi-step network fed the same (static) image at each of ``steps``
    steps: ``[B, ...]`` -> ``[T, B, C, H, W]``, scores averaged over time."""

    def __init__(self, body: nn.Module, image: tuple[int, int, int], steps: int) -> None:
        super().__init__()
        self.body, self.image, self.steps = body, tuple(image), steps

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.image)
        return self.body(x.unsqueeze(0).expand(self.steps, *x.shape)).mean(0)


def image_shape(input_shape) -> tuple[int, int, int]:
    """(C, H, W) of the benchmark's samples: flat MNIST-like inputs are square, 1 channel."""
    if len(input_shape) == 3:
        return tuple(input_shape)
    side = math.isqrt(math.prod(input_shape))
    if side * side != math.prod(input_shape):
        raise ValueError(f"cannot read inputs of shape {tuple(input_shape)} as images")
    return (1, side, side)


def spikingjelly_cnn_body(c_in: int, h: int, w: int, classes: int, channels: int = 16) -> nn.Module:
    """SpikingJelly, multi-step: conv 3x3 (C -> c) - LIF - avg-pool 2 - conv 3x3 (c -> 2c) -
    LIF - avg-pool 2 - linear, every layer with its bias."""
    from spikingjelly.activation_based import layer, neuron, surrogate

    def lif() -> nn.Module:  # no batch norm: a threshold of 0.5 on undecayed input fires
        return neuron.LIFNode(
            tau=2.0,
            decay_input=False,
            v_threshold=0.5,
            surrogate_function=surrogate.ATan(),
            step_mode="m",
        )

    return nn.Sequential(
        layer.Conv2d(c_in, channels, 3, padding=1, step_mode="m"), lif(),
        layer.AvgPool2d(2, step_mode="m"),
        layer.Conv2d(channels, 2 * channels, 3, padding=1, step_mode="m"), lif(),
        layer.AvgPool2d(2, step_mode="m"),
        layer.Flatten(start_dim=1, step_mode="m"),
        layer.Linear(2 * channels * (h // 4) * (w // 4), classes, step_mode="m"),
    )  # fmt: skip


def spikingjelly_cnn(input_shape, num_classes, timesteps, channels: int = 16) -> nn.Module:
    """:func:`spikingjelly_cnn_body`, the image at every step, scores averaged over time."""
    c_in, h, w = image_shape(input_shape)
    return Repeated(
        spikingjelly_cnn_body(c_in, h, w, num_classes, channels), (c_in, h, w), timesteps
    )


def spikingjelly_zoo(input_shape, num_classes, timesteps, channels: int = 16) -> nn.Module:
    """SpikingJelly's model-zoo ``parametric_lif_net.MNISTNet`` (convolutions without bias,
    batch norm, parametric LIF neurons with a learnable time constant, dropout, a voting
    layer over 10 neurons a class), ``channels`` wide, multi-step."""
    from spikingjelly.activation_based import functional, neuron, surrogate
    from spikingjelly.activation_based.model.parametric_lif_net import MNISTNet

    if num_classes != 10:
        raise ValueError(f"MNISTNet's voting layer gives 10 classes, the benchmark {num_classes}")
    net = MNISTNet(
        channels=channels,
        spiking_neuron=neuron.ParametricLIFNode,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
    )
    functional.set_step_mode(net, "m")
    return Repeated(net, image_shape(input_shape), timesteps)
