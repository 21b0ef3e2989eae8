"""The ``hlop`` command line: ``hlop train``, ``hlop compare``, ``hlop report`` and
``hlop data fetch``.

Every ``hlop train`` flag is one row of :data:`TRAIN_FLAGS`: the flag, the configuration key
it sets, and its help; its type comes from the configuration and its choices from the
registry that declares them.  ``--set key=value`` reaches every other key.  ``hlop compare``
takes the same flags (but ``--method`` and ``--seed``: it has ``--methods`` and ``--seeds``)
and applies them to every run of its study.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import typing
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from hlop.core.choices import (
    FEEDBACK_RULES,
    HEBBIAN_SOURCES,
    PRECISIONS,
    PROJ_TYPES,
    TRAINING_RULES,
)
from hlop.data import DATASETS, fetch_dataset
from hlop.errors import CheckpointError, ConfigError, HlopError
from hlop.loop import distributed, memory
from hlop.loop.continual import TrainingDiverged
from hlop.methods import METHODS
from hlop.models.external import is_factory_reference
from hlop.run.config import Config, apply_overrides, key_type, read_config_file, validate
from hlop.run.presets import BENCHMARKS, for_any_model, preset
from hlop.run.resume import Interrupted
from hlop.tools.paper import PAPER_METHODS


@dataclass(frozen=True)
class Flag:
    """One ``hlop train`` flag: it sets configuration key ``key`` (a switch sets it true)."""

    flag: str
    key: str
    help: str
    choices: Collection[str] | None = None  # read when the parser is built
    switch: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


TRAIN_FLAGS: tuple[Flag, ...] = (
    Flag("--data-dir", "data_dir", "data root holding one folder per dataset (mnist/, ...)"),
    Flag("--method", "method", "continual-learning method", METHODS),  # as registered now
    Flag("--model", "model",
         "the network: a built-in one (mlp, cnn, resnet18; the benchmark's by default) or "
         "your own, by its factory FILE.py:FUNCTION or package.module:FUNCTION"),
    Flag("--training", "training", "training method (bptt and ottt presets use T=6)",
         TRAINING_RULES),
    Flag("--epochs", "epochs", "epochs per task"),
    Flag("--tasks", "tasks", "number of tasks"),
    Flag("--batch-size", "batch_size",
         "training batch size: the global batch, split across the workers under torchrun"),
    Flag("--lr", "lr", "learning rate"),
    Flag("--timesteps", "timesteps", "T, simulation time steps"),
    Flag("--device", "device", "auto, cpu, cuda or cuda:N"),
    Flag("--seed", "seed", "random seed of the run"),
    Flag("--precision", "precision",
         "dtype of the weight products (bf16: about 4x faster matrix products on CPUs "
         "with AVX512-BF16 or AMX and on GPUs; H, membranes and the loss stay fp32)",
         tuple(PRECISIONS)),
    Flag("--proj-type", "hlop.proj_type", "HLOP projection mode", PROJ_TYPES),
    Flag("--feedback", "feedback", "how errors propagate to earlier layers", FEEDBACK_RULES),
    Flag("--online-update", "online_update", "OTTT: optimiser step at every time step",
         switch=True),
    Flag("--lateral-spiking", "hlop.spiking", "spiking lateral neurons", switch=True),
    Flag("--lateral-scale", "hlop.spike_scale", "scale s of spiking lateral neurons"),
    Flag("--lateral-timesteps", "hlop.spike_steps", "time steps of spiking lateral neurons"),
    Flag("--hlop-on", "hlop.hebbian_on", "what circuits learn from", HEBBIAN_SOURCES),
    Flag("--hlop-start-epochs", "hlop.start_epochs", "epochs before circuits start learning"),
    Flag("--hlop-iterations", "hlop.iterations", "Hebbian iterations per batch"),
    Flag("--replay", "replay.enabled",
         "memory replay after each task (with --method baseline: replay only)", switch=True),
    Flag("--checkpoint-every", "checkpoint_every",
         "epochs between saves of the resume state inside a task (0: after tasks only)"),
    Flag("--tensorboard", "tensorboard",
         "log losses, accuracies and circuit diagnostics to OUT_DIR/tb (needs tensorboard)",
         switch=True),
)  # fmt: skip


def _argument_type(key: str):
    tp = key_type(key)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


DEFAULT_BENCHMARK = "pmnist-subset"

#: keys that ``hlop compare`` sets per run (from ``--methods`` and ``--seeds``)
STUDY_KEYS = ("method", "seed")


def _add_config_arguments(t: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """BENCHMARK, the ``flags`` and ``--set``: what :func:`resolve_config` reads."""
    t.add_argument(
        "benchmark",
        nargs="?",
        metavar="BENCHMARK",
        help="; ".join(f"{b.name}: {b.summary}" for b in BENCHMARKS.values())
        + f". All but the *-subset ones read --data-dir. Default: {DEFAULT_BENCHMARK}, or "
        "the benchmark of --config / --resume. Your own data: FILE.py:FUNCTION or "
        "package.module:FUNCTION, a function returning a benchmark (hlop.data.tasks_from, "
        "class_split, permuted).",
    )
    for f in flags:
        if f.switch:
            t.add_argument(f.flag, action="store_true", help=f"{f.help} (sets {f.key}=true)")
        else:
            t.add_argument(
                f.flag,
                type=_argument_type(f.key),
                choices=None if f.choices is None else list(f.choices),
                help=f"{f.help} ({f.key})",
            )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any configuration value, e.g. --set hlop.iterations=3 "
        "(see hlop train --show-config for the keys)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hlop",
        description="Continual learning of spiking neural networks with HLOP (ICLR 2024).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="run a continual-learning experiment",
        description="Run a continual-learning experiment with the paper's preset for BENCHMARK; "
        "every value can be overridden with a flag or --set key=value. Data-parallel on "
        "several processes, GPUs or machines: torchrun --nproc_per_node=N -m hlop train ... "
        "(worker 0 writes the outputs).",
    )
    _add_config_arguments(t, TRAIN_FLAGS)
    t.add_argument(
        "--config",
        metavar="FILE",
        help="start from a saved configuration (a run's config.json) instead of the preset; "
        "flags and --set apply on top",
    )
    t.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the interrupted run in DIR from its last saved state, with its saved "
        "configuration (flags may only change data_dir, device, checkpoint_every)",
    )
    t.add_argument("--out-dir", help="output directory (default: runs/BENCHMARK-METHOD-TIME)")
    t.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out-dir")
    t.add_argument("--show-config", action="store_true", help="print the resolved config and exit")

    c = sub.add_parser(
        "compare",
        help="compare methods over seeds on one benchmark (one hlop train run each)",
        description="Run every method with every seed on BENCHMARK (each an ordinary hlop train "
        "run in OUT_DIR/METHOD-sSEED; the flags and --set apply to every run), then write "
        "OUT_DIR/summary.csv and summary.md and print the table. Rerunning keeps completed "
        "runs and continues unfinished ones from their last saved state. Exit code 1 when "
        "some run failed.",
    )
    _add_config_arguments(c, [f for f in TRAIN_FLAGS if f.key not in STUDY_KEYS])
    c.add_argument(
        "--methods",
        default=",".join(PAPER_METHODS),
        help=f"comma-separated methods (default: the paper's, {','.join(PAPER_METHODS)}; replay: "
        "the baseline with --replay); "
        f"registered: {', '.join(METHODS)}",
    )
    c.add_argument("--seeds", default="2022,2023,2024", help="comma-separated seeds")
    c.add_argument("--out-dir", required=True, help="directory of the study")
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="retrain runs whose saved config differs from the requested one",
    )

    r = sub.add_parser(
        "report",
        help="figures and a markdown summary of runs and studies",
        description="Write PNG figures and report.md into each PATH: a run directory (hlop "
        "train) gets its accuracy matrix, each task's accuracy over training and its circuit "
        "diagnostics; a study directory (hlop compare) gets ACC and BWT per method with error "
        "bars, and a report in each of its runs. Needs matplotlib: pip install 'hlop[plot]'.",
    )
    r.add_argument("paths", nargs="+", metavar="PATH", help="run or study directory")

    d = sub.add_parser("data", help="get datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download a dataset into the data root, checking checksums")
    f.add_argument("name", choices=list(DATASETS))
    f.add_argument("--data-dir", required=True, help="data root (files go to DIR/NAME/...)")
    return p


def resolve_config(args: argparse.Namespace, log=print) -> Config:
    """The run's configuration: the preset of the benchmark and training method (or the
    file of ``--config``, or the run of ``--resume``), then the flags, then ``--set`` (in
    that order)."""
    resume = getattr(args, "resume", None)
    source = getattr(args, "config", None) or (resume and str(Path(resume) / "config.json"))
    if source:
        if resume and not Path(source).is_file():
            raise CheckpointError(f"--resume {resume}: no hlop run there (no config.json)")
        cfg = read_config_file(source)
        if args.benchmark not in (None, cfg.benchmark):
            raise ConfigError(
                f"{source} is a {cfg.benchmark} run; omit the benchmark {args.benchmark} "
                "or give the same one"
            )
    else:
        cfg = preset(args.benchmark or DEFAULT_BENCHMARK, args.training or "dsr")
        if args.model is not None and is_factory_reference(args.model):
            for_any_model(cfg)  # the preset's per-layer values are the built-in network's
    overrides = []
    for f in TRAIN_FLAGS:
        value = getattr(args, f.dest, None)  # hlop compare has no --method, --seed
        if f.switch and value:
            overrides.append(f"{f.key}=true")
        elif not f.switch and value is not None:
            overrides.append(f"{f.key}={value}")
    apply_overrides(cfg, overrides + args.set)
    explicit_proj = args.proj_type is not None or any(
        s.partition("=")[0].strip() == "hlop.proj_type" for s in args.set
    )
    if cfg.hlop.spiking and cfg.hlop.proj_type == "weight" and not explicit_proj:
        cfg.hlop.proj_type = "input"
        log(
            "note: spiking lateral neurons quantise activity rows, which only the input "
            "projection has: this run projects in input mode (hlop.proj_type=input)"
        )
    validate(cfg)
    return cfg


def _train(args: argparse.Namespace) -> int:
    from hlop.run.experiment import train  # torch-heavy imports only when training

    if args.resume and (args.config or args.overwrite):
        raise ConfigError("--resume continues a run as it was: drop --config and --overwrite")
    if args.resume and args.out_dir not in (None, args.resume):
        raise ConfigError("--resume DIR writes to DIR: drop --out-dir")
    cfg = resolve_config(args)
    if args.show_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if args.resume:
        train(cfg, args.resume, resume=True)
        return 0
    out = args.out_dir or f"runs/{cfg.benchmark}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    train(cfg, out, overwrite=args.overwrite)
    return 0


def _comma_list(text: str, what: str) -> list[str]:
    items = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not items:
        raise ConfigError(f"--{what} needs at least one value, e.g. --{what} a,b")
    return items


def _compare(args: argparse.Namespace) -> int:
    from hlop.tools.compare import run_study
    from hlop.tools.study_tables import write_summary

    if distributed.launched():
        raise ConfigError(
            "hlop compare runs in one process; start each of its runs with "
            "torchrun ... -m hlop train instead"
        )
    for item in args.set:
        if item.partition("=")[0].strip() in STUDY_KEYS:
            raise ConfigError("hlop compare sets method and seed per run: use --methods, --seeds")
    methods = _comma_list(args.methods, "methods")
    try:
        seeds = [int(s) for s in _comma_list(args.seeds, "seeds")]
    except ValueError:
        raise ConfigError(f"--seeds expects integers, got {args.seeds!r}") from None
    base = resolve_config(args)
    results = run_study(base, methods, seeds, args.out_dir, overwrite=args.overwrite)
    table = write_summary(args.out_dir, base.benchmark, results)
    print(f"\n{base.benchmark}: {len(methods)} methods x {len(seeds)} seeds -> {args.out_dir}")
    print(table)
    failed = [r for r in results if r.status != "complete"]
    if failed:
        print(f"hlop: {len(failed)} of {len(results)} runs failed", file=sys.stderr)
        return 1
    return 0


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, ``hlop: warning: MESSAGE``: no file path or source line."""
    text = " ".join(str(message).split())
    print(f"hlop: warning: {text}", file=sys.stderr if file is None else file, flush=True)


