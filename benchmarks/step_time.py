"""Time one training step of the PMNIST network: DSR fast path versus per-step path.

Setting: B=64, T=20, HLOP on as during task 2 (circuits [220, 340, 240] rows, of which
[150, 270, 170] old and projecting, the rest learning, 5 Hebbian iterations), SGD lr 0.1.
Both paths run interleaved in one process; we report medians and their ratio, plus the
machine's fp32 matmul rate measured in the same run for reference.

    python benchmarks/step_time.py [--repeats 20] [--threads N] [--proj-type input|weight]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from hlop import NetworkOptions, SpikingMLP
from hlop.testing import as_during_task


def build(proj_type: str) -> SpikingMLP:
    torch.manual_seed(0)
    return as_during_task(
        SpikingMLP(options=NetworkOptions(proj_type=proj_type)),
        [[80, 200, 100], [70] * 3, [70] * 3],
    )


def step(m: SpikingMLP, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    F.cross_entropy(m(x), y).backward()
    opt.step()


def matmul_rate(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    p.add_argument("--proj-type", default="input", choices=["input", "weight"])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    m = build(args.proj_type)
    m.train()
    opt = torch.optim.SGD([p for n, p in m.named_parameters() if p.dim() != 1], lr=0.1)
    x = torch.randn(args.batch_size, 784)
    y = torch.randint(0, 10, (args.batch_size,))
    times: dict[bool, list[float]] = {True: [], False: []}
    for fast in (True, False):  # warm-up
        m.fast = fast
        step(m, opt, x, y)
    for _ in range(args.repeats):
        for fast in (True, False):
            m.fast = fast
            t = time.perf_counter()
            step(m, opt, x, y)
            times[fast].append(time.perf_counter() - t)
    fast, slow = statistics.median(times[True]), statistics.median(times[False])
    rate = matmul_rate()
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"fp32 matmul rate (1024^3): {rate / 1e9:.1f} GFLOP/s")
    print(f"PMNIST step, B={args.batch_size}, T=20, task 2 sizes, proj={args.proj_type}:")
    print(f"  per-step path: {slow * 1e3:8.1f} ms (median of {args.repeats})")
    print(f"  fast path:     {fast * 1e3:8.1f} ms")
    print(f"  speed-up:      {slow / fast:8.2f} x")


if __name__ == "__main__":
    main()
