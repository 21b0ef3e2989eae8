"""Time, peak memory and convolution share of one training step of the CIFAR-100 spiking
CNN, against an older commit of the code.

Setting (the ``cifar100`` preset): B=64, T=20, 3x32x32 inputs, channels 64/128/256, HLOP
as during task 9 (the preset's schedule [6, 100, 200] + [2, 20, 40] x 9: circuits of
[24, 280, 560] rows of N = [27, 576, 1152], the last block learning and the older ones
projecting), weight projection, circuits learning from stride-1 patches, batch norm fixed
(a later task: only weight matrices train), SGD with momentum.

Each configuration (projection mode, precision, path) runs in its own process, so that its
peak resident memory (``ru_maxrss``) is its own, set up as ``hlop train`` sets up its
process (``hlop.loop.memory``: oneDNN's kernel caches and glibc's thresholds, each version its
own), and is measured there as:

* seconds per step: the median of ``--repeats`` steps after one warm-up step;
* peak MB: the process's peak resident memory after the timed steps;
* conv share: the time of the convolutions (forward and backward, measured with
  ``torch.profiler``) over the wall time of one more, profiled, step.

The same configuration then runs on the code of ``--against`` (default ``48dd37c``): a git
worktree of that commit under /tmp (made if missing) whose ``src`` is put first on the
child's PYTHONPATH, so that the child imports the old package.  The code that runs in the
child (``measure``, ``build_cnn``) therefore only uses APIs both versions have.

    python benchmarks/cnn_step.py [--repeats 3] [--batch-size 64] [--timesteps 20]
        [--task 9] [--proj input,weight] [--precisions fp32,bf16] [--paths fast,per-step]
        [--against COMMIT | --against none]

Smoke test: ``OMP_NUM_THREADS=1 python benchmarks/cnn_step.py --batch-size 2 --timesteps 2
--repeats 1``.  ``benchmarks/resnet_step.py`` does the same for the miniImageNet ResNet-18.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import versions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_AGAINST = "48dd37c"

# The operators of a 2-d convolution on the CPU, forward (conv2d -> convolution ->
# _convolution -> mkldnn_convolution or a slow kernel) and backward (convolution_backward,
# also what torch.nn.grad.conv2d_input/conv2d_weight call, -> its mkldnn or slow kernels).
CONV_OPS = frozenset(
    {
        "aten::conv2d",
        "aten::convolution",
        "aten::_convolution",
        "aten::mkldnn_convolution",
        "aten::_slow_conv2d_forward",
        "aten::thnn_conv2d",
        "aten::convolution_backward",
        "aten::mkldnn_convolution_backward",
        "aten::_slow_conv2d_backward",
    }
)


# ---------------------------------------------------------------------- in the child


def conv_seconds(events) -> float:
    """Seconds spent in convolutions among profiler ``events``: the total CPU time of the
    top-level convolution ops (a conv op none of whose callers is a conv op), which holds
    the time of the conv ops they call, so nothing is counted twice."""

    def top_level(e) -> bool:
        parent = e.cpu_parent
        while parent is not None:
            if parent.name in CONV_OPS:
                return False
            parent = parent.cpu_parent
        return True

    return sum(e.cpu_time_total for e in events if e.name in CONV_OPS and top_level(e)) / 1e6


def measure(model, x, y, task: int, repeats: int) -> dict:
    """Train ``model`` on ``(x, y)``: one warm-up step, ``repeats`` timed steps (median),
    the peak resident memory, then one profiled step, whose convolution time (see
    :func:`conv_seconds`) over its own wall time is the convolutions' share (the
    profiler's overhead, a few microseconds an op, is in both)."""
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x, task), y).backward()
        opt.step()
        return time.perf_counter() - t

    step()  # warm-up
    seconds = statistics.median(step() for _ in range(repeats))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        profiled = step()
    conv = conv_seconds(prof.events())
    return {
        "seconds": seconds,
        "peak_mb": peak_mb,
        "conv_seconds": conv,
        "conv_share": conv / profiled,
    }


def network_settings(spec: dict) -> dict:
    """The networks' settings of a configuration (fields that both versions have), as the
    keyword argument the version's constructors take."""
    return versions.network_kwargs(
        timesteps=spec["timesteps"],
        proj_type=spec["proj"],
        precision=spec["precision"],
        lrs=spec["lrs"],
        hebbian_stride=spec["hebbian_stride"],
    )


def during_task(model, spec: dict):
    """``model`` (training) with the circuits of task ``spec["task"]`` and its path."""
    versions.as_during_task(model, spec["sizes"])
    model.train()
    model.begin_task(spec["task"], spec["classes"])  # from task 1: batch norm fixed
    model.fast = spec["path"] == "fast"
    return model


def build_cnn(spec: dict):
    """The CNN, inputs and labels of a configuration."""
    from hlop import SpikingCNN

    size = spec["image_size"]
    model = SpikingCNN(3, size, spec["classes"], **network_settings(spec))
    x = torch.randn(spec["batch"], 3, size, size)
    return during_task(model, spec), x


def child(build: Callable[[dict], tuple]) -> None:
    """Run the configuration whose JSON spec follows ``--one`` and print its results."""
    import hlop

    spec = json.loads(sys.argv[sys.argv.index("--one") + 1])
    memory = versions.memory()
    # the process as `hlop train` sets it up, each version with its own settings
    memory.bound_kernel_caches()
    memory.tune_allocator()
    torch.manual_seed(0)
    model, x = build(spec)
    y = torch.randint(0, spec["classes"], (x.shape[0],))
    result = measure(model, x, y, spec["task"], spec["repeats"])
    print(json.dumps({**result, "hlop": hlop.__file__}))


