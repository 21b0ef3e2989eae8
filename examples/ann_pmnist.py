"""HLOP on a plain PyTorch MLP (ReLU, no spikes): permuted MNIST, baseline vs HLOP.

Runs on the MNIST subset shipped with hlop (10 tasks of 6000 training and 1000 test images)
and prints the accuracy matrix, ACC and BWT of both::

    python examples/ann_pmnist.py [--tasks 10] [--epochs 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

import hlop
from hlop.metrics import average_accuracy, backward_transfer
from hlop.presets import build_benchmark, pmnist_sizes, preset


def mlp(hidden: int = 800) -> nn.Module:
    """784 - 800 - 800 - 10 with ReLU: the paper's PMNIST shape, without spikes."""
    return nn.Sequential(
        nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 10),
    )  # fmt: skip


def accuracy(model: nn.Module, split) -> float:
    model.eval()
    with torch.no_grad():
        x, y = split.batch(torch.arange(len(split)))
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def run(benchmark, use_hlop: bool, args) -> list[list[float]]:
    torch.manual_seed(args.seed)
    model = mlp()
    hl = None
    if use_hlop:  # the paper's PMNIST schedule: [80, 200, 100] rows, then 70 per task, ...
        sizes = pmnist_sizes(len(benchmark.tasks))
        hl = hlop.HLOP(model, sizes=sizes, lrs=[0.001, 0.01, 0.01])
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
    parser.add_argument("--epochs", type=int, default=3)
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
