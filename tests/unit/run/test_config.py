"""Configuration: value coercion, preset round trips, every CLI flag reaching its key."""

import json
from dataclasses import dataclass, replace

import pytest

from hlop.core.choices import TRAINING_RULES
from hlop.core.settings import Settings
from hlop.loop.state import Plugin
from hlop.methods import ADDONS, METHODS, Method
from hlop.models.external import is_factory_reference
from hlop.run.build import method_plugins
from hlop.run.config import Config, ConfigError, apply_overrides, key_type, keys, validate
from hlop.run.presets import BENCHMARKS, for_any_model, preset
from hlop.spiking.training import RULES
from hlop.tools.cli import TRAIN_FLAGS, _parser, resolve_config


def get(cfg, key):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(
    "item, key, expected, tp",
    [
        ("epochs=3", "epochs", 3, int),
        ("epochs=3.0", "epochs", 3, int),  # an integral float is an int
        ("lr=0.5", "lr", 0.5, float),
        ("lr=2", "lr", 2.0, float),  # an int is a float
        ("fast=false", "fast", False, bool),
        ("fast=True", "fast", True, bool),
        ("fast=0", "fast", False, bool),
        ("hlop.lrs=[1,2]", "hlop.lrs", [1.0, 2.0], list),
        ("hlop.sizes=[[1,2],[3,4]]", "hlop.sizes", [[1, 2], [3, 4]], list),
        ("lr_later=none", "lr_later", None, type(None)),
        ("lr_later=0.25", "lr_later", 0.25, float),
        ("train_limit=None", "train_limit", None, type(None)),
        ("shared_head=true", "shared_head", True, bool),
        ("device=cpu", "device", "cpu", str),
        ("data_dir=null", "data_dir", None, type(None)),
    ],
)
def test_set_strings_are_coerced_to_the_key_type(item, key, expected, tp):
    cfg = apply_overrides(Config(), [item])
    value = get(cfg, key)
    assert value == expected and type(value) is tp
    if tp is list:
        inner = value[0][0] if isinstance(value[0], list) else value[0]
        assert type(inner) is (int if key == "hlop.sizes" else float)


@pytest.mark.parametrize(
    "item, message",
    [
        ("epochs=0.5", "epochs: expected int, got 0.5"),
        ("epochs=true", "epochs: expected int, got True"),
        ("epochs=two", "epochs: cannot read 'two' as int"),
        ("lr=abc", "lr: cannot read 'abc' as float"),
        ("lr=[1]", "lr: expected float, got [1]"),
        ("fast=yes", "fast: cannot read 'yes' as bool"),
        ("fast=2", "fast: expected bool, got 2"),
        ("hlop.lrs=abc", "hlop.lrs: cannot read 'abc' as list"),
        ("hlop.sizes=[[1.5]]", "hlop.sizes: expected int, got 1.5"),
        ("device=3", None),  # a string key takes any string: accepted as "3"
    ],
)
def test_wrong_types_are_refused_naming_the_key(item, message):
    cfg = Config()
    if message is None:
        assert apply_overrides(cfg, [item]).device == "3"
        return
    before = cfg.to_dict()
    with pytest.raises(ConfigError) as e:
        apply_overrides(cfg, [item])
    assert message in str(e.value)
    assert "unknown configuration key" not in str(e.value)
    assert cfg.to_dict() == before


def test_unknown_key_and_section():
    with pytest.raises(ConfigError, match="unknown configuration key 'hlop.nope'"):
        apply_overrides(Config(), ["hlop.nope=1"])
    with pytest.raises(ConfigError, match="hlop is a section; set one of its keys, e.g. hlop.lrs"):
        apply_overrides(Config(), ["hlop=1"])


def test_key_type():
    assert key_type("epochs") is int
    assert key_type("lr") is float
    assert key_type("neuron.train_vth") is bool
    assert key_type("hlop.sizes") == list[list[int]] | str
    assert key_type("hlop.lrs") == list[float]
    assert key_type("lr_later") == float | None
    assert key_type("data_dir") == str | None


@pytest.mark.parametrize("training", list(TRAINING_RULES))
@pytest.mark.parametrize("benchmark", list(BENCHMARKS))
def test_every_preset_round_trips(benchmark, training):
    cfg = preset(benchmark, training)
    assert Config.from_dict(cfg.to_dict()) == cfg
    # through config.json (JSON text), as a checkpoint's config is read back
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert Config.from_dict(cfg.to_dict()) != Config()  # a preset is not the defaults
    validate(cfg)


