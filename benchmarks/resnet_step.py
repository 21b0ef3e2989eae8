"""Time, peak memory and convolution share of one training step of the miniImageNet spiking
ResNet-18, against an older commit of the code.

Setting (the ``miniimagenet`` preset): B=64, T=20, 3x84x84 inputs, base width 20, 5x5
stride-2 stem, 5 classes per task, HLOP as during task 19 (the preset's size schedule
``[first] + [early] x 5 + [late] x 14``, ``hlop.run.presets.MINIIMAGENET_SIZES``: 20 circuits,
stem, then each block's conv1, conv2 and shortcut; the last block learning and the older
ones projecting), weight projection, circuits learning from stride-1 patches, batch norm
fixed (a later task: only weight matrices train), SGD with momentum.

What is measured, and how, is as in ``benchmarks/cnn_step.py`` (whose harness this script
uses): each configuration in its own process, seconds per step (median of ``--repeats``
after a warm-up step), peak resident memory, the convolutions' share of one profiled step,
and the same on the code of ``--against`` (default ``48dd37c``, a git worktree under /tmp).

    python benchmarks/resnet_step.py [--repeats 3] [--batch-size 64] [--timesteps 20]
        [--task 19] [--proj input,weight] [--precisions fp32,bf16] [--paths fast,per-step]
        [--against COMMIT | --against none]

Smoke test: ``OMP_NUM_THREADS=1 python benchmarks/resnet_step.py --batch-size 2
--timesteps 2 --repeats 1``.
"""

from __future__ import annotations

import sys

import torch
from cnn_step import child, compare, during_task, network_settings, preset_arguments

CLASSES = 5  # per task: 100 classes in 20 tasks (hlop.data.benchmarks.split_miniimagenet)


def build_resnet(spec: dict):
    """The ResNet-18 and inputs of a configuration (the constructor of both versions)."""
    from hlop import SpikingResNet18

    model = SpikingResNet18(
        spec["classes"],
        width=spec["width"],
        stem=spec["stem"],
        **network_settings(spec),
    )
    size = spec["image_size"]
    x = torch.randn(spec["batch"], 3, size, size)
    return during_task(model, spec), x


def main() -> None:
    if "--one" in sys.argv:
        child(build_resnet)
        return
    from hlop.data.transforms import MINIIMAGENET_SIZE

    cfg, args, base = preset_arguments("miniimagenet", __doc__)
    base.update(width=cfg.width, stem=cfg.stem, image_size=MINIIMAGENET_SIZE, classes=CLASSES)
    size = MINIIMAGENET_SIZE
    title = f"miniImageNet ResNet-18 step, 3x{size}x{size}, width {cfg.width}, {cfg.stem} stem"
    compare(__file__, args, base, title)


if __name__ == "__main__":
    main()
