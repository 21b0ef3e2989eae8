"""From a resolved configuration to results on disk: data, model, loop, outputs.

An output directory holds::

    config.json          the fully resolved configuration
    metrics.csv          one row per epoch: task, epoch, train_loss, train_acc, test_acc
    results.json         accuracy matrix (percent), ACC, BWT, forgetting, seconds per task,
                         circuit diagnostics after each task (HLOP, GPM; hlop.diagnostics)
    checkpoint_task{k}.pt  after each task; loads with torch.load(weights_only=True)
    state.pt             what a run needs to continue (hlop train --resume DIR), see
                         :mod:`hlop.resume`

Every file is replaced atomically (metrics.csv is appended to, and cut back to the saved
rows when a run resumes).
    tb/                  TensorBoard event files (tensorboard=true, --tensorboard)
"""

from __future__ import annotations

import csv
import io
import math
import signal
import sys
from pathlib import Path
from typing import TextIO

import torch
from tqdm import tqdm

from . import __version__, distributed
from .config import Config, validate
from .continual import Plugin, RunState, run_continual
from .data import Benchmark
from .diagnostics import CircuitDiagnostics
from .errors import ConfigError
from .files import save_atomic, write_atomic, write_json
from .methods import method_plugins
from .metrics import average_accuracy, backward_transfer, forgetting, format_matrix
from .networks import (
    NETWORKS,
    CircuitOptions,
    NetworkOptions,
    SpikingCNN,
    SpikingMLP,
    SpikingNetwork,
    SpikingResNet18,
)
from .presets import build_benchmark
from .resume import (
    STATE_FILE,
    Checkpointer,
    CheckpointError,
    Interrupted,
    restore,
    saved_state,
    stop_on_signals,
)
from .tensorboard_log import TensorBoardLog, summary_writer_class
from .training import training_rule

OUTPUT_FILES = ("config.json", "results.json", "metrics.csv")


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device of ``name`` (auto, cpu, cuda, cuda:N); a worker of several on a machine
    (``local_rank``) takes GPU ``cuda:local_rank`` for auto and cuda."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available; use --device cpu")
    if local_rank is not None and name.startswith("cuda"):
        if name != "cuda":
            raise ConfigError(
                f"--device {name}: each worker of torchrun takes its own GPU (cuda:LOCAL_RANK); "
                "use --device cuda or auto, and CUDA_VISIBLE_DEVICES to choose the GPUs"
            )
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"worker {local_rank} of this machine has no GPU: {torch.cuda.device_count()} "
                "visible; start at most that many workers per machine (--nproc_per_node)"
            )
        return torch.device("cuda", local_rank)
    return torch.device(name)


def network_options(cfg: Config) -> NetworkOptions:
    """The :class:`NetworkOptions` of ``cfg``."""
    h = cfg.hlop
    try:
        rule = training_rule(cfg.training, online_update=cfg.online_update)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    circuit = CircuitOptions(
        lrs=tuple(h.lrs),
        iterations=h.iterations,
        spiking=h.spiking,
        spike_scale=h.spike_scale,
        spike_steps=h.spike_steps,
        hebbian_on=h.hebbian_on,
        hebbian_stride=h.hebbian_stride,
        precision=None if h.precision == "auto" else h.precision,
    )
    return NetworkOptions(
        timesteps=cfg.timesteps,
        training=rule,
        neuron=rule.neuron_params(cfg),
        feedback=cfg.feedback,
        proj_type=h.proj_type,
        circuit=circuit,
        fast=cfg.fast,
        precision=cfg.precision,
    )


def build_model(cfg: Config, benchmark: Benchmark) -> SpikingNetwork:
    """The network of ``cfg`` for ``benchmark`` (random initialisation from the current RNG)."""
    options = network_options(cfg)
    shape = benchmark.input_shape
    classes = benchmark.tasks[0].num_classes
    shared = benchmark.shared_head if cfg.shared_head is None else cfg.shared_head
    if cfg.model not in NETWORKS:
        raise ConfigError(f"model must be one of {', '.join(NETWORKS)}; got {cfg.model!r}")
    if cfg.model != "mlp" and len(shape) != 3:
        raise ConfigError(f"model {cfg.model} needs images (C, H, W); {cfg.benchmark} has {shape}")
    try:
        if cfg.model == "mlp":
            if not shared:
                raise ConfigError("the mlp model has one shared head; set shared_head=true")
            return SpikingMLP(math.prod(shape), cfg.hidden, classes, options)
        if cfg.model == "cnn":
            return SpikingCNN(shape[0], shape[1], classes, shared_head=shared, options=options)
        return SpikingResNet18(
            classes,
            width=cfg.width,
            stem=cfg.stem,
            in_channels=shape[0],
            shared_head=shared,
            options=options,
        )
    except ConfigError:
        raise
    except ValueError as e:  # a setting the network refuses (e.g. hlop.lrs of the wrong length)
        raise ConfigError(str(e)) from None


