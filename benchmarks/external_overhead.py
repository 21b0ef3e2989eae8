"""What the harness adds to a user model's training step: ``hlop train --model`` against a
hand-written loop doing the same work.

Both train the same network (a factory of ``--model``, default a SpikingJelly-free MLP of
this file) on the same batches of the embedded permuted MNIST, one epoch of task 0, with
SGD: the hand-written loop is forward, cross-entropy, backward, step; the harness is the
continual loop's epoch (``hlop.loop.continual.train_epoch``) with the baseline method, the
network wrapped by :class:`hlop.models.external.ExternalModel` (the state reset after each
batch, the shape check of the scores) and the loop's bookkeeping (running loss and
accuracy, the finiteness check of the parameters).  The two alternate, ``--repeats`` times
each, and the medians are compared::

    python benchmarks/external_overhead.py [--model FILE.py:FUNCTION] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from hlop.loop.continual import train_epoch
from hlop.loop.state import RunState
from hlop.methods import Baseline
from hlop.models.external import ExternalModel, build_network
from hlop.run.presets import build_benchmark, preset


def mlp(input_shape, num_classes):
    """The default network: 784-800-800-10 with ReLU and biases."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 800), nn.ReLU(), nn.Linear(800, 800), nn.ReLU(),
        nn.Linear(800, num_classes),
    )  # fmt: skip


def hand_written(net: nn.Module, batches: list, lr: float) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    net.train()
    start = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return time.perf_counter() - start


def harness(net: nn.Module, reference: str, benchmark, batch_size: int, lr: float) -> float:
    cfg = preset("pmnist-subset")
    cfg.tasks, cfg.batch_size, cfg.lr = 1, batch_size, lr
    model = ExternalModel(net, reference, 10, 10)
    run = RunState(cfg.loop_settings(), model, benchmark, torch.device("cpu"), cfg.optimisation())
    run.generator.manual_seed(0)
    model.begin_task(0, 10)
    optimizer = run.optimisation.make_optimizer(model.trainable_parameters(), step=0)
    start = time.perf_counter()
    train_epoch(run, optimizer, [Baseline()])
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=f"{__file__}:mlp")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset("pmnist-subset")
    cfg.tasks = 1
    benchmark = build_benchmark(cfg)
    train = benchmark.tasks[0].train
    # the hand-written loop gets the batches the harness draws (same sizes, same order)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    bs = args.batch_size
    batches = [train.batch(order[i : i + bs]) for i in range(0, len(order), bs)]
    times = {"hand-written": [], "harness": []}
    for _ in range(args.repeats):
        torch.manual_seed(0)
        net = build_network(args.model, input_shape=(784,), num_classes=10)
        times["hand-written"].append(hand_written(net, batches, 0.1))
        torch.manual_seed(0)
        net = build_network(args.model, input_shape=(784,), num_classes=10)
        times["harness"].append(harness(net, args.model, benchmark, args.batch_size, 0.1))
    hand, ours = (statistics.median(times[k]) for k in ("hand-written", "harness"))
    print(f"{args.model}: one epoch of {len(train)} samples, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")  # fmt: skip
    for k, v in times.items():
        print(f"  {k:13s} {statistics.median(v):7.3f} s  (min {min(v):.3f}, max {max(v):.3f})")
    print(f"  harness / hand-written: {ours / hand:.3f} ({100 * (ours / hand - 1):+.1f}%)")


if __name__ == "__main__":
    main()