def main(argv: list[str] | None = None) -> int:
    # the process's memory policy, set by the entry point (a library call leaves it alone)
    memory.bound_kernel_caches()  # before any oneDNN work of this process
    memory.tune_allocator()  # a heap that does not hand pages back within a step
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():  # restores the caller's warning display on return
        warnings.showwarning = show_warning
        if not distributed.is_lead():  # every worker computes the same: worker 0 warns
            warnings.simplefilter("ignore")
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    who = distributed.label()  # "[worker R/N] " under torchrun
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "report":
            from hlop.tools.report import report

            report(args.paths)
            return 0
        path = fetch_dataset(args.name, Path(args.data_dir))
        print(f"{args.name} is ready in {path}")
        return 0
    except HlopError as e:
        print(f"hlop: {who}error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"hlop: {who}training stopped: {e}", file=sys.stderr)
        print("hlop: results and checkpoints of the completed tasks are kept", file=sys.stderr)
        return 1
    except distributed.WorkerLost as e:
        print(f"hlop: {who}stopped: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"hlop: {who}stopped by {e.signal_name}; {e.saved}", file=sys.stderr)
        if e.directory is not None:
            print(f"hlop: continue with: hlop train --resume {shlex.quote(str(e.directory))}",
                  file=sys.stderr)  # fmt: skip
            if args.command == "compare":
                print("hlop: (or rerun the same hlop compare: it continues unfinished runs)",
                      file=sys.stderr)  # fmt: skip
        return e.exit_code
    except KeyboardInterrupt:
        print(f"hlop: {who}interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