def circuit_dims(model: SpikingNetwork) -> list[int]:
    return [m.circuit.in_features for _, m in model.projected_layers()]


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict:
    """The contents of an hlop checkpoint; :class:`CheckpointError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle, zip or torch errors: not a checkpoint we wrote
        raise CheckpointError(
            f"{path} is not an hlop checkpoint (it cannot be read as one: {type(e).__name__}); "
            "pass a checkpoint_task<k>.pt file written by hlop train"
        ) from None
    missing = {"model", "task", "config"} - set(ckpt) if isinstance(ckpt, dict) else {"all"}
    if missing:
        raise CheckpointError(
            f"{path} is not an hlop checkpoint (missing entries: {', '.join(sorted(missing))}); "
            "pass a checkpoint_task<k>.pt file written by hlop train"
        )
    return ckpt


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[SpikingNetwork, dict]:
    """A fresh model with the weights and circuits of a checkpoint, and its metadata."""
    ckpt = read_checkpoint(path, device)
    cfg = Config.from_dict(ckpt["config"])
    benchmark = build_benchmark(cfg)
    model = build_model(cfg, benchmark).to(device)
    task = ckpt["task"]
    if not model.shared_head:
        while len(model.heads) <= task:
            model.add_head(benchmark.tasks[len(model.heads)].num_classes)
    model.load_state_dict(ckpt["model"])
    model.consolidated = task > 0
    return model, ckpt


class RunOutputs(Plugin):
    """The files of one run in ``out_dir``, written on the loop's events: a metrics row
    after each epoch, a checkpoint and the results after each task, the final status."""

    name = "outputs"

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
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

    def _write_json(self, name: str, data: dict) -> None:
        write_json(self.dir / name, data)

    def write_config(self, cfg: Config) -> None:
        self._write_json("config.json", cfg.to_dict())

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
        self.results = summarise(run, status)
        self._write_json("results.json", self.results)
        return self.results

    def save_checkpoint(self, run: RunState) -> Path:
        path = self.dir / f"checkpoint_task{run.task}.pt"
        state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
        save_atomic(
            {
                "model": state,
                "task": run.task,
                "config": run.cfg.to_dict(),
                "acc_matrix": run.acc_matrix,
                "version": __version__,
            },
            path,
        )
        return path


def summarise(run: RunState, status: str = "complete") -> dict:
    """results.json: accuracy matrix (percent, a row per training step, null where a task
    is not yet learnt) and metrics; joint training (one step) has one row and BWT null."""
    n_tasks = run.cfg.tasks
    a, learnt = run.acc_matrix, run.learnt()
    matrix = [row + [None] * (n_tasks - len(row)) for row in a]
    return {
        "benchmark": run.cfg.benchmark,
        "method": run.cfg.method,
        "status": status,
        "tasks_completed": learnt,
        "task_names": [t.name for t in run.benchmark.tasks[:n_tasks]],
        "acc_matrix": matrix,
        "evaluated_on": "validation" if run.cfg.validation else "test",
        "acc": average_accuracy(a, learnt) if a else None,
        "bwt": backward_transfer(a, learnt) if a else None,
        "forgetting": forgetting(a, learnt) if a else [],
        "seconds_per_task": [round(s, 2) for s in run.seconds],
        "circuit_sizes": run.model.circuit_sizes(),
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
                total=run.cfg.epochs * n,
                desc=f"task {run.task + 1}/{len(run.stream)}",
                unit="batch",
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
            )
        self.bar.set_postfix_str(
            f"epoch {run.epoch + 1}/{run.cfg.epochs} loss {loss:.4f} acc {acc:5.1f}%",
            refresh=False,
        )
        self.bar.update(1)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def after_epoch(self, run: RunState, row: dict) -> None:
        self.log(
            f"task {row['task'] + 1}/{len(run.stream)} epoch {row['epoch']}/{run.cfg.epochs}: "
            f"train loss {row['train_loss']:.4f}, train acc {row['train_acc']:.2f}%, "
            f"test acc {row['test_acc']:.2f}%"
        )

    def after_training(self, run: RunState) -> None:
        self.close_bar()

    def after_task(self, run: RunState) -> None:
        row = " ".join(f"{v:.2f}" for v in run.acc_matrix[-1])
        self.log(f"after task {run.task + 1}: accuracies {row} ({run.seconds[-1]:.1f}s)")

    def after_run(self, run: RunState, status: str) -> None:
        self.close_bar()


def train(
    cfg: Config,
    out_dir: str | Path,
    overwrite: bool = False,
    stream: TextIO | None = None,
    resume: bool = False,
) -> dict:
    """Run a whole continual experiment; returns the results (also written to ``out_dir``).

    Everything that can be checked is checked before training starts.  If training
    diverges, the results and checkpoints of the completed tasks stay on disk.  ``resume``:
    continue the run in ``out_dir`` from its saved state (its config must be ``cfg`` but
    for :data:`hlop.config.RESULT_NEUTRAL_KEYS`), with exactly the results it would have
    had.  SIGINT and SIGTERM stop the run with its state saved (:class:`Interrupted`).
    """
    methods = method_plugins(cfg)
    measured = cfg.diagnostics_samples > 0 and any(m.uses_circuits for m in methods)
    diagnostics = [CircuitDiagnostics(cfg.diagnostics_samples)] if measured else []
    if cfg.tensorboard:
        summary_writer_class()  # tensorboard is installed, before anything starts
    device = resolve_device(cfg.device, distributed.local_rank())
    with distributed.joined(device):  # under torchrun: with the other workers
        return _train(cfg, device, [*methods, *diagnostics], out_dir, overwrite, stream, resume)


def _train(
    cfg: Config,
    device: torch.device,
    methods: list[Plugin],
    out_dir: str | Path,
    overwrite: bool,
    stream: TextIO | None,
    resume: bool,
) -> dict:
    """:func:`train` on this worker (every worker computes, worker 0 alone writes)."""
    lead = distributed.is_lead()
    progress = Progress(stream if lead else io.StringIO())  # one worker shows progress
    outputs = RunOutputs(out_dir)
    state = None
    with distributed.together("setting up the run"):
        benchmark = build_benchmark(cfg)
        if resume and lead:  # worker 0 reads the saved state and sends it to the others
            state = saved_state(out_dir, cfg, "cpu" if distributed.launched() else device)
        torch.manual_seed(cfg.seed)
        model = distributed.synchronise_batchnorm(build_model(cfg, benchmark)).to(device)
        validate(cfg, circuit_dims(model), max_tasks=len(benchmark.tasks))
        if lead and state is None:  # a new run, or one that saved nothing yet
            outputs.prepare(overwrite or resume)
            outputs.write_config(cfg)
    state = distributed.broadcast_object(state)
    run = RunState(cfg, model, benchmark, device)
    run.generator.manual_seed(cfg.seed)
    writers: list[Plugin] = []
    if lead:
        logs = [TensorBoardLog(outputs.dir / "tb", fresh=not resume)] if cfg.tensorboard else []
        writers = [outputs, *logs]
    plugins = [*methods, *writers, progress]  # the checkpointer last
    checkpointer = Checkpointer(outputs.dir, plugins, cfg.checkpoint_every)
    if lead:
        plugins.append(checkpointer)
    point = None
    if state is not None:
        point = restore(run, plugins, state)
        checkpointer.latest = state  # on disk already: what an interruption now leaves
    workers = f" x {distributed.world_size()} workers" if distributed.is_distributed() else ""
    progress.log(
        f"{cfg.benchmark}: {cfg.tasks} tasks, method {cfg.method}, T={cfg.timesteps}, "
        f"device {device}{workers}, {len(benchmark.tasks[0].train)} training samples per task"
    )
    if resume:
        progress.log(f"resuming {outputs.dir}: {Checkpointer.where(state)}")
    with stop_on_signals():
        try:
            run_continual(run, plugins, point)
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            saved = Checkpointer.where(checkpointer.latest) if lead else "worker 0 saves the state"
            raise Interrupted(signum, outputs.dir if lead else None, saved) from None
    results = outputs.results if lead else summarise(run)
    progress.log("accuracy matrix (%):\n" + format_matrix(run.acc_matrix))
    bwt = "n.a. (joint training)" if results["bwt"] is None else f"{results['bwt']:.2f}%"
    progress.log(f"ACC {results['acc']:.2f}%  BWT {bwt}  -> {outputs.dir}")
    return results
