"""Runs that survive interruptions: the resume state, atomic writes, SIGINT and SIGTERM.

A run's directory holds ``state.pt``, everything a run needs to continue exactly as if it
had never stopped (the same accuracy matrix, bit for bit, on the same machine)::

    format, version, config      "hlop-state", the hlop version, the resolved config
    task, epoch                  the resume point: step ``task`` after ``epoch`` epochs
                                 (epoch 0: the step has not started)
    acc_matrix, seconds, stream, elapsed   the loop's records (elapsed: seconds of the step)
    acc_matrix_agnostic          the task-agnostic matrix (None where not recorded; a state
                                 saved before hlop recorded it has no entry: a run resumed
                                 from it after its first step records none)
    heads, model, trainable, consolidated, circuits
                                 the number of heads, the model's state dict (circuits and
                                 their momentum are buffers), which parameters train, the
                                 circuits' learning / projecting / energy-tracking switches
    optimizer, scheduler         the step's (None at the start of a step)
    plugins                      plugin name -> ``Plugin.state_dict()``
    rng                          :func:`hlop.loop.continual.rng_state`

It is written after every ``checkpoint_every`` epochs inside a task (not after a task's
last epoch: the save after the task follows) and after every task, always atomically
(:func:`hlop.run.files.write_atomic`), and read with ``torch.load(weights_only=True)``.

On SIGINT or SIGTERM the current epoch is discarded: the run stops at once and saves the
state of the last completed epoch (kept in memory, so ``checkpoint_every`` only decides
how often it also reaches the disk), then exits with 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from hlop import __version__
from hlop.errors import CheckpointError, ConfigError
from hlop.loop.state import Plugin, Resume, RunState, rng_state
from hlop.run.config import RESULT_NEUTRAL_KEYS, Config, differences, read_config_file
from hlop.run.files import load_saved, save_atomic

STATE_FILE = "state.pt"
FORMAT = "hlop-state"


# ---------------------------------------------------------------------- the state
def plain(obj: Any) -> Any:
    """A copy of ``obj`` detached from the run: tensors cloned to the CPU, containers
    copied (what ``torch.save`` writes and ``weights_only`` reads back)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain(v) for v in obj)
    return obj


def collect_state(
    run: RunState, cfg: Config, plugins: Sequence[Plugin], task: int, epoch: int
) -> dict:
    """The state of ``run`` (configured by ``cfg``) that continues at step ``task`` after
    ``epoch`` epochs."""
    model = run.model
    within = epoch > 0
    return plain(
        {
            "format": FORMAT,
            "version": __version__,
            "config": cfg.to_dict(),
            "task": task,
            "epoch": epoch,
            "acc_matrix": run.acc_matrix,
            "acc_matrix_agnostic": run.acc_matrix_agnostic,
            "seconds": run.seconds,
            "stream": run.stream,
            "circuit_diagnostics": run.circuit_diagnostics,
            "circuit_blocks": run.circuit_blocks,
            "elapsed": time.perf_counter() - run.task_started if within else 0.0,
            "heads": len(model.heads),
            "model": model.state_dict(),
            "trainable": [n for n, p in model.named_parameters() if p.requires_grad],
            "consolidated": model.consolidated,
            "circuits": [[c.learning, c.projecting, c.tracking] for c in model.circuits()],
            "optimizer": run.optimizer.state_dict() if within else None,
            "scheduler": run.scheduler.state_dict() if within else None,
            "plugins": {p.name: p.state_dict() for p in plugins},
            "rng": rng_state(run.generator),
        }
    )