# ---------------------------------------------------------------------- in the parent


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def old_source(commit: str) -> tuple[Path, str]:
    """The ``src`` folder of a worktree of ``commit`` under /tmp (added if missing) and the
    commit's short hash."""
    try:
        short = git("rev-parse", "--short", "--verify", f"{commit}^{{commit}}")
    except subprocess.CalledProcessError:
        sys.exit(f"--against {commit}: not a commit of {ROOT}")
    tree = Path(f"/tmp/hlop-{short}")
    if not (tree / "src" / "hlop").is_dir():
        git("worktree", "add", "-f", "--detach", str(tree), short)
    return tree / "src", short


def run_one(script: str, spec: dict, src: Path) -> dict | str:
    """The results of ``spec`` in a child process importing hlop from ``src``, or the last
    line of its error."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, script, "--one", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        lines = p.stderr.strip().splitlines() or [f"exit status {p.returncode}"]
        return lines[-1]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    if not Path(result["hlop"]).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(f"the child imported {result['hlop']}, not the package in {src}")
    return result


def add_arguments(p: argparse.ArgumentParser, batch: int, timesteps: int, task: int) -> None:
    p.add_argument("--repeats", type=int, default=3, help="timed steps (after one warm-up)")
    p.add_argument("--batch-size", type=int, default=batch)
    p.add_argument("--timesteps", type=int, default=timesteps)
    p.add_argument("--task", type=int, default=task, help="circuits as during this task")
    p.add_argument("--proj", default="weight", help="projection modes: input,weight")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--paths", default="fast", help="fast (the preset's), per-step")
    p.add_argument(
        "--against", default=DEFAULT_AGAINST, help="the older commit to compare with, or none"
    )


def compare(script: str, args: argparse.Namespace, base: dict, title: str) -> None:
    """Run every (projection, precision, path) of ``args`` on this code and on the code of
    ``args.against``; print each result as it comes, then the table."""
    new_src = ROOT / "src"
    old_src, old = (None, None) if args.against == "none" else old_source(args.against)
    print(
        f"{title}, B={args.batch_size}, T={args.timesteps}, circuits of task {args.task}; "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"new: {git('rev-parse', '--short', 'HEAD')} + working tree, old: {old}",
        flush=True,
    )
    rows = []
    for proj in args.proj.split(","):
        for precision in args.precisions.split(","):
            for path in args.paths.split(","):
                spec = {
                    **base,
                    "proj": proj,
                    "precision": precision,
                    "path": path,
                    "batch": args.batch_size,
                    "timesteps": args.timesteps,
                    "repeats": args.repeats,
                    "task": args.task,
                }
                new = run_one(script, spec, new_src)
                if isinstance(new, str):
                    raise RuntimeError(f"{proj} {precision} {path}: {new}")
                before = run_one(script, spec, old_src) if old_src else None
                for name, r in (("new", new), ("old", before)):
                    if isinstance(r, dict):
                        print(
                            f"  {proj} {precision} {path} ({name}): {r['seconds'] * 1e3:.1f} "
                            f"ms/step, peak {r['peak_mb']:.0f} MB, conv "
                            f"{r['conv_seconds'] * 1e3:.1f} ms of the profiled step",
                            flush=True,
                        )
                    elif r is not None:
                        print(f"  {proj} {precision} {path} ({name}): failed: {r}", flush=True)
                rows.append((f"{proj} {path}", precision, new, before))
    print()
    print(table(rows))


def table(rows: list[tuple[str, str, dict, dict | str | None]]) -> str:
    """The markdown table of (configuration, precision, new results, old results)."""
    lines = [
        "| configuration | precision | s/step (new) | s/step (old) | speed-up old/new "
        "| peak MB (new / old) | conv share (new / old) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for config, precision, new, old in rows:
        if isinstance(old, dict):
            cells = [
                f"{old['seconds']:.3f}",
                f"{old['seconds'] / new['seconds']:.2f}",
                f"{new['peak_mb']:.0f} / {old['peak_mb']:.0f}",
                f"{new['conv_share']:.0%} / {old['conv_share']:.0%}",
            ]
        else:
            missing = "failed" if old else "-"
            cells = [
                missing,
                missing,
                f"{new['peak_mb']:.0f} / {missing}",
                f"{new['conv_share']:.0%} / {missing}",
            ]
        lines.append(
            f"| {config} | {precision} | {new['seconds']:.3f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def preset_arguments(benchmark: str, doc: str):
    """The benchmark's preset, the parsed command line (defaults from the preset) and the
    circuit settings of the spec sent to each child."""
    from hlop.run.presets import preset

    cfg = preset(benchmark)
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_arguments(p, cfg.batch_size, cfg.timesteps, cfg.tasks - 1)
    args = p.parse_args()
    circuits = {
        "sizes": cfg.hlop.sizes[: args.task + 1],
        "lrs": list(cfg.hlop.lrs),
        "hebbian_stride": cfg.hlop.hebbian_stride,
    }
    return cfg, args, circuits


def main() -> None:
    if "--one" in sys.argv:
        child(build_cnn)
        return
    _, args, base = preset_arguments("cifar100", __doc__)
    base.update(image_size=32, classes=10)
    compare(__file__, args, base, "CIFAR-100 CNN step, 3x32x32")


if __name__ == "__main__":
    main()
