"""Peak resident memory of a shortened permuted-MNIST run, with and without each of hlop's
memory measures, each configuration in its own process (its ru_maxrss is its own).

The run: the paper's PMNIST preset (10 tasks, T=20, the circuits' schedule), bf16 or fp32,
``train_limit`` training samples per task (default 3000) and the whole test sets.  What
the configurations take away, one at a time:

    hlop              as shipped
    torch-optim       torch.optim.SGD instead of hlop.core.optim.SGD (imports torch._dynamo)
    unbounded-caches  oneDNN's and ideep's kernel caches at their default 1024 entries
    no-trim           no return of the C heap's free pages at task boundaries
    glibc-thresholds  glibc's own trim and mmap thresholds (hlop.loop.memory.tune_allocator off):
                      as much memory, but page faults within steps (minor faults, system time)
    none              the first three

    python benchmarks/run_memory.py --data-dir DATA [--precision bf16] [--train-limit 3000]
        [--configs hlop,torch-optim,...] [--benchmark pmnist] [--tasks 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = ("hlop", "torch-optim", "unbounded-caches", "no-trim", "glibc-thresholds", "none")


def one(config: str, args: argparse.Namespace) -> dict:
    import io

    import torch

    from hlop.loop import memory, optimisation
    from hlop.run.config import apply_overrides
    from hlop.run.experiment import train
    from hlop.run.presets import preset

    if config in ("torch-optim", "none"):
        optimisation.optim = torch.optim  # the optimisers every step makes
    if config in ("no-trim", "none"):
        memory.release_freed_memory = lambda: None
    if config != "glibc-thresholds":
        memory.tune_allocator()  # as `hlop train` does
    overrides = [f"precision={args.precision}", f"train_limit={args.train_limit}"]
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.tasks:
        overrides.append(f"tasks={args.tasks}")
    cfg = apply_overrides(preset(args.benchmark), overrides)
    start = time.perf_counter()
    result = train(cfg, os.path.join(args.out_dir, config), overwrite=True, stream=io.StringIO())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": time.perf_counter() - start,
        "peak_mib": usage.ru_maxrss / 1024,
        "minor_faults": usage.ru_minflt,
        "system_seconds": usage.ru_stime,
        "acc": result["acc"],
        "dynamo_imported": "torch._dynamo" in sys.modules,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="folder holding mnist/ (not for pmnist-subset)")
    p.add_argument("--benchmark", default="pmnist", help="pmnist, or pmnist-subset (a check)")
    p.add_argument("--tasks", type=int, help="fewer tasks than the preset's")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--train-limit", type=int, default=3000)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--out-dir", default="/tmp/hlop-run-memory")
    p.add_argument("--one", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    from hlop.loop.memory import KERNEL_CACHES

    rows = {}
    for config in args.configs.split(","):
        if config not in CONFIGS:
            p.error(f"unknown configuration {config!r}; choose from {', '.join(CONFIGS)}")
        env = {**os.environ, **KERNEL_CACHES}  # what `hlop train` sets
        if config in ("unbounded-caches", "none"):
            env.update({name: "1024" for name in KERNEL_CACHES})
        argv = [sys.executable, __file__, "--one", config, "--benchmark", args.benchmark,
                "--precision", args.precision, "--train-limit", str(args.train_limit),
                "--out-dir", args.out_dir]  # fmt: skip
        for flag, value in (("--data-dir", args.data_dir), ("--tasks", args.tasks)):
            if value:
                argv += [flag, str(value)]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"{config} failed:\n{proc.stderr}")
        rows[config] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = rows[config]
        print(f"{config:17s} peak {r['peak_mib']:6.1f} MiB  {r['seconds']:6.1f} s  "
              f"minor faults {r['minor_faults']:9d}  system {r['system_seconds']:5.1f} s  "
              f"ACC {r['acc']:.2f}  torch._dynamo imported: {r['dynamo_imported']}",
              flush=True)  # fmt: skip
    base = rows.get("hlop")
    if base:
        print(f"\n{args.benchmark}, {args.precision}, train_limit={args.train_limit}: "
              "peak relative to hlop's")  # fmt: skip
        for config, r in rows.items():
            print(f"  {config:17s} {r['peak_mib'] / base['peak_mib']:.3f}x "
                  f"(+{r['peak_mib'] - base['peak_mib']:.0f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
