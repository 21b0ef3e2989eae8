"""Run configuration: one dataclass tree, dotted-key overrides, validation.

A run is fully described by its resolved :class:`Config`, written as ``config.json``
next to its results.  :func:`hlop.presets.preset` gives the paper's settings for a
benchmark; ``apply_overrides(cfg, ["hlop.iterations=3", ...])`` changes any value by its
dotted key.  Choice lists (training methods, feedback rules, ...) come from the modules
that implement them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .networks import NETWORKS, STEMS
from .projection import FEEDBACK_RULES, HEBBIAN_SOURCES, HEBBIAN_STRIDES, PRECISIONS, PROJ_TYPES
from .training import TRAINING_RULES, training_rule

OPTIMIZERS = ("sgd", "adam")  # built by hlop.continual.make_optimizer
SCHEDULERS = ("step", "cosine")  # step decay, or cosine with linear warmup (make_scheduler)


@dataclass
class NeuronConfig:
    leaky: bool = True  # LIF (True) or IF (False)
    vth: float = 0.3
    vth_bound: float = 5e-4
    tau: float = 1.0
    dt: float = 0.05
    alpha: float = 0.3
    train_vth: bool = True


@dataclass
class SurrogateConfig:
    """LIF of BPTT / OTTT training."""

    tau: float = 2.0
    vth: float = 1.0
    alpha: float = 4.0  # sigmoid(alpha x) surrogate


@dataclass
class HLOPConfig:
    lrs: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.01])
    iterations: int = 5
    # block sizes added to each circuit before each task (one list per task)
    sizes: list[list[int]] = field(default_factory=list)
    start_epochs: int = 0  # epochs of each task before the circuits start learning
    hebbian_on: str = "wfr"  # what circuits learn from: "wfr" (rate over time) or "spikes"
    # convolutions learn from patches at their own stride ("layer") or at stride 1 ("one",
    # as the authors' code does); projection always uses the layer's own patches
    hebbian_stride: str = "layer"
    spiking: bool = False
    spike_scale: float = 20.0
    spike_steps: int = 1000
    proj_type: str = "input"
    # the old block's products (residual of the update, projection): "auto" (as the
    # network's precision), "fp32" or "bf16"; H and its update stay fp32
    precision: str = "auto"


@dataclass
class ReplayConfig:
    enabled: bool = False
    memory_size: int = 50  # samples kept per class of each task (chosen at random, seeded)
    epochs: int = 1
    batch_size: int = 50  # per task, in each replay step
    lr: float = 0.01
    t_max: int = 20  # cosine schedule of replay, when the run's scheduler is cosine


@dataclass
class EWCConfig:
    """Elastic weight consolidation (``--method ewc``)."""

    # strength of the penalty (lam / 2) sum F (theta - theta*)^2.  The ANN reference
    # (joansj/hat) uses 5000 with another network and loss scale; here Fisher entries reach
    # ~0.6 (PMNIST subset), and SGD on the penalty diverges once lr lam max F >= 2: 5000
    # diverges at lr 0.1.  A starting point for the search, which the run warns about.
    lam: float = 10.0
    samples: int = 500  # training samples of each task whose per-sample gradients give F


@dataclass
class GPMConfig:
    """Gradient projection memory (``--method gpm``)."""

    # energy threshold eps of each circuit (one value for all, or one per circuit in network
    # order, as hlop.lrs); task t uses min(eps + threshold_step * t, 1)
    thresholds: list[float] = field(default_factory=lambda: [0.97])
    threshold_step: float = 0.0  # CIFAR-100 reference: 0.97 + 0.003 t
    samples: int = 125  # training samples of each task in the representation matrices


@dataclass
class HATConfig:
    """Hard attention to the task (``--method hat``); defaults of the reference code."""

    c: float = 0.75  # strength of the attention regulariser (lamb in the reference)
    s_max: float = 400.0  # largest scale of the gates sigmoid(s e): the one used at test
    thr: float = 50.0  # clamp of s e inside cosh in the embedding-gradient compensation
    emb_clamp: float | None = 6.0  # embeddings clamped to +-emb_clamp after each step; None: not


@dataclass
class Config:
    benchmark: str = "pmnist-subset"
    method: str = "hlop"
    tasks: int = 10
    epochs: int = 1
    batch_size: int = 64
    test_batch_size: int = 64
    lr: float = 0.1
    lr_later: float | None = None  # learning rate of tasks after the first (None: lr)
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "step"  # "step" or "cosine" (with warmup)
    step_size: int = 100
    gamma: float = 0.1
    warmup: int = 0
    t_max: int = 200
    timesteps: int = 20
    seed: int = 2022
    device: str = "auto"
    training: str = "dsr"  # dsr, bptt or ottt
    online_update: bool = False  # OTTT: optimiser step at every time step
    feedback: str = "backprop"
    fast: bool = True  # DSR fast path
    # dtype of the network's weight products: fp32, or bf16 (with the circuits' old-block
    # products, hlop.precision=auto); membranes, H, the loss and products with projected
    # rows stay fp32 (README, "Speed and precision")
    precision: str = "fp32"
    model: str = "mlp"  # mlp, cnn or resnet18
    hidden: int = 800  # mlp
    width: int = 20  # resnet18 base width
    stem: str = "3x3"  # resnet18 stem: 3x3 stride 1, or 5x5 stride 2 (miniImageNet)
    shared_head: bool | None = None  # None: as the benchmark (shared for pmnist, domain)
    train_limit: int | None = None  # samples per task kept (class-stratified); None: all
    # fraction of each task's training data held out for validation; > 0: accuracies are
    # measured on it instead of the test set (hyperparameter searches never see test data)
    validation: float = 0.0
    test_limit: int | None = None
    data_dir: str | None = None
    # epochs between the saves of the resume state (state.pt) inside a task; 0: only after
    # each task.  1: an interruption loses at most one epoch, for one write of the model and
    # optimiser (well under 1% of an epoch on the paper's benchmarks)
    checkpoint_every: int = 1
    # training samples of each finished task on which the circuits are measured (HLOP, GPM:
    # results.json "circuit_diagnostics"); 0: not measured
    diagnostics_samples: int = 256
    tensorboard: bool = False  # TensorBoard event files in OUT_DIR/tb (hlop.tensorboard_log)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    hlop: HLOPConfig = field(default_factory=HLOPConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    ewc: EWCConfig = field(default_factory=EWCConfig)
    gpm: GPMConfig = field(default_factory=GPMConfig)
    hat: HATConfig = field(default_factory=HATConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        cfg = cls()
        for key, value in _flatten(d):
            _set(cfg, key, value)
        return cfg


#: keys that cannot change a run's results: where the data lives, where it runs, how often
#: it saves its state.  A run may resume, and a study keep a run, with other values of these.
RESULT_NEUTRAL_KEYS = (
    "data_dir",
    "device",
    "checkpoint_every",
    "tensorboard",
    "diagnostics_samples",  # measured on a separate generator: results do not move
)


def differences(saved: dict[str, Any], cfg: Config) -> list[str]:
    """The dotted keys, but :data:`RESULT_NEUTRAL_KEYS`, whose values differ between a saved
    config.json and ``cfg`` (keys missing from an older file count at their defaults)."""
    try:
        saved = Config.from_dict(saved).to_dict()
    except ConfigError:  # keys this version does not know: compared as written
        pass
    old, new = dict(_flatten(saved)), dict(_flatten(cfg.to_dict()))
    missing = object()
    return sorted(
        k
        for k in set(old) | set(new)
        if k not in RESULT_NEUTRAL_KEYS and old.get(k, missing) != new.get(k, missing)
    )


def read_config_file(path: str | Path) -> Config:
    """The configuration in a JSON file (a run's config.json): every key is checked as
    ``--set`` checks it; :class:`ConfigError` names the file and the key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(f"{path} is not a JSON configuration: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON configuration: expected an object of keys")
    try:
        return Config.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ---------------------------------------------------------------------- overrides
def _flatten(d: dict[str, Any], prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def keys(cfg: Config | None = None) -> list[str]:
    """Every settable dotted key."""
    return [k for k, _ in _flatten((cfg or Config()).to_dict())]


def _field_type(obj: Any, name: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    return hints[name]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], key)
    if isinstance(value, str) and tp is not str:
        try:
            value = json.loads(value.lower() if tp is bool else value)
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: cannot read {value!r} as {_type_name(tp)}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list | tuple):
            (inner,) = typing.get_args(tp)
            return [_coerce(v, inner, key) for v in value]
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _set(cfg: Config, key: str, value: Any) -> None:
    obj: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or part not in {
            f.name for f in dataclasses.fields(obj)
        }:
            raise ConfigError(_unknown(key))
        obj = getattr(obj, part)
    name = parts[-1]
    if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
        raise ConfigError(_unknown(key))
    tp = _field_type(obj, name)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{key} is a section; set one of its keys, e.g. {key}.{_first(tp)}")
    setattr(obj, name, _coerce(value, tp, key))


