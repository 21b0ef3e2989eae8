"""From a run's configuration to its network: the settings given to the layers and circuits,
the network of the registry, and networks rebuilt from checkpoints."""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .data import Benchmark
from .errors import CheckpointError, ConfigError
from .files import load_saved
from .networks import NETWORKS, CircuitOptions, NetworkOptions, SpikingNetwork
from .presets import build_benchmark
from .training import training_rule

CHECKPOINT_HINT = "pass a checkpoint_task<k>.pt file written by hlop train"


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
        compile=cfg.compile,
    )


def build_model(cfg: Config, benchmark: Benchmark) -> SpikingNetwork:
    """The network of ``cfg`` for ``benchmark`` (random initialisation from the current RNG)."""
    options = network_options(cfg)
    shape = benchmark.input_shape
    classes = benchmark.tasks[0].num_classes
    shared = benchmark.shared_head if cfg.shared_head is None else cfg.shared_head
    if cfg.model not in NETWORKS:
        raise ConfigError(f"model must be one of {', '.join(NETWORKS)}; got {cfg.model!r}")
    try:
        return NETWORKS[cfg.model].from_config(cfg, shape, classes, shared, options)
    except ConfigError:
        raise
    except ValueError as e:  # a setting the network refuses (e.g. hlop.lrs of the wrong length)
        raise ConfigError(str(e)) from None


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict:
    """The contents of an hlop checkpoint; :class:`CheckpointError` for anything else."""
    path = Path(path)
    ckpt = load_saved(path, device, "checkpoint", CHECKPOINT_HINT)
    missing = {"model", "task", "config"} - set(ckpt) if isinstance(ckpt, dict) else {"all"}
    if missing:
        raise CheckpointError(
            f"{path} is not an hlop checkpoint (missing entries: {', '.join(sorted(missing))}); "
            f"{CHECKPOINT_HINT}"
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
