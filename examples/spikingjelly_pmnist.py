"""HLOP on a SpikingJelly multi-step MLP (LIF neurons, surrogate gradients, BPTT): permuted
MNIST, baseline vs ``hlop.HLOP`` with its default settings (circuit sizes found from the data).

Multi-step layers (``step_mode="m"``) take the whole ``[T, B, ...]`` sequence in one call, so
each circuit learns once per batch from its ``T x B`` rows.  Runs on the MNIST subset shipped
with hlop and prints the accuracy matrices, ACC and BWT::

    python examples/spikingjelly_pmnist.py [--optimizer sgd|adam] [--tasks 5] [--epochs 1]

Needs SpikingJelly (``pip install -e ".[spikingjelly]"``).
"""

from __future__ import annotations

from common import baseline_vs_hlop, optimizer_choice, parser, pmnist_tasks
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import Tensor, nn


def spiking_mlp(hidden: int = 800) -> nn.Module:
    """784 - 800 - 800 - 10, SpikingJelly's multi-step layers with their default biases."""

    def lif() -> nn.Module:
        return neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")

    return nn.Sequential(
        layer.Linear(784, hidden, step_mode="m"), lif(),
        layer.Linear(hidden, hidden, step_mode="m"), lif(),
        layer.Linear(hidden, 10, step_mode="m"),
    )  # fmt: skip


def forward(steps: int):
    def run(model: nn.Module, x: Tensor) -> Tensor:
        out = model(x.unsqueeze(0).repeat(steps, 1, 1)).mean(0)  # the image at every step
        functional.reset_net(model)
        return out

    return run


def main() -> None:
    p = parser(__doc__, epochs=1, tasks=5)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--timesteps", type=int, default=4)
    args = p.parse_args()
    benchmark = pmnist_tasks(args.tasks)
    # every Linear, every setting at its default (sizes from the data)
    baseline_vs_hlop(benchmark, args, spiking_mlp, optimizer_choice(args), forward(args.timesteps))


if __name__ == "__main__":
    main()
