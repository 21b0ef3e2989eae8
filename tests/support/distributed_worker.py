"""``hlop`` with two test hooks, for the tests of data-parallel training (test_distributed.py).

Run as ``torchrun ... tests/distributed_worker.py train ...`` (every worker) or called in the
test's process (:func:`main`).  ``HLOP_TEST_DUMP=DIR``: after each task every worker saves
its model's state dict to ``DIR/rank{R}-task{K}.pt``.  ``HLOP_TEST_FAIL=R:K:B``: worker R
raises in batch B of task K (from 0 and 1).  ``HLOP_TEST_FLOAT64=1``: the network and its
circuits compute in float64 (the data are cast on the way in).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import hlop.run.experiment
from hlop.loop import distributed
from hlop.loop.state import Plugin
from hlop.tools.cli import main as hlop_main


class Dump(Plugin):
    name = "test-dump"

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def after_task(self, run) -> None:
        state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
        torch.save(state, self.dir / f"rank{distributed.rank()}-task{run.task}.pt")


class Fail(Plugin):
    name = "test-fail"

    def __init__(self, spec: str) -> None:
        self.rank, self.task, self.batch = (int(v) for v in spec.split(":"))

    def after_batch(self, run, batch, batches, loss, acc) -> None:
        if (distributed.rank(), run.task, batch) == (self.rank, self.task, self.batch):
            raise RuntimeError(f"worker {self.rank} fails on purpose (HLOP_TEST_FAIL)")


def _float64_input(module, args):
    return (args[0].double(), *args[1:])


def main(argv: list[str]) -> int:
    original, build = hlop.run.experiment.method_plugins, hlop.run.experiment.build_model
    dtype = torch.get_default_dtype()

    def method_plugins(cfg):
        plugins = list(original(cfg))
        if os.environ.get("HLOP_TEST_DUMP"):
            plugins.append(Dump(Path(os.environ["HLOP_TEST_DUMP"])))
        if os.environ.get("HLOP_TEST_FAIL"):
            plugins.append(Fail(os.environ["HLOP_TEST_FAIL"]))
        return plugins

    def build_model(cfg, benchmark):
        model = build(cfg, benchmark).double()
        model.register_forward_pre_hook(_float64_input)
        return model

    hlop.run.experiment.method_plugins = method_plugins
    if os.environ.get("HLOP_TEST_FLOAT64"):
        torch.set_default_dtype(torch.float64)
        hlop.run.experiment.build_model = build_model
    try:
        return hlop_main(argv)
    finally:
        hlop.run.experiment.method_plugins, hlop.run.experiment.build_model = original, build
        torch.set_default_dtype(dtype)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
