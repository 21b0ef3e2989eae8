"""Circuit diagnostics of a finished run, from its task checkpoints.

For runs made before diagnostics were recorded in results.json (or to measure on more
samples): loads ``checkpoint_task{k}.pt`` of each task k asked for and measures every
circuit on a sample of task k's training data, as the in-run diagnostics do
(:mod:`hlop.run.diagnostics`), then prints a markdown table.  A run of a network of one's
own (``--model FILE.py:FUNCTION``) too: its factory is imported again (a relative FILE.py
from the directory the run was started in).

    python benchmarks/checkpoint_diagnostics.py RUN_DIR --tasks 0,4,9 [--samples 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hlop.loop.state import RunState
from hlop.run.build import load_checkpoint
from hlop.run.config import Config
from hlop.run.diagnostics import circuit_diagnostics
from hlop.run.presets import build_benchmark


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--tasks", default="0")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--data-dir", help="data root, if it moved since the run")
    args = p.parse_args()
    print("| after task | layer | rows | captured | SVD optimum | max abs(H H^T - I) |")
    print("|---|---|---|---|---|---|")
    for k in (int(t) for t in args.tasks.split(",")):
        model, ckpt = load_checkpoint(args.run_dir / f"checkpoint_task{k}.pt")
        cfg = Config.from_dict(ckpt["config"])
        if args.data_dir:
            cfg.data_dir = args.data_dir
        run = RunState(cfg, model, build_benchmark(cfg), torch.device("cpu"))
        run.task = k
        for name, d in circuit_diagnostics(run, args.samples).items():
            # no optimum from too few activity rows for the circuit's dimension
            optimal = "n.a." if d["optimal"] is None else f"{d['optimal']:.4f}"
            print(
                f"| {k} | {name} | {d['rows']} | {d['captured']:.4f} | {optimal} | "
                f"{d['orthonormality_error']:.1e} |"
            )


if __name__ == "__main__":
    main()
