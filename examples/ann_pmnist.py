"""HLOP on a plain PyTorch MLP (ReLU, no spikes): permuted MNIST, baseline vs HLOP.

Runs on the MNIST subset shipped with hlop (10 tasks of 6000 training and 1000 test images)
and prints the accuracy matrix, ACC and BWT of both::

    python examples/ann_pmnist.py [--tasks 10] [--epochs 3]
"""

from __future__ import annotations

import torch
from common import baseline_vs_hlop, parser, pmnist_tasks
from torch import nn


def mlp(hidden: int = 800) -> nn.Module:
    """784 - 800 - 800 - 10 with ReLU: the paper's PMNIST shape, without spikes."""
    return nn.Sequential(
        nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 10),
    )  # fmt: skip


def main() -> None:
    args = parser(__doc__, epochs=3).parse_args()
    benchmark = pmnist_tasks(args.tasks)

    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=args.lr)

    # every Linear, sizes from the data (the default)
    baseline_vs_hlop(benchmark, args, mlp, sgd, lrs=[0.001, 0.01, 0.01])


if __name__ == "__main__":
    main()
