"""HLOP on an snnTorch network (Leaky neurons, surrogate gradients, BPTT): permuted MNIST.

Runs on the MNIST subset shipped with hlop (10 tasks of 6000 training and 1000 test images)
and prints the accuracy matrix, ACC and BWT of both::

    python examples/snntorch_pmnist.py [--tasks 10] [--epochs 2]

Needs snnTorch (``pip install -e ".[examples]"``).
"""

from __future__ import annotations

import snntorch as snn
import torch
from common import baseline_vs_hlop, parser, pmnist_tasks
from snntorch import surrogate
from torch import nn


class SpikingMLP(nn.Module):
    """784 - 800 - 800 - 10: Leaky neurons (snnTorch) on the hidden layers, the image injected
    as a current at every one of ``steps`` time steps, the scores the mean of the per-step
    outputs; trained by BPTT through the loop with a fast-sigmoid surrogate gradient."""

    def __init__(self, hidden: int = 800, steps: int = 6) -> None:
        super().__init__()
        self.steps = steps
        self.fc1, self.fc2 = nn.Linear(784, hidden), nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 10)
        grad = surrogate.fast_sigmoid(slope=25)
        self.lif1 = snn.Leaky(beta=0.9, threshold=0.5, spike_grad=grad)
        self.lif2 = snn.Leaky(beta=0.9, threshold=0.5, spike_grad=grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        out = 0
        for _ in range(self.steps):  # every layer is called once per time step
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            out = out + self.fc3(spk2)
        return out / self.steps


def main() -> None:
    args = parser(__doc__, epochs=2).parse_args()
    benchmark = pmnist_tasks(args.tasks)

    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=args.lr)

    # sizes from the data (the default); per-call Hebbian updates: the circuits learn at
    # every time step, so one iteration per call (6 per batch)
    baseline_vs_hlop(benchmark, args, SpikingMLP, sgd, lrs=[0.001, 0.01, 0.01], iterations=1)


if __name__ == "__main__":
    main()
