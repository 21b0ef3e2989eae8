"""HLOP on an snnTorch network (Leaky neurons, surrogate gradients, BPTT): permuted MNIST.

Runs on the MNIST subset shipped with hlop (10 tasks of 6000 training and 1000 test images)
and prints the accuracy matrix, ACC and BWT of both::

    python examples/snntorch_pmnist.py [--tasks 10] [--epochs 2]

Needs snnTorch (``pip install -e ".[examples]"``).
"""

from __future__ import annotations

import argparse
import time

import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import surrogate
from torch import nn

import hlop
from hlop.metrics import average_accuracy, backward_transfer
from hlop.presets import build_benchmark, pmnist_sizes, preset


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


def accuracy(model: nn.Module, split) -> float:
    model.eval()
    with torch.no_grad():
        x, y = split.batch(torch.arange(len(split)))
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def run(benchmark, use_hlop: bool, args) -> list[list[float]]:
    torch.manual_seed(args.seed)
    model = SpikingMLP()
    hl = None
    if use_hlop:  # the paper's PMNIST schedule: [80, 200, 100] rows, then 70 per task, ...
        sizes = pmnist_sizes(len(benchmark.tasks))
        # per-call Hebbian updates (the default): the circuits learn at every time step, so
        # one iteration per call (6 per batch) instead of the built-in 5 per batch
        hl = hlop.HLOP(model, sizes=sizes, lrs=[0.001, 0.01, 0.01], iterations=1)
    shuffle = torch.Generator().manual_seed(args.seed)  # the same batches for both runs
    matrix = []
    for task in benchmark.tasks:
        if hl is not None:
            hl.begin_task()
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
        for _ in range(args.epochs):
            model.train()
            order = torch.randperm(len(task.train), generator=shuffle)
            for idx in order.split(args.batch_size):
                x, y = task.train.batch(idx)
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        if hl is not None:
            hl.end_task()
        matrix.append([accuracy(model, t.test) for t in benchmark.tasks[: len(matrix) + 1]])
        print(f"  after {task.name}: " + " ".join(f"{a:5.1f}" for a in matrix[-1]), flush=True)
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=2022)
    args = parser.parse_args()
    cfg = preset("pmnist-subset")
    cfg.tasks = args.tasks
    benchmark = build_benchmark(cfg)
    results = {}
    for name in ("baseline", "hlop"):
        start = time.perf_counter()
        print(f"{name}:", flush=True)
        matrix = run(benchmark, name == "hlop", args)
        results[name] = (average_accuracy(matrix), backward_transfer(matrix))
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    for name, (acc, bwt) in results.items():
        print(f"{name:>8}: ACC {acc:.2f}  BWT {bwt:.2f}")


if __name__ == "__main__":
    main()
