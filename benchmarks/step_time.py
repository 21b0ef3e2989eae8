"""Time one training step of the PMNIST network: task 2 and task 9 sizes, fp32 and bf16,
the DSR fast path and the per-step path.

Setting: B=64, T=20, HLOP on as during task 2 (circuits [220, 340, 240] rows, of which
[150, 270, 170] old and projecting) or task 9 (the paper's schedule, ``pmnist_sizes``:
[470, 590, 490] rows, 460/580/480 old), 5 Hebbian iterations, SGD lr 0.1.  All
variants run interleaved in one process (the machine is shared and noisy); we report
medians and the ratios between them, plus the machine's fp32 and bf16 matmul rates
measured in the same run.

    python benchmarks/step_time.py [--repeats 20] [--threads N] [--proj-type input|weight]
        [--precisions fp32,bf16]

Against an older commit: run it with that commit's package first on the path
(``PYTHONPATH=OLD/src``; a worktree made by ``benchmarks/cnn_step.py --against``), e.g.
alternating old and new runs in one shell command.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import versions

from hlop import SpikingMLP

SIZES = {task: versions.pmnist_sizes(10)[: task + 1] for task in (2, 9)}
PRECISIONS = ("fp32", "bf16")
PATHS = ("fast", "per-step")


def build(task: int, precision: str, fast: bool, proj_type: str) -> SpikingMLP:
    torch.manual_seed(0)
    settings = versions.network_kwargs(precision=precision, fast=fast, proj_type=proj_type)
    return versions.as_during_task(SpikingMLP(**settings), SIZES[task])


def matmul_rate(dtype: torch.dtype, n: int = 1024, repeats: int = 10, mm=torch.matmul) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    mm(a, b)
    t = time.perf_counter()
    for _ in range(repeats):
        mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def hlop_bf16_rate() -> str:
    """The rate of hlop's bf16 products (``hlop.core.precision``: emulated with fp32 kernels
    where the CPU has no bf16 ones); empty for a commit before that module."""
    try:
        native = versions.first("hlop.core.precision:native", "hlop.precision:native")
        product = versions.first("hlop.core.precision:product", "hlop.precision:product")
    except ImportError:
        return ""
    rate = matmul_rate(torch.float32, mm=lambda a, b: product(torch.matmul, torch.bfloat16, a, b))
    how = "native" if native(torch.bfloat16, torch.device("cpu")) else "emulated"
    return f", hlop's bf16 products {rate / 1e9:.0f} GFLOP/s ({how})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    p.add_argument("--proj-type", default="input", choices=["input", "weight"])
    p.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.rand(args.batch_size, 784)
    y = torch.randint(0, 10, (args.batch_size,))
    variants = {}
    for task in SIZES:
        for precision in args.precisions.split(","):
            for path in PATHS:
                m = build(task, precision, path == "fast", args.proj_type)
                m.train()
                opt = torch.optim.SGD([q for q in m.parameters() if q.dim() > 1], lr=0.1)
                variants[task, precision, path] = (m, opt)

    def step(m: SpikingMLP, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()

    times: dict[tuple, list[float]] = {k: [] for k in variants}
    for m, opt in variants.values():  # warm-up
        step(m, opt)
    for _ in range(args.repeats):
        for k, (m, opt) in variants.items():
            t = time.perf_counter()
            step(m, opt)
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}")
    fp32, bf16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16, repeats=2)
    print(
        f"matmul rate (1024^3): fp32 {fp32 / 1e9:.0f} GFLOP/s, torch's bf16 {bf16 / 1e9:.0f} "
        f"GFLOP/s{hlop_bf16_rate()}"
    )
    print(
        f"PMNIST training step, B={args.batch_size}, T=20, proj={args.proj_type}, "
        f"median of {args.repeats} (ms):"
    )
    print(f"  {'sizes':8s} {'precision':9s} {'fast':>8s} {'per-step':>9s} {'per-step/fast':>14s}")
    for task in SIZES:
        for precision in args.precisions.split(","):
            f, s = med[task, precision, "fast"], med[task, precision, "per-step"]
            print(f"  task {task:<3d} {precision:9s} {f * 1e3:8.1f} {s * 1e3:9.1f} {s / f:13.2f}x")
    for task in SIZES if "bf16" in args.precisions and "fp32" in args.precisions else ():
        for path in PATHS:
            r = med[task, "fp32", path] / med[task, "bf16", path]
            print(f"  task {task} {path}: bf16 is {r:.2f}x faster than fp32")


if __name__ == "__main__":
    main()
