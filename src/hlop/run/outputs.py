"""A run's outputs and progress, as plugins of the loop.

An output directory holds::

    config.json          the fully resolved configuration
    metrics.csv          one row per epoch: task, epoch, train_loss, train_acc, test_acc
    results.json         accuracy matrix (percent), ACC, BWT, forgetting, seconds per task,
                         circuit diagnostics after each task (HLOP, GPM; hlop.run.diagnostics);
                         with a head per task also the task-agnostic (class-incremental)
                         matrix and its ACC, BWT, forgetting (see :func:`summarise`)
    checkpoint_task{k}.pt  after each task; loads with torch.load(weights_only=True)
    state.pt             what a run needs to continue (hlop train --resume DIR), see
                         :mod:`hlop.run.resume`
    tb/                  TensorBoard event files (tensorboard=true, --tensorboard)

Every file is replaced atomically (metrics.csv is appended to, and cut back to the saved
rows when a run resumes).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from hlop import __version__
from hlop.errors import CheckpointError, ConfigError
from hlop.loop import distributed
from hlop.loop.metrics import average_accuracy, backward_transfer, forgetting
from hlop.loop.state import Plugin, RunState
from hlop.run.config import Config
from hlop.run.files import save_atomic, write_atomic, write_json
from hlop.run.resume import STATE_FILE

OUTPUT_FILES = ("config.json", "results.json", "metrics.csv")


class RunOutputs(Plugin):
    """The files of one run in ``out_dir``, written on the loop's events: a metrics row
    after each epoch, a checkpoint and the results after each task, the final status."""

    name = "outputs"

    def __init__(self, out_dir: str | Path, cfg: Config) -> None:
        self.dir, self.cfg = Path(out_dir), cfg
        self.results: dict | None = None
        self.rows = 0  # rows of metrics.csv

    def state_dict(self) -> dict:
        return {"metrics_rows": self.rows}

    def load_state_dict(self, state: dict, run: RunState) -> None:
        """Cut metrics.csv back to the rows of the saved state (later epochs run again)."""
        self.rows = state.get("metrics_rows", 0)
        path = self.dir / "metrics.csv"
        lines = path.read_bytes().splitlines(keepends=True) if path.exists() else []
        if self.rows and len(lines) < self.rows + 1:
            raise CheckpointError(
                f"{path} has {max(len(lines) - 1, 0)} rows but the saved state {self.rows}"
            )
        if not self.rows:
            path.unlink(missing_ok=True)  # the header comes with the first row
            return
        kept = b"".join(lines[: self.rows + 1])
        write_atomic(path, lambda f: f.write(kept))

    def existing(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        found = [self.dir / f for f in (*OUTPUT_FILES, STATE_FILE) if (self.dir / f).exists()]
        return found + sorted(self.dir.glob("checkpoint_task*.pt"))

    def prepare(self, overwrite: bool) -> None:
        """Create the directory; refuse one holding an earlier run unless ``overwrite``."""
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"--out-dir {self.dir} is a file, not a directory; choose another")
        old = self.existing()
        if old and not overwrite:
            raise ConfigError(
                f"{self.dir} already holds a run ({', '.join(p.name for p in old[:4])}"
                f"{', ...' if len(old) > 4 else ''}); choose another --out-dir or pass --overwrite"
            )
        for p in old:
            p.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg: Config) -> None:
        write_json(self.dir / "config.json", cfg.to_dict())

    def after_epoch(self, run: RunState, row: dict) -> None:
        path = self.dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
        self.rows += 1

    def after_task(self, run: RunState) -> None:
        self.save_checkpoint(run)
        self.write_results(run, "running" if run.task + 1 < len(run.stream) else "complete")

    def after_run(self, run: RunState, status: str) -> None:
        self.write_results(run, status)

    def write_results(self, run: RunState, status: str) -> dict:
        self.results = summarise(run, self.cfg, status)
        write_json(self.dir / "results.json", self.results)
        return self.results

    def save_checkpoint(self, run: RunState) -> Path:
        path = self.dir / f"checkpoint_task{run.task}.pt"
        state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
        save_atomic(
            {
                "model": state,
                "task": run.task,
                "config": self.cfg.to_dict(),
                "acc_matrix": run.acc_matrix,
                "acc_matrix_agnostic": run.acc_matrix_agnostic,
                "version": __version__,
            },
            path,
        )
        return path


def summarise(run: RunState, cfg: Config, status: str = "complete") -> dict:
    """results.json: accuracy matrix (percent, a row per training step, null where a task
    is not yet learnt) and metrics; joint training (one step) has one row and BWT null.

    The matrix is task-aware (each task through its own head).  Where the run records the
    task-agnostic one (a head per task: ``run.acc_matrix_agnostic``), ``acc_matrix_agnostic``,
    ``acc_agnostic``, ``bwt_agnostic`` and ``forgetting_agnostic`` follow, the same for the
    argmax over every seen head's scores; where the tasks share one head (PMNIST) the keys
    are left out (the two matrices would be the same)."""
    n_tasks = cfg.tasks
    a, learnt = run.acc_matrix, run.learnt()

    def padded(m: list[list[float]]) -> list[list[float | None]]:
        return [row + [None] * (n_tasks - len(row)) for row in m]

    agnostic = {}
    g = run.acc_matrix_agnostic
    if g is not None:
        agnostic = {
            "acc_matrix_agnostic": padded(g),
            "acc_agnostic": average_accuracy(g, learnt) if g else None,
            "bwt_agnostic": backward_transfer(g, learnt) if g else None,
            "forgetting_agnostic": forgetting(g, learnt) if g else [],
        }
    return {
        "benchmark": cfg.benchmark,
        "method": cfg.method,
        "status": status,
        "tasks_completed": learnt,
        "task_names": [t.name for t in run.benchmark.tasks[:n_tasks]],
        "acc_matrix": padded(a),
        "evaluated_on": "validation" if cfg.validation else "test",
        "acc": average_accuracy(a, learnt) if a else None,
        "bwt": backward_transfer(a, learnt) if a else None,
        "forgetting": forgetting(a, learnt) if a else [],
        **agnostic,
        "seconds_per_task": [round(s, 2) for s in run.seconds],
        "circuit_sizes": run.model.circuit_sizes(),
        "circuit_blocks": run.circuit_blocks,
        "circuit_diagnostics": run.circuit_diagnostics,
        "workers": distributed.world_size(),
        "version": __version__,
    }


class Progress(Plugin):
    """A tqdm bar per training step (rate, ETA, running loss and accuracy) on a terminal;
    plain log lines otherwise.  The per-epoch and per-task lines are written either way."""

    name = "progress"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.bar: tqdm | None = None

    def log(self, text: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        print(text, file=self.stream, flush=True)
        if self.bar is not None:
            self.bar.refresh()

    def after_batch(self, run: RunState, b: int, n: int, loss: float, acc: float) -> None:
        if not self.tty:
            return
        if self.bar is None:
            self.bar = tqdm(
                total=run.settings.epochs * n,
                desc=f"task {run.task + 1}/{len(run.stream)}",
                unit="batch",
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
            )
        self.bar.set_postfix_str(
            f"epoch {run.epoch + 1}/{run.settings.epochs} loss {loss:.4f} acc {acc:5.1f}%",
            refresh=False,
        )
        self.bar.update(1)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def after_epoch(self, run: RunState, row: dict) -> None:
        self.log(
            f"task {row['task'] + 1}/{len(run.stream)} epoch {row['epoch']}/{run.settings.epochs}: "
            f"train loss {row['train_loss']:.4f}, train acc {row['train_acc']:.2f}%, "
            f"test acc {row['test_acc']:.2f}%"
        )

    def after_training(self, run: RunState) -> None:
        self.close_bar()

    def after_task(self, run: RunState) -> None:
        row = " ".join(f"{v:.2f}" for v in run.acc_matrix[-1])
        if run.acc_matrix_agnostic:
            row += "; task-agnostic " + " ".join(f"{v:.2f}" for v in run.acc_matrix_agnostic[-1])
        self.log(f"after task {run.task + 1}: accuracies {row} ({run.seconds[-1]:.1f}s)")

    def after_run(self, run: RunState, status: str) -> None:
        self.close_bar()
