"""Run configuration: a tree of settings dataclasses, dotted-key overrides, validation.

A run is fully described by its resolved :class:`Config`, written as ``config.json`` next
to its results.  :func:`hlop.run.presets.preset` gives the paper's settings for a benchmark;
``apply_overrides(cfg, ["hlop.iterations=3", ...])`` changes any value by its dotted key.

The tree is assembled from the parts' own settings: the run's own values and the neurons'
are declared here; each method's section is the settings dataclass it registers in
:data:`hlop.methods.METHODS` (or :data:`~hlop.methods.ADDONS`), under its name.  Each
settings class checks its own values (:class:`hlop.core.settings.Settings`); :func:`validate`
runs every check of the tree.  Checks that need the built network (circuit counts, the
training rule) are the methods' :meth:`~hlop.loop.state.Plugin.check`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hlop.core.choices import (
    FEEDBACK_RULES,
    PRECISIONS,
    STEMS,
    TRAINING_RULES,
)
from hlop.core.settings import Settings, require, require_choice
from hlop.errors import ConfigError
from hlop.layers.unprotected import CHOICES as UNPROTECTED_CHOICES
from hlop.loop.optimisation import Optimisation
from hlop.loop.state import LoopSettings
from hlop.methods import ADDONS, METHODS


@dataclass
class NeuronSettings(Settings):
    """DSR's neurons (:class:`hlop.spiking.neurons.DSRNeuron`)."""

    leaky: bool = True  # LIF (True) or IF (False)
    vth: float = 0.3
    vth_bound: float = 5e-4
    tau: float = 1.0
    dt: float = 0.05
    alpha: float = 0.3
    train_vth: bool = True

    def check(self) -> None:
        require(
            self.vth > 0 and self.vth_bound > 0 and self.tau > 0 and self.dt > 0 and self.alpha > 0,
            "neuron.vth, vth_bound, tau, dt and alpha must be > 0",
        )


@dataclass
class SurrogateSettings(Settings):
    """LIF of BPTT / OTTT training (:class:`hlop.spiking.surrogate.SurrogateLIF`)."""

    tau: float = 2.0
    vth: float = 1.0
    alpha: float = 4.0  # sigmoid(alpha x) surrogate

    def check(self) -> None:
        require(
            self.tau > 0 and self.vth > 0 and self.alpha > 0,
            "surrogate.tau, vth and alpha must be > 0",
        )


def method_sections() -> dict[str, type[Settings]]:
    """The settings class of every registered method and add-on that has settings, by the
    name of its section."""
    registered = {**METHODS, **ADDONS}
    return {name: m.settings for name, m in registered.items() if m.settings is not None}