def key_type(key: str) -> Any:
    """The type of configuration key ``key`` (e.g. ``int`` for ``"epochs"``)."""
    obj: Any = Config()
    for part in key.split(".")[:-1]:
        obj = getattr(obj, part)
    return _field_type(obj, key.split(".")[-1])


def _first(tp: Any) -> str:
    return dataclasses.fields(tp)[0].name


def _unknown(key: str) -> str:
    return f"unknown configuration key {key!r}; valid keys: {', '.join(keys())}"


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    """Apply ``key=value`` strings (values in JSON or plain words) to ``cfg`` in place."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        _set(cfg, key.strip(), value.strip())
    return cfg


# ---------------------------------------------------------------------- validation
def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{key} must be one of {', '.join(choices)}; got {value!r}")


def validate(
    cfg: Config, layer_dims: list[int] | None = None, max_tasks: int | None = None
) -> None:
    """Refuse out-of-range values; ``layer_dims``: input dimension of each circuit."""
    _choice("training", cfg.training, tuple(TRAINING_RULES))
    try:  # the rule refuses options it does not take (online_update: OTTT only)
        training_rule(cfg.training, online_update=cfg.online_update)
    except ValueError as e:
        raise ConfigError(f"{e} (--online-update)") from None
    r = cfg.replay
    for name in ("memory_size", "epochs", "batch_size", "t_max"):
        _check(getattr(r, name) >= 1, f"replay.{name} must be >= 1, got {getattr(r, name)}")
    _check(r.lr > 0, f"replay.lr must be > 0, got {r.lr}")
    _check(cfg.ewc.lam >= 0, f"ewc.lam must be >= 0, got {cfg.ewc.lam}")
    _check(cfg.ewc.samples >= 1, f"ewc.samples must be >= 1, got {cfg.ewc.samples}")
    _check(
        not (cfg.method == "ewc" and cfg.online_update),
        "ewc adds its penalty's gradient before each optimiser step, which OTTT's online "
        "update (an optimiser step at every time step) bypasses: drop --online-update",
    )
    g = cfg.gpm
    _check(
        len(g.thresholds) >= 1 and all(0 < t <= 1 for t in g.thresholds),
        f"gpm.thresholds must be in (0, 1], got {g.thresholds}",
    )
    _check(g.threshold_step >= 0, f"gpm.threshold_step must be >= 0, got {g.threshold_step}")
    _check(g.samples >= 1, f"gpm.samples must be >= 1, got {g.samples}")
    if layer_dims is not None:
        _check(
            len(g.thresholds) in (1, len(layer_dims)),
            f"gpm.thresholds needs 1 value or {len(layer_dims)} (one per circuit), "
            f"got {g.thresholds}",
        )
    a = cfg.hat
    _check(a.c >= 0, f"hat.c must be >= 0, got {a.c}")
    _check(a.s_max >= 1, f"hat.s_max must be >= 1 (annealing runs from 1/s_max), got {a.s_max}")
    _check(a.thr > 0, f"hat.thr must be > 0, got {a.thr}")
    clamp = a.emb_clamp
    _check(clamp is None or clamp > 0, f"hat.emb_clamp must be > 0 or none, got {clamp}")
    _choice("model", cfg.model, tuple(NETWORKS))
    _choice("stem", cfg.stem, STEMS)
    _check(cfg.lr_later is None or cfg.lr_later > 0, f"lr_later must be > 0, got {cfg.lr_later}")
    for name in (
        "tasks",
        "epochs",
        "batch_size",
        "test_batch_size",
        "timesteps",
        "hidden",
        "width",
    ):
        _check(getattr(cfg, name) >= 1, f"{name} must be >= 1, got {getattr(cfg, name)}")
    if max_tasks is not None:
        _check(cfg.tasks <= max_tasks, f"tasks must be <= {max_tasks} for {cfg.benchmark}")
    _check(cfg.lr > 0, f"lr must be > 0, got {cfg.lr}")
    _check(cfg.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {cfg.checkpoint_every}")
    _check(cfg.momentum >= 0 and cfg.weight_decay >= 0, "momentum and weight_decay must be >= 0")
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("scheduler", cfg.scheduler, SCHEDULERS)
    _check(cfg.step_size >= 1 and cfg.gamma > 0, "step_size must be >= 1 and gamma > 0")
    _check(0 <= cfg.warmup < cfg.t_max, "warmup must be >= 0 and < t_max")
    _check(
        cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"),
        f"device must be auto, cpu or cuda, got {cfg.device!r}",
    )
    _choice("feedback", cfg.feedback, FEEDBACK_RULES)
    _choice("precision", cfg.precision, tuple(PRECISIONS))
    _check(0.0 <= cfg.validation < 1.0, f"validation must be in [0, 1), got {cfg.validation}")
    _check(
        cfg.diagnostics_samples >= 0,
        f"diagnostics_samples must be >= 0, got {cfg.diagnostics_samples}",
    )
    for name in ("train_limit", "test_limit"):
        v = getattr(cfg, name)
        _check(v is None or v >= 1, f"{name} must be >= 1 or none, got {v}")
    n = cfg.neuron
    _check(
        n.vth > 0 and n.vth_bound > 0 and n.tau > 0 and n.dt > 0 and n.alpha > 0,
        "neuron.vth, vth_bound, tau, dt and alpha must be > 0",
    )
    h = cfg.hlop
    _check(
        h.iterations >= 0 and h.start_epochs >= 0, "hlop.iterations and start_epochs must be >= 0"
    )
    _choice("hlop.hebbian_on", h.hebbian_on, HEBBIAN_SOURCES)
    _choice("hlop.hebbian_stride", h.hebbian_stride, HEBBIAN_STRIDES)
    _choice("hlop.proj_type", h.proj_type, PROJ_TYPES)
    _choice("hlop.precision", h.precision, ("auto", *PRECISIONS))
    _check(
        not (h.spiking and h.proj_type == "weight"),
        "spiking lateral neurons (hlop.spiking, --lateral-spiking) quantise activity rows, "
        "which only the input projection has: use hlop.proj_type=input (--proj-type input)",
    )
    _check(h.spike_scale > 0 and h.spike_steps >= 1, "hlop.spike_scale and spike_steps must be > 0")
    _check(all(lr > 0 for lr in h.lrs), f"hlop.lrs must all be > 0, got {h.lrs}")
    if cfg.method != "hlop":
        return  # the size schedule is HLOP's alone
    _check(
        len(h.sizes) >= cfg.tasks,
        f"hlop.sizes lists {len(h.sizes)} tasks but the run has {cfg.tasks}: one list per task",
    )
    for k, sizes in enumerate(h.sizes[: cfg.tasks]):
        _check(all(s >= 0 for s in sizes), f"hlop.sizes[{k}] must be >= 0, got {sizes}")
        if layer_dims is not None:
            _check(
                len(sizes) == len(layer_dims),
                f"hlop.sizes[{k}] needs {len(layer_dims)} values (one per circuit), got {sizes}",
            )
            for s, d in zip(sizes, layer_dims, strict=True):
                _check(
                    s <= d, f"hlop.sizes[{k}]: block of {s} rows above the layer's dimension {d}"
                )
