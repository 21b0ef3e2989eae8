"""A whole run from a resolved configuration: data, network, methods, the loop, outputs.

:func:`train` builds the benchmark (:mod:`hlop.run.presets`) and the network
(:mod:`hlop.run.build`), checks every plugin against them before anything is written, then runs
the continual loop (:mod:`hlop.loop.continual`) with the methods, the outputs and progress
(:mod:`hlop.run.outputs`) and the resume state (:mod:`hlop.run.resume`) plugged in.
"""

from __future__ import annotations

import io
import signal
import warnings
from pathlib import Path
from typing import TextIO

import torch

from hlop.core.precision import native as native_products
from hlop.errors import ConfigError
from hlop.loop import distributed
from hlop.loop.continual import run_continual
from hlop.loop.metrics import format_matrix
from hlop.loop.state import Plugin, RunState
from hlop.run.build import build_model, method_plugins
from hlop.run.config import Config, validate
from hlop.run.diagnostics import CircuitDiagnostics
from hlop.run.outputs import Progress, RunOutputs, summarise
from hlop.run.presets import build_benchmark
from hlop.run.resume import Checkpointer, Interrupted, restore, saved_state, stop_on_signals
from hlop.run.tensorboard_log import TensorBoardLog, summary_writer_class


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
    for :data:`hlop.run.config.RESULT_NEUTRAL_KEYS`), with exactly the results it would have
    had.  SIGINT and SIGTERM stop the run with its state saved (:class:`Interrupted`).
    """
    methods = method_plugins(cfg)
    # circuit diagnostics measure the layers with circuits (a user's network's too)
    measured = cfg.diagnostics_samples > 0 and any(m.uses_circuits for m in methods)
    diagnostics = [CircuitDiagnostics(cfg.diagnostics_samples)] if measured else []
    if cfg.tensorboard:
        summary_writer_class()  # tensorboard is installed, before anything starts
    device = distributed.resolve_device(cfg.device, distributed.local_rank())
    warn_if_bf16_is_emulated(cfg.precision, device)
    with distributed.joined(device):  # under torchrun: with the other workers
        return _train(cfg, device, [*methods, *diagnostics], out_dir, overwrite, stream, resume)


def warn_if_bf16_is_emulated(precision: str, device: torch.device) -> None:
    """bf16 products are fast on GPUs and on CPUs with AVX-512; elsewhere (AVX2) hlop computes
    them with fp32 kernels from bf16-rounded operands (:mod:`hlop.core.precision`): the bf16
    results at about fp32 speed, never faster.  Say so before a run that chose bf16 for
    speed."""
    if precision != "bf16" or native_products(torch.bfloat16, device):
        return
    capability = torch.backends.cpu.get_cpu_capability()
    warnings.warn(
        f"--precision bf16 on a CPU without bf16 products ({capability}): hlop computes them "
        "in fp32 from bf16-rounded operands, with bf16 results but no faster than fp32; "
        "--precision fp32 is as fast here and more precise",
        stacklevel=2,
    )


def _set_up(
    cfg: Config,
    device: torch.device,
    methods: list[Plugin],
    outputs: RunOutputs,
    overwrite: bool,
    resume: bool,
) -> tuple[RunState, dict | None]:
    """The run's data and network, checked against every method before anything is written;
    then (worker 0) its directory and config.json.  Returns the run and, when resuming, the
    saved state (worker 0 reads it and sends it to the others)."""
    state = None
    benchmark = build_benchmark(cfg)
    if resume and distributed.is_lead():
        state = saved_state(outputs.dir, cfg, "cpu" if distributed.launched() else device)
    torch.manual_seed(cfg.seed)
    model = distributed.synchronise_batchnorm(build_model(cfg, benchmark)).to(device)
    validate(cfg)
    if cfg.tasks > len(benchmark.tasks):
        raise ConfigError(f"tasks must be <= {len(benchmark.tasks)} for {cfg.benchmark}")
    run = RunState(cfg.loop_settings(), model, benchmark, device, cfg.optimisation())
    for p in methods:  # what a method cannot run with
        p.check(run)
    if distributed.is_lead() and state is None:  # a new run, or one that saved nothing yet
        outputs.prepare(overwrite or resume)
        outputs.write_config(cfg)
    return run, state


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
    outputs = RunOutputs(out_dir, cfg)
    with distributed.together("setting up the run"):
        run, state = _set_up(cfg, device, methods, outputs, overwrite, resume)
    state = distributed.broadcast_object(state)
    run.generator.manual_seed(cfg.seed)
    benchmark = run.benchmark
    writers: list[Plugin] = []
    if lead:
        logs = [TensorBoardLog(outputs.dir / "tb", fresh=not resume)] if cfg.tensorboard else []
        writers = [outputs, *logs]
    plugins = [*methods, *writers, progress]  # the checkpointer last
    checkpointer = Checkpointer(outputs.dir, plugins, cfg.checkpoint_every, cfg)
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
    note = getattr(run.model, "unprotected_message", lambda: None)()
    if note:
        progress.log(note)
    if resume:
        progress.log(f"resuming {outputs.dir}: {Checkpointer.where(state)}")
    with stop_on_signals():
        try:
            run_continual(run, plugins, point)
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            saved = Checkpointer.where(checkpointer.latest) if lead else "worker 0 saves the state"
            raise Interrupted(signum, outputs.dir if lead else None, saved) from None
    results = outputs.results if lead else summarise(run, cfg)
    progress.log("accuracy matrix (%):\n" + format_matrix(run.acc_matrix))
    if run.acc_matrix_agnostic:
        progress.log(
            "task-agnostic accuracy matrix (%, argmax over every seen head):\n"
            + format_matrix(run.acc_matrix_agnostic)
        )
    progress.log(
        f"ACC {results['acc']:.2f}%  BWT {_bwt(results['bwt'])}"
        + (
            f"  task-agnostic ACC {results['acc_agnostic']:.2f}%  BWT "
            f"{_bwt(results['bwt_agnostic'])}"
            if results.get("acc_agnostic") is not None
            else ""
        )
        + f"  -> {outputs.dir}"
    )
    return results


def _bwt(value: float | None) -> str:
    return "n.a. (joint training)" if value is None else f"{value:.2f}%"
