"""What the harness adds to a user model's training step: ``hlop train --model`` against a
hand-written loop doing the same work.

Both train the same network (a factory of ``--model``, default a SpikingJelly-free MLP of
this file) on the same batches of the embedded permuted MNIST, one epoch of task 0, with
SGD: the hand-written loop is forward, cross-entropy, backward, step, and the reset of the
network's state after each batch where it has any (SpikingJelly's memories, a
``reset_state()``; none for the MLP); its batches are drawn before the clock starts (the
order the harness draws), so the comparison charges the harness its data too.  The harness
is the continual loop's epoch (``hlop.loop.continual.train_epoch``) with the baseline
method, the network wrapped by :class:`hlop.models.external.ExternalModel` (the state reset
after each batch, the shape check of the scores) and the loop's bookkeeping (fetching and
transforming each batch, running loss and accuracy, the loss and parameter finiteness
checks).  After one untimed round of each (first-call costs: imports, allocations), the two
alternate, ``--repeats`` times each; the medians are compared, and the median of the
per-round ratios is shown too.  ``--clock cpu`` times the process's CPU time instead of the
wall clock: steadier on a shared machine (time spent waiting for a core is not counted)::

    python benchmarks/external_overhead.py [--model FILE.py:FUNCTION] [--repeats 5]
        [--threads 1] [--clock wall|cpu]
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


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def stateful(net: nn.Module) -> list:
    """What a hand-written loop resets after each batch (as ``functional.reset_net``, and the
    network's own ``reset_state()``): nothing for a network without state."""
    found = [m.reset for m in net.modules() if hasattr(m, "_memories") and hasattr(m, "reset")]
    return found + ([net.reset_state] if hasattr(net, "reset_state") else [])


def hand_written(net: nn.Module, batches: list, lr: float) -> float:
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    resets = stateful(net)
    net.train()
    start = clock()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        for reset in resets:
            reset()
        opt.step()
    return clock() - start


def harness(net: nn.Module, reference: str, benchmark, batch_size: int, lr: float) -> float:
    cfg = preset("pmnist-subset")
    cfg.tasks, cfg.batch_size, cfg.lr = 1, batch_size, lr
    model = ExternalModel(net, reference, 10, 10)
    run = RunState(cfg.loop_settings(), model, benchmark, torch.device("cpu"), cfg.optimisation())
    run.generator.manual_seed(0)
    model.begin_task(0, 10)
    optimizer = run.optimisation.make_optimizer(model.trainable_parameters(), step=0)
    start = clock()
    train_epoch(run, optimizer, [Baseline()])
    return clock() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=f"{__file__}:mlp")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    p.add_argument("--timesteps", type=int, default=4, help="T, for a spiking network's factory")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = p.parse_args()
    global clock
    clock = CLOCKS[args.clock]
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

    def network() -> nn.Module:
        torch.manual_seed(0)
        return build_network(
            args.model, input_shape=(784,), num_classes=10, tasks=1, timesteps=args.timesteps
        )

    times = {"hand-written": [], "harness": []}
    for round_ in range(args.repeats + 1):  # round 0: untimed
        hand = hand_written(network(), batches, 0.1)
        ours = harness(network(), args.model, benchmark, args.batch_size, 0.1)
        if round_:
            times["hand-written"].append(hand)
            times["harness"].append(ours)
    hand, ours = (statistics.median(times[k]) for k in ("hand-written", "harness"))
    ratios = [b / a for a, b in zip(times["hand-written"], times["harness"], strict=True)]
    print(f"{args.model}: one epoch of {len(train)} samples, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, "
          f"median of {args.repeats}")  # fmt: skip
    for k, v in times.items():
        print(f"  {k:13s} {statistics.median(v):7.3f} s  (min {min(v):.3f}, max {max(v):.3f})")
    print(f"  harness / hand-written: {ours / hand:.3f} ({100 * (ours / hand - 1):+.1f}%); "
          f"median of the rounds' ratios {statistics.median(ratios):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
