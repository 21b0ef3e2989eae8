"""HLOP on a SpikingJelly multi-step convolutional network with biases: permuted MNIST,
baseline vs ``hlop.HLOP`` with its default settings (circuit sizes found from the data).

Multi-step ``layer.Conv2d`` receives ``[T, B, C, H, W]``; its circuit learns from the
unfolded patches of every step, and each layer's bias is protected as a weight on a constant
input.  Runs on the MNIST subset shipped with hlop and prints the accuracy matrices, ACC and
BWT::

    python examples/spikingjelly_cnn.py [--tasks 3] [--epochs 1] [--optimizer sgd|adam]

Needs SpikingJelly (``pip install -e ".[spikingjelly]"``).
"""

from __future__ import annotations

from common import baseline_vs_hlop, optimizer_choice, parser, pmnist_tasks
from models import spikingjelly_cnn_body
from spikingjelly.activation_based import functional
from torch import Tensor, nn


def spiking_cnn(channels: int = 16) -> nn.Module:
    """conv 3x3 (1 -> c) - LIF - avg-pool 2 - conv 3x3 (c -> 2c) - LIF - avg-pool 2 - linear
    (2c x 7 x 7 -> 10), multi-step, every layer with its (default) bias: the network of
    ``examples/models.py``, which the harness runs with ``--model``."""
    return spikingjelly_cnn_body(1, 28, 28, 10, channels)


def forward(steps: int):
    def run(model: nn.Module, x: Tensor) -> Tensor:
        images = x.view(-1, 1, 28, 28).unsqueeze(0).repeat(steps, 1, 1, 1, 1)
        out = model(images).mean(0)  # the (permuted) image at every step
        functional.reset_net(model)
        return out

    return run


def main() -> None:
    p = parser(__doc__, epochs=1, tasks=3)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--timesteps", type=int, default=4)
    p.set_defaults(lr=0.01)  # with momentum 0.9; 0.1 diverges
    args = p.parse_args()
    benchmark = pmnist_tasks(args.tasks)
    # every Conv2d and Linear, every setting at its default (sizes from the data)
    baseline_vs_hlop(benchmark, args, spiking_cnn, optimizer_choice(args), forward(args.timesteps))


if __name__ == "__main__":
    main()