def read_state(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """A saved resume state; :class:`CheckpointError` for anything else."""
    path = Path(path)
    hint = "pass the directory of a run of hlop train (hlop train --resume DIR)"
    state = load_saved(path, device, "resume state", hint)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an hlop resume state (no format {FORMAT!r})")
    return state


def _named_differences(saved: dict, cfg: Config) -> str:
    """The keys that differ, as ``key (saved -> requested)``."""
    keys = differences(saved, cfg)
    try:
        old = Config.from_dict(saved)
    except ConfigError:
        old = None

    def value(c, key):
        obj = c
        for part in key.split("."):
            obj = getattr(obj, part, "?")
        return obj

    shown = [f"{k} ({value(old, k) if old else '?'} -> {value(cfg, k)})" for k in keys[:8]]
    return ", ".join(shown) + (", ..." if len(keys) > 8 else "")


def saved_state(directory: str | Path, cfg: Config, device="cpu") -> dict | None:
    """The state that the run in ``directory`` continues from, after checking that it was
    started with ``cfg`` (but :data:`hlop.run.config.RESULT_NEUTRAL_KEYS`); None when it saved
    none yet (stopped in its first epoch: it starts again)."""
    directory = Path(directory)
    config = directory / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{directory} holds no hlop run to resume (no config.json)")
    try:
        saved = read_config_file(config).to_dict()
    except ConfigError as e:
        raise CheckpointError(f"cannot resume: {e}") from None
    if differences(saved, cfg):
        raise ConfigError(
            f"{directory} was started with other values of {_named_differences(saved, cfg)}; "
            "a resumed run keeps its configuration (only "
            f"{', '.join(RESULT_NEUTRAL_KEYS)} may change): drop those flags, or start a "
            "new run in another --out-dir"
        )
    path = directory / STATE_FILE
    if not path.exists():
        if any(directory.glob("checkpoint_task*.pt")):
            raise CheckpointError(
                f"{directory} has checkpoints but no resume state ({STATE_FILE}; written by "
                "an hlop without resume?): it cannot continue; start it again with --overwrite"
            )
        return None
    state = read_state(path, device)
    if differences(state.get("config", {}), cfg):
        raise CheckpointError(
            f"{path} belongs to another run: its configuration differs from {config} in "
            f"{_named_differences(state['config'], cfg)}"
        )
    return state


def restore(run: RunState, plugins: Sequence[Plugin], state: dict) -> Resume:
    """Put a saved state into a freshly built ``run`` (model built from the same config)
    and its ``plugins``; returns where the loop continues."""
    model = run.model
    try:
        while not model.shared_head and len(model.heads) < state["heads"]:
            model.add_head(run.benchmark.tasks[len(model.heads)].num_classes)
        saved = state["plugins"]
        for p in plugins:
            p.load_state_dict(saved.get(p.name, {}), run)
        model.load_state_dict(state["model"])
        trainable = set(state["trainable"])
        for n, p in model.named_parameters():
            p.requires_grad_(n in trainable)
        model.consolidated = state["consolidated"]
        model.eval()  # as after an evaluation, where every save happens
        for c, flags in zip(model.circuits(), state["circuits"], strict=True):
            c.learning, c.projecting = flags[0], flags[1]
            c.tracking = len(flags) > 2 and bool(flags[2])  # energy averages (sizes "auto")
        run.acc_matrix = [list(r) for r in state["acc_matrix"]]
        agnostic = state.get("acc_matrix_agnostic")  # None, or no entry (an older state)
        run.acc_matrix_agnostic = None if agnostic is None else [list(r) for r in agnostic]
        if agnostic is not None and len(agnostic) != len(run.acc_matrix):
            raise ValueError(
                f"{len(agnostic)} rows of the task-agnostic matrix, {len(run.acc_matrix)} "
                "of the task-aware one"
            )
        run.seconds = list(state["seconds"])
        run.stream = [list(s) for s in state["stream"]]
        run.circuit_diagnostics = list(state.get("circuit_diagnostics", []))
        run.circuit_blocks = [list(b) for b in state.get("circuit_blocks", [])]
        return Resume(
            task=state["task"],
            epoch=state["epoch"],
            optimizer=state["optimizer"],
            scheduler=state["scheduler"],
            rng=state["rng"],
            elapsed=state["elapsed"],
        )
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError) as e:
        raise CheckpointError(
            f"the resume state does not fit the run's model ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from None


class Checkpointer(Plugin):
    """Keeps the state of the last completed epoch in memory and writes it to
    ``directory/state.pt`` every ``every`` epochs and after every task; an interrupted run
    (``after_run`` with status "interrupted") writes the newest one.  Put it last: it
    saves what the other plugins did at the end of the epoch."""

    name = "checkpointer"

    def __init__(
        self, directory: str | Path, plugins: Sequence[Plugin], every: int, cfg: Config
    ) -> None:
        self.path, self.cfg = Path(directory) / STATE_FILE, cfg
        self.plugins = [p for p in plugins if p is not self]
        self.every = every
        self.latest: dict | None = None  # the newest consistent state
        self.written = True  # whether ``latest`` is on disk

    def keep(self, run: RunState, task: int, epoch: int, write: bool) -> None:
        self.latest, self.written = collect_state(run, self.cfg, self.plugins, task, epoch), False
        if write:
            self.write()

    def write(self) -> None:
        if self.latest is not None and not self.written:
            save_atomic(self.latest, self.path)
            self.written = True

    def after_epoch(self, run: RunState, row: dict) -> None:
        done = run.epoch + 1
        due = self.every > 0 and done % self.every == 0 and done < run.settings.epochs
        self.keep(run, run.task, done, write=due)

    def after_task(self, run: RunState) -> None:
        self.keep(run, run.task + 1, 0, write=True)

    def after_run(self, run: RunState, status: str) -> None:
        if status == "interrupted":
            self.write()

    @staticmethod
    def where(state: dict | None) -> str:
        """Where a saved state continues, in words."""
        if state is None:
            return "nothing saved yet (no epoch completed): the run starts again"
        task, epoch = state["task"], state["epoch"]
        if task >= len(state["stream"]):
            return "the run is complete"
        if epoch == 0:
            return f"continues at the start of task {task + 1}"
        return f"continues after epoch {epoch} of task {task + 1}"


# ---------------------------------------------------------------------- signals
class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run whose state is saved in ``directory``."""

    def __init__(self, signum: int = signal.SIGINT, directory: Path | None = None, saved=""):
        super().__init__(signum)
        self.signum, self.directory, self.saved = signum, directory, saved

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` (main thread only; elsewhere Python
    keeps its handlers); the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
