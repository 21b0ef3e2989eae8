"""``hlop train --tensorboard``: the run's curves as TensorBoard event files in ``OUT_DIR/tb``.

Scalars (step: the global epoch ``task * epochs + epoch`` for ``epoch/``, the task index
otherwise)::

    epoch/train_loss, epoch/train_acc, epoch/test_acc    after every epoch
    accuracy/task{j}                                      row k of the accuracy matrix
    metrics/acc, metrics/bwt                              ACC and BWT after task k
    accuracy_agnostic/task{j}, metrics/acc_agnostic, metrics/bwt_agnostic
                                the same of the task-agnostic matrix (a head per task)
    circuits/{layer}/{rows,captured,optimal,orthonormality_error}   (hlop.run.diagnostics)

Writing uses ``torch.utils.tensorboard``, which needs the ``tensorboard`` package (the
``[tensorboard]`` extra); viewing needs it anyway (``tensorboard --logdir OUT_DIR/tb``).
"""

from __future__ import annotations

from pathlib import Path

from hlop.errors import ConfigError
from hlop.loop.metrics import average_accuracy, backward_transfer
from hlop.loop.state import Plugin, RunState


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``; :class:`ConfigError` if tensorboard is
    missing (checked before the run starts)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard (tensorboard=true) needs the tensorboard package: "
            "pip install 'hlop[tensorboard]' (or pip install tensorboard)"
        ) from None
    return SummaryWriter


class TensorBoardLog(Plugin):
    """Writes the scalars listed in the module's docstring to ``log_dir``; a new run
    (``fresh``) replaces the event files an earlier run left there.  ``writer``: anything with
    ``add_scalar(tag, value, step)``, ``flush()`` and ``close()`` (default: a
    ``SummaryWriter``)."""

    name = "tensorboard"

    def __init__(self, log_dir: str | Path, writer=None, fresh: bool = True) -> None:
        self.dir = Path(log_dir)
        if writer is None:
            writer_class = summary_writer_class()
            for old in self.dir.glob("events.out.tfevents.*") if fresh else ():
                old.unlink()  # a resumed run (fresh=False) keeps and extends its logs
            writer = writer_class(log_dir=str(self.dir))
        self.writer = writer

    def after_epoch(self, run: RunState, row: dict) -> None:
        step = run.task * run.settings.epochs + row["epoch"]
        for key in ("train_loss", "train_acc", "test_acc"):
            self.writer.add_scalar(f"epoch/{key}", row[key], step)

    def after_task(self, run: RunState) -> None:
        k = run.task
        seen = [t for step in run.stream[: k + 1] for t in step]
        learnt = run.learnt()
        matrices = [("", run.acc_matrix)]
        if run.acc_matrix_agnostic is not None:
            matrices.append(("_agnostic", run.acc_matrix_agnostic))
        for kind, a in matrices:
            for t, value in zip(seen, a[-1], strict=True):
                self.writer.add_scalar(f"accuracy{kind}/task{t}", value, k)
            self.writer.add_scalar(f"metrics/acc{kind}", average_accuracy(a, learnt), k)
            bwt = backward_transfer(a, learnt)
            if bwt is not None:
                self.writer.add_scalar(f"metrics/bwt{kind}", bwt, k)
        diagnostics = run.circuit_diagnostics
        if diagnostics and diagnostics[-1]["task"] == k:
            for layer, values in diagnostics[-1]["layers"].items():
                for key, value in values.items():
                    if value is not None:
                        self.writer.add_scalar(f"circuits/{layer}/{key}", value, k)
        self.writer.flush()

    def after_run(self, run: RunState, status: str) -> None:
        self.writer.close()
