"""The ``hlop`` command line: ``hlop train`` and ``hlop data fetch``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .benchmarks import BENCHMARKS, preset
from .circuit import CircuitError
from .config import ConfigError, apply_overrides, validate
from .continual import TrainingDiverged
from .data import DATASETS, DataError, fetch_dataset

# command-line flag -> configuration key
FLAGS = {
    "data_dir": "data_dir",
    "method": "method",
    "epochs": "epochs",
    "tasks": "tasks",
    "batch_size": "batch_size",
    "lr": "lr",
    "timesteps": "timesteps",
    "device": "device",
    "seed": "seed",
    "proj_type": "hlop.proj_type",
    "feedback": "feedback",
    "lateral_scale": "hlop.spike_scale",
    "lateral_timesteps": "hlop.spike_steps",
    "hlop_on": "hlop.hebbian_on",
    "hlop_start_epochs": "hlop.start_epochs",
    "hlop_iterations": "hlop.iterations",
}
# on/off flags -> configuration key set to true
SWITCHES = {
    "online_update": "online_update",
    "lateral_spiking": "hlop.spiking",
    "replay": "replay.enabled",
}


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
        "every value can be overridden with a flag or --set key=value.",
    )
    t.add_argument(
        "benchmark",
        nargs="?",
        default="pmnist-subset",
        choices=list(BENCHMARKS),
        metavar="BENCHMARK",
        help="; ".join(f"{b.name}: {b.summary}" for b in BENCHMARKS.values())
        + ". All but the *-subset ones read --data-dir.",
    )
    t.add_argument("--data-dir", help="data root holding one folder per dataset (mnist/, ...)")
    t.add_argument("--out-dir", help="output directory (default: runs/BENCHMARK-METHOD-TIME)")
    t.add_argument("--method", choices=["hlop", "baseline"])
    t.add_argument("--epochs", type=int, help="epochs per task")
    t.add_argument("--tasks", type=int, help="number of tasks")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="learning rate")
    t.add_argument("--timesteps", type=int, help="T, simulation time steps")
    t.add_argument("--device", help="auto, cpu or cuda")
    t.add_argument("--seed", type=int)
    t.add_argument("--proj-type", choices=["input", "weight"], help="HLOP projection mode")
    t.add_argument(
        "--training",
        choices=["dsr", "bptt", "ottt"],
        default="dsr",
        help="training method (bptt and ottt presets use T=6)",
    )
    t.add_argument(
        "--online-update", action="store_true", help="OTTT: optimiser step at every time step"
    )
    t.add_argument(
        "--feedback",
        choices=["backprop", "feedback-alignment", "sign-symmetric"],
        help="how errors propagate to earlier layers",
    )
    t.add_argument("--lateral-spiking", action="store_true", help="spiking lateral neurons")
    t.add_argument("--lateral-scale", type=float, help="scale s of spiking lateral neurons")
    t.add_argument("--lateral-timesteps", type=int, help="time steps of spiking lateral neurons")
    t.add_argument(
        "--hlop-on", choices=["wfr", "spikes"], help="what circuits learn from (DSR, BPTT)"
    )
    t.add_argument("--hlop-start-epochs", type=int, help="epochs before circuits start learning")
    t.add_argument("--hlop-iterations", type=int, help="Hebbian iterations per batch")
    t.add_argument(
        "--replay",
        action="store_true",
        help="memory replay after each task (with --method baseline: replay only)",
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any configuration value, e.g. --set hlop.iterations=3 "
        "(see --show-config for the keys)",
    )
    t.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out-dir")
    t.add_argument("--show-config", action="store_true", help="print the resolved config and exit")

    d = sub.add_parser("data", help="get datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download a dataset into the data root, checking checksums")
    f.add_argument("name", choices=list(DATASETS))
    f.add_argument("--data-dir", required=True, help="data root (files go to DIR/NAME/...)")
    return p


def _train(args: argparse.Namespace) -> int:
    from .experiment import train  # torch-heavy imports only when training

    cfg = preset(args.benchmark, args.training)
    overrides = [
        f"{key}={getattr(args, flag)}"
        for flag, key in FLAGS.items()
        if getattr(args, flag) is not None
    ]
    overrides += [f"{key}=true" for flag, key in SWITCHES.items() if getattr(args, flag)]
    apply_overrides(cfg, overrides + args.set)
    if args.show_config:
        import json

        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    validate(cfg)
    out = args.out_dir or f"runs/{cfg.benchmark}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    train(cfg, out, overwrite=args.overwrite)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        path = fetch_dataset(args.name, Path(args.data_dir))
        print(f"{args.name} is ready in {path}")
        return 0
    except (ConfigError, DataError, CircuitError) as e:
        print(f"hlop: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"hlop: training stopped: {e}", file=sys.stderr)
        print("hlop: results and checkpoints of the completed tasks are kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hlop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
