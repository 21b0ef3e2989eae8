"""Time and peak memory of one training step of the CIFAR-100 spiking CNN.

Setting: B=64, T=20, 3x32x32 inputs, HLOP on as during task 1 (circuits [8, 120, 240]
rows of N = [27, 576, 1152], of which [6, 100, 200] old and projecting), batch norm fixed,
SGD.  Each (projection mode, precision, path) runs in its own process so that its peak
resident memory (ru_maxrss) is its own; the ratios are computed from the same run.

    python benchmarks/cnn_step.py [--repeats 3] [--batch-size 64] [--timesteps 20]
        [--precisions fp32,bf16] [--paths fast,per-step]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def one(
    proj_type: str, precision: str, fast: bool, batch: int, timesteps: int, repeats: int
) -> dict:
    from hlop import NetworkOptions
    from hlop.networks import SpikingCNN
    from hlop.testing import as_during_task

    torch.manual_seed(0)
    options = NetworkOptions(timesteps=timesteps, proj_type=proj_type, precision=precision)
    m = SpikingCNN(options=options)
    as_during_task(m, [[6, 100, 200], [2, 20, 40]])
    m.train()
    m.begin_task(1, 10)  # a later task: batch norm fixed, only weight matrices train
    m.fast = fast
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": statistics.median(times), "peak_mb": peak_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--timesteps", type=int, default=20)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--paths", default="fast,per-step")
    p.add_argument("--one", nargs=3, metavar=("PROJ", "PRECISION", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        proj, precision, path = args.one
        fast = path == "fast"
        r = one(proj, precision, fast, args.batch_size, args.timesteps, args.repeats)
        print(json.dumps(r))
        return
    print(
        f"CNN step, B={args.batch_size}, T={args.timesteps}, 32x32, task-1 circuits, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    precisions, paths = args.precisions.split(","), args.paths.split(",")
    results = {}
    for proj in ("input", "weight"):
        for precision in precisions:
            for path in paths:
                cmd = [sys.executable, __file__, "--one", proj, precision, path]
                cmd += ["--repeats", str(args.repeats), "--batch-size", str(args.batch_size)]
                cmd += ["--timesteps", str(args.timesteps)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results[proj, precision, path] = r = json.loads(out.strip().splitlines()[-1])
                print(
                    f"  {proj:6s} {precision:4s} {path:8s}: {r['seconds'] * 1e3:9.1f} ms/step, "
                    f"peak RSS {r['peak_mb']:7.0f} MB",
                    flush=True,
                )
    for proj in ("input", "weight"):
        for precision in precisions:
            if "fast" in paths and "per-step" in paths:
                slow, fast = results[proj, precision, "per-step"], results[proj, precision, "fast"]
                print(
                    f"  {proj} {precision}: fast path {slow['seconds'] / fast['seconds']:.2f}x "
                    f"faster, peak memory (fast / per-step) {fast['peak_mb'] / slow['peak_mb']:.2f}"
                )
        if "fp32" in precisions and "bf16" in precisions:
            for path in paths:
                a, b = results[proj, "fp32", path], results[proj, "bf16", path]
                print(
                    f"  {proj} {path}: bf16 {a['seconds'] / b['seconds']:.2f}x faster than fp32, "
                    f"peak memory (bf16 / fp32) {b['peak_mb'] / a['peak_mb']:.2f}"
                )
    for precision in precisions:
        if "fast" in paths:
            i, w = results["input", precision, "fast"], results["weight", precision, "fast"]
            print(
                f"  fast path {precision}: input-mode / weight-mode time = "
                f"{i['seconds'] / w['seconds']:.2f}"
            )


if __name__ == "__main__":
    main()
