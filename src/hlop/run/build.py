"""From a run's configuration to its components: the network (its settings, the registry's
network for the benchmark, networks rebuilt from checkpoints) and the methods' plugins; the
loop's settings and optimisation are :meth:`Config.loop_settings` and
:meth:`Config.optimisation`.  Nothing below the run layer reads the configuration: it is
resolved into these here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from hlop.core.circuit import CircuitSettings
from hlop.data import Benchmark
from hlop.errors import CheckpointError, CircuitError, ConfigError
from hlop.loop.state import Plugin, RunState
from hlop.methods import ADDONS, METHODS
from hlop.models.base import SpikingNetwork
from hlop.models.external import external_model, is_factory_reference
from hlop.models.registry import NETWORKS
from hlop.models.settings import NetworkSettings
from hlop.run.config import Config
from hlop.run.files import load_saved
from hlop.run.presets import build_benchmark
from hlop.spiking.training import training_rule

CHECKPOINT_HINT = "pass a checkpoint_task<k>.pt file written by hlop train"


def method_plugins(cfg: Config) -> list[Plugin]:
    """The plugins of a run: its method (``cfg.method``), then each add-on whose section is
    enabled."""
    if cfg.method not in METHODS:
        raise ConfigError(
            f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)} (--method)"
        )
    plugins = [METHODS[cfg.method].build(getattr(cfg, cfg.method, None))]
    for name, addon in ADDONS.items():
        section = getattr(cfg, name)
        if section.enabled:
            plugins.append(addon.build(section))
    return plugins


def network_settings(cfg: Config) -> NetworkSettings:
    """The :class:`NetworkSettings` of ``cfg``."""
    h = cfg.hlop
    try:
        rule = training_rule(cfg.training, online_update=cfg.online_update)
        circuit = CircuitSettings(
            iterations=h.iterations,
            spiking=h.spiking,
            spike_scale=h.spike_scale,
            spike_steps=h.spike_steps,
            precision=cfg.precision if h.precision == "auto" else h.precision,
        )
    except (ValueError, CircuitError) as e:
        raise ConfigError(str(e)) from None
    return NetworkSettings(
        timesteps=cfg.timesteps,
        training=rule,
        neuron=rule.neuron_params(dataclasses.asdict(getattr(cfg, rule.neuron_section))),
        feedback=cfg.feedback,
        proj_type=h.proj_type,
        circuit=circuit,
        lrs=tuple(h.lrs),
        hebbian_on=h.hebbian_on,
        hebbian_stride=h.hebbian_stride,
        fast=cfg.fast,
        precision=cfg.precision,
        compile=cfg.compile,
    )


def build_model(cfg: Config, benchmark: Benchmark) -> SpikingNetwork:
    """The network of ``cfg`` for ``benchmark`` (random initialisation from the current RNG)."""
    settings = network_settings(cfg)
    shape = benchmark.input_shape
    classes = benchmark.tasks[0].num_classes
    shared = benchmark.shared_head if cfg.shared_head is None else cfg.shared_head
    if is_factory_reference(cfg.model):  # a network of the user's own, tried on 2 samples
        model = external_model(
            cfg.model, shape, classes, cfg.tasks, shared, cfg.timesteps, cfg.unprotected
        )
        train = benchmark.tasks[0].train
        model.probe(train.batch(torch.arange(min(2, len(train))))[0])
        return model
    if cfg.model not in NETWORKS:
        raise ConfigError(
            f"model must be one of {', '.join(NETWORKS)}, or your network's factory "
            f"FILE.py:FUNCTION or package.module:FUNCTION; got {cfg.model!r}"
        )
    architecture = {"hidden": cfg.hidden, "width": cfg.width, "stem": cfg.stem}
    try:
        return NETWORKS[cfg.model].for_benchmark(shape, classes, shared, settings, **architecture)
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


def load_checkpoint(
    path: str | Path, device: str = "cpu", factory: str | None = None
) -> tuple[SpikingNetwork, dict]:
    """A fresh model with the weights and circuits of a checkpoint, and its metadata.

    A network of the user's own (a run with ``--model FILE.py:FUNCTION``) is built again by
    the factory its run's configuration records (``factory``: another one, e.g. where the
    file moved), given circuits as the run's method gave them (HLOP's or GPM's hooks on its
    layers), then loaded: an ``hlop.models.external.ExternalModel``, as the run
    trained it.  :class:`~hlop.errors.CheckpointError` when the factory cannot be imported
    or builds a network that does not fit the checkpoint."""
    ckpt = read_checkpoint(path, device)
    cfg = Config.from_dict(ckpt["config"])
    if factory is not None:
        if not is_factory_reference(cfg.model):
            raise CheckpointError(
                f"{path}: its network is the built-in {cfg.model!r}, not one of a factory; "
                "load it without factory="
            )
        cfg.model = factory
    benchmark = build_benchmark(cfg)
    task = ckpt["task"]
    if is_factory_reference(cfg.model):
        model = user_network(cfg, benchmark, path, device)
    else:
        model = build_model(cfg, benchmark).to(device)
        if not model.shared_head:
            while len(model.heads) <= task:
                model.add_head(benchmark.tasks[len(model.heads)].num_classes)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        if not is_factory_reference(cfg.model):
            raise
        raise CheckpointError(
            f"{path}: the network {cfg.model} builds now does not fit the checkpoint ({e}); "
            "pass factory='FILE.py:FUNCTION' of the network the run trained"
        ) from e
    model.consolidated = task > 0
    return model, ckpt


def user_network(cfg: Config, benchmark: Benchmark, path: str | Path, device: str):
    """The network of a run with ``--model`` (``cfg.model``, a factory), its circuits
    attached as the run's methods attach them (:meth:`Plugin.check`), on ``device``."""
    try:
        model = build_model(cfg, benchmark).to(device)
    except ConfigError as e:
        raise CheckpointError(
            f"{path}: its network is built by {cfg.model} (the run's --model, in its "
            f"configuration), which fails now: {e}. Run from the directory the run was started "
            "in (a relative FILE.py is read from there), or pass factory='FILE.py:FUNCTION' "
            "where it moved"
        ) from e
    run = RunState(cfg.loop_settings(), model, benchmark, torch.device(device), cfg.optimisation())
    for plugin in method_plugins(cfg):
        if plugin.uses_circuits:  # HLOP, GPM: hooks and circuits on the network's layers
            plugin.check(run)
    return model