# a valid value for each flag that differs from the pmnist-subset (dsr) preset's value
FLAG_VALUES = {
    "--data-dir": ("/some/data", "/some/data"),
    "--method": ("baseline", "baseline"),
    "--training": ("bptt", "bptt"),
    "--epochs": ("3", 3),
    "--tasks": ("3", 3),
    "--batch-size": ("7", 7),
    "--lr": ("0.25", 0.25),
    "--timesteps": ("3", 3),
    "--precision": ("bf16", "bf16"),
    "--device": ("cpu", "cpu"),
    "--seed": ("7", 7),
    "--proj-type": ("weight", "weight"),
    "--feedback": ("sign-symmetric", "sign-symmetric"),
    "--lateral-scale": ("0.25", 0.25),
    "--lateral-timesteps": ("3", 3),
    "--hlop-on": ("spikes", "spikes"),
    "--hlop-start-epochs": ("3", 3),
    "--hlop-iterations": ("3", 3),
    "--checkpoint-every": ("3", 3),
    "--model": ("nets.py:cnn", "nets.py:cnn"),
}


@pytest.mark.parametrize("flag", TRAIN_FLAGS, ids=lambda f: f.flag)
def test_every_cli_flag_reaches_its_key(flag):
    default = preset("pmnist-subset")
    argv = ["train", flag.flag]
    if flag.switch:
        expected = True
        if flag.flag == "--online-update":  # valid with OTTT only
            argv += ["--training", "ottt"]
    else:
        value, expected = FLAG_VALUES[flag.flag]
        argv.append(value)
        if flag.choices is not None:
            assert value in flag.choices
    assert get(default, flag.key) != expected  # the flag must change something
    notes = []
    cfg = resolve_config(_parser().parse_args(argv), log=notes.append)
    assert get(cfg, flag.key) == expected
    assert type(get(cfg, flag.key)) is type(expected)
    assert notes == []
    # nothing else changed (the reference is the preset of the resolved training method,
    # for a network of one's own with the defaults for any network)
    reference = preset("pmnist-subset", cfg.training)
    if flag.flag == "--model" and is_factory_reference(expected):
        for_any_model(reference)
    changed = {
        k
        for k, v in _flat(cfg.to_dict()).items()
        if _flat(reference.to_dict())[k] != v and k != flag.key
    }
    assert changed == set()


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_training_flag_takes_the_methods_preset():
    cfg = resolve_config(_parser().parse_args(["train", "--training", "ottt"]))
    assert (cfg.training, cfg.timesteps, cfg.hlop.hebbian_on) == ("ottt", 6, "spikes")
    cfg = resolve_config(_parser().parse_args(["train", "--training", "ottt", "--timesteps", "4"]))
    assert cfg.timesteps == 4  # flags come after the preset
    cfg = resolve_config(
        _parser().parse_args(["train", "--timesteps", "4", "--set", "timesteps=5"])
    )
    assert cfg.timesteps == 5  # --set comes after the flags


# ---------------------------------------------------------------- sections from the registry
@pytest.mark.parametrize("name", [n for n, m in {**METHODS, **ADDONS}.items() if m.settings])
def test_every_registered_section_is_in_the_tree_and_builds_its_plugin(name):
    entry = {**METHODS, **ADDONS}[name]
    cfg = Config()
    section = getattr(cfg, name)
    assert type(section) is entry.settings
    assert name in cfg.to_dict() and any(k.startswith(f"{name}.") for k in keys(cfg))
    plugin = entry.build(section)
    assert isinstance(plugin, entry.plugin)
    assert plugin.settings == replace(section, enabled=True) if name in ADDONS else section


def test_a_new_registered_method_gets_its_section(monkeypatch):
    @dataclass
    class KSettings(Settings):
        k: int = 3

        def check(self) -> None:
            if self.k < 0:
                raise ConfigError(f"knob.k must be >= 0, got {self.k}")

    class Knob(Plugin):
        name = "knob"

        def __init__(self, k: int = 3) -> None:
            self.settings = KSettings(k)

    monkeypatch.setitem(METHODS, "knob", Method(Knob, KSettings))
    cfg = apply_overrides(Config(), ["method=knob", "knob.k=7"])
    assert cfg.knob.k == 7 and cfg.to_dict()["knob"] == {"k": 7}
    assert method_plugins(cfg)[0].settings.k == 7
    with pytest.raises(ConfigError, match="knob.k must be >= 0"):
        validate(apply_overrides(Config(), ["knob.k=-1"]))
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_training_rules_are_the_listed_choices():
    assert tuple(RULES) == TRAINING_RULES


def test_one_value_is_a_one_element_list_and_unions_take_the_first_type_that_reads():
    cfg = apply_overrides(Config(), ["hlop.lrs=0.1", "gpm.thresholds=0.9"])
    assert cfg.hlop.lrs == [0.1] and cfg.gpm.thresholds == [0.9]
    assert Config.from_dict({"gpm": {"thresholds": 0.95}}).gpm.thresholds == [0.95]
    assert apply_overrides(Config(), ["lr_later=none"]).lr_later is None