@dataclass
class Config(Settings):
    """The run's settings; ``cfg.NAME`` is also the section of method or add-on NAME."""

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
    # fuse the DSR spike loops with torch.compile (for GPUs; needs a C++ compiler on CPU)
    compile: bool = False
    # dtype of the network's weight products: fp32, or bf16 (with the circuits' old-block
    # products, hlop.precision=auto); membranes, H, the loss and products with projected
    # rows stay fp32 (docs/performance.md, "bf16")
    precision: str = "fp32"
    model: str = "mlp"  # a name of hlop.models.base.NETWORKS: mlp, cnn or resnet18
    hidden: int = 800  # mlp
    width: int = 20  # resnet18 base width
    stem: str = "3x3"  # resnet18 stem: 3x3 stride 1, or 5x5 stride 2 (miniImageNet)
    shared_head: bool | None = None  # None: as the benchmark (shared for pmnist, domain)
    # a network of your own (model FILE.py:FUNCTION): what no method protects (norms'
    # parameters and statistics, learnable neuron parameters; hlop.layers.unprotected),
    # for every method alike: "fix" after the first task (as the built-in networks), "train"
    unprotected: str = "fix"
    train_limit: int | None = None  # samples per task kept (class-stratified); None: all
    # fraction of each task's training data held out for validation; > 0: accuracies are
    # measured on it instead of the test set (hyperparameter searches never see test data)
    validation: float = 0.0
    test_limit: int | None = None
    data_dir: str | None = None
    # epochs between the saves of the resume state (state.pt) inside a task; 0: only after
    # each task.  1: an interruption loses at most one epoch
    checkpoint_every: int = 1
    # training samples of each finished task on which the circuits are measured (HLOP, GPM:
    # results.json "circuit_diagnostics"); 0: not measured
    diagnostics_samples: int = 256
    tensorboard: bool = False  # TensorBoard event files in OUT_DIR/tb (hlop.run.tensorboard_log)
    neuron: NeuronSettings = field(default_factory=NeuronSettings)
    surrogate: SurrogateSettings = field(default_factory=SurrogateSettings)
    # the methods' and add-ons' sections (method_sections), reached as cfg.NAME
    _sections: dict[str, Settings] = field(
        default_factory=lambda: {n: cls() for n, cls in method_sections().items()}, repr=False
    )

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("_sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no setting or section {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        sections = self.__dict__.get("_sections")
        if sections is not None and name in sections:
            sections[name] = value
        else:
            super().__setattr__(name, value)

    def sections(self) -> dict[str, Any]:
        """Every section of the tree by name: the neurons', then the methods' and add-ons'."""
        return {"neuron": self.neuron, "surrogate": self.surrogate, **self._sections}

    def check(self) -> None:
        """The run's own values, then every section's :meth:`~hlop.core.settings.Settings.check`."""
        require_choice("training", self.training, TRAINING_RULES)
        require(
            not self.online_update or self.training == "ottt",
            "online_update (--online-update) is OTTT's: use --training ottt or drop it",
        )
        require_choice("stem", self.stem, STEMS)
        require_choice("unprotected", self.unprotected, UNPROTECTED_CHOICES)
        for name in ("timesteps", "hidden", "width"):
            value = getattr(self, name)
            require(value >= 1, f"{name} must be >= 1, got {value}")
        require(
            self.checkpoint_every >= 0,
            f"checkpoint_every must be >= 0, got {self.checkpoint_every}",
        )
        self.loop_settings()  # the loop's settings and its optimisation check their keys
        self.optimisation()
        require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            f"device must be auto, cpu or cuda, got {self.device!r}",
        )
        require_choice("feedback", self.feedback, FEEDBACK_RULES)
        require_choice("precision", self.precision, tuple(PRECISIONS))
        require(
            0.0 <= self.validation < 1.0, f"validation must be in [0, 1), got {self.validation}"
        )
        require(
            self.diagnostics_samples >= 0,
            f"diagnostics_samples must be >= 0, got {self.diagnostics_samples}",
        )
        for name in ("train_limit", "test_limit"):
            v = getattr(self, name)
            require(v is None or v >= 1, f"{name} must be >= 1 or none, got {v}")
        for section in self.sections().values():
            section.check()

    def loop_settings(self) -> LoopSettings:
        """The loop's own settings (its keys of this tree)."""
        return LoopSettings(**_values(self, LoopSettings))

    def optimisation(self) -> Optimisation:
        """The optimiser and schedule of every step (their keys of this tree)."""
        return Optimisation(**_values(self, Optimisation))

    def to_dict(self) -> dict[str, Any]:
        """The tree as plain values (config.json): the run's own keys, then each section."""
        return {
            k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v)
            for k, v in _children(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        cfg = cls()
        for key, value in _flatten(d):
            _set(cfg, key, value)
        return cfg


def _values(cfg: Config, component: type) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(component)}


def validate(cfg: Config) -> None:
    """Run every check of the tree (values set after construction, e.g. by ``--set``, are
    checked here); raises :class:`~hlop.errors.ConfigError` naming the key."""
    cfg.check()


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


def _children(obj: Any) -> dict[str, Any]:
    """The settings and sections directly below ``obj`` (a dataclass of the tree)."""
    if isinstance(obj, Config):
        own = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        del own["_sections"]
        return {**own, **obj._sections}
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _field_type(obj: Any, name: str) -> Any:
    if isinstance(obj, Config) and name in obj._sections:
        return type(obj._sections[name])
    return typing.get_type_hints(type(obj))[name]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (a JSON value, or a word of ``--set``) as type ``tp``: a union takes the first
    of its types that reads it; a list of numbers or words also takes one of them (the
    one-element list: ``gpm.samples=125`` is ``[125]``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if none and len(args) < len(typing.get_args(tp)):
            return None
        first: ConfigError | None = None
        for arg in args[:-1]:
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                first = first or e
        if first is not None and args[-1] is str and _is_json(value):
            raise first  # a list or number of the wrong kind, not a word
        return _coerce(value, args[-1], key)
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
        (inner,) = typing.get_args(tp)
        if isinstance(value, list | tuple):
            return [_coerce(v, inner, key) for v in value]
        if inner in (bool, int, float, str):
            return [_coerce(value, inner, key)]
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _is_json(value: Any) -> bool:
    """Whether ``value`` is a JSON value other than a bare word (a list, a number...)."""
    if not isinstance(value, str):
        return True
    try:
        json.loads(value)
    except json.JSONDecodeError:
        return False
    return True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _set(cfg: Config, key: str, value: Any) -> None:
    obj: Any = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or part not in _children(obj):
            raise ConfigError(_unknown(key))
        obj = _children(obj)[part]
    name = parts[-1]
    if not dataclasses.is_dataclass(obj) or name not in _children(obj):
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
