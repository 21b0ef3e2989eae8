"""What the examples share: the permuted-MNIST tasks shipped with hlop, one continual training
loop (the same batches for every run of a seed), test accuracy, and the closing table.

Not part of the library: each example builds its own network, the way a user would, and
attaches ``hlop.HLOP`` to it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hlop
from hlop.loop.metrics import average_accuracy, backward_transfer
from hlop.run.presets import build_benchmark, preset

Forward = Callable[[nn.Module, Tensor], Tensor]


def plain(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def parser(doc: str, epochs: int, tasks: int = 10) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--tasks", type=int, default=tasks)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=2022)
    return p


def pmnist_tasks(tasks: int):
    """Permuted MNIST on the subset shipped in the package (6000 training, 1000 test images
    per task)."""
    cfg = preset("pmnist-subset")
    cfg.tasks = tasks
    return build_benchmark(cfg)


def accuracy(model: nn.Module, split, forward: Forward = plain) -> float:
    model.eval()
    with torch.no_grad():
        correct = 0
        for idx in torch.arange(len(split)).split(500):
            x, y = split.batch(idx)
            correct += int((forward(model, x).argmax(1) == y).sum())
    return 100.0 * correct / len(split)


def continual(
    benchmark,
    model: nn.Module,
    hl: hlop.HLOP | None,
    args: argparse.Namespace,
    optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    forward: Forward = plain,
) -> list[list[float]]:
    """Train the tasks in order (a fresh optimiser per task), ``hl`` (if any) told where each
    task begins and ends and protecting the optimiser's steps; returns the accuracy matrix."""
    shuffle = torch.Generator().manual_seed(args.seed)  # the same batches for every run
    matrix = []
    for task in benchmark.tasks:
        opt = optimizer(model)
        if hl is not None:
            hl.begin_task()
            hl.protect(opt)  # projects each step's change unless the optimiser is plain SGD
        for _ in range(args.epochs):
            model.train()
            order = torch.randperm(len(task.train), generator=shuffle)
            for idx in order.split(args.batch_size):
                x, y = task.train.batch(idx)
                opt.zero_grad()
                F.cross_entropy(forward(model, x), y).backward()
                opt.step()
        if hl is not None:
            hl.end_task()
        matrix.append(
            [accuracy(model, t.test, forward) for t in benchmark.tasks[: len(matrix) + 1]]
        )
        print(f"  after {task.name}: " + " ".join(f"{a:5.1f}" for a in matrix[-1]), flush=True)
    if hl is not None:
        print(f"  lateral neurons added per task: {hl.chosen_sizes}", flush=True)
    return matrix


def optimizer_choice(args: argparse.Namespace) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """``--optimizer sgd`` (lr ``--lr``, momentum 0.9) or ``adam`` (lr 1e-3)."""
    if args.optimizer == "adam":
        return lambda m: torch.optim.Adam(m.parameters(), lr=1e-3)
    return lambda m: torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9)


def baseline_vs_hlop(
    benchmark,
    args: argparse.Namespace,
    make_model: Callable[[], nn.Module],
    optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    forward: Forward = plain,
    **hlop_options,
) -> None:
    """Train ``make_model()`` twice from the same seed and batches: fine-tuning, then with
    ``hlop.HLOP(model, **hlop_options)``; print both matrices and the table."""

    def run(use_hlop: bool) -> Callable[[], list[list[float]]]:
        def go() -> list[list[float]]:
            torch.manual_seed(args.seed)
            model = make_model()
            hl = hlop.HLOP(model, **hlop_options) if use_hlop else None
            return continual(benchmark, model, hl, args, optimizer, forward)

        return go

    compare({"baseline": run(False), "hlop.HLOP": run(True)})


def compare(runs: dict[str, Callable[[], list[list[float]]]]) -> None:
    """Run each (name -> function returning an accuracy matrix) and print ACC and BWT."""
    results = {}
    for name, run in runs.items():
        start = time.perf_counter()
        print(f"{name}:", flush=True)
        matrix = run()
        results[name] = (average_accuracy(matrix), backward_transfer(matrix))
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    for name, (acc, bwt) in results.items():
        print(f"{name:>20}: ACC {acc:.2f}  BWT {bwt:.2f}")
