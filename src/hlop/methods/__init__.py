"""Continual-learning methods: each one plugin file, registered here by name.

A method is a :class:`hlop.continual.Plugin` that reacts to the loop's events; ``--method
NAME`` picks one, and ``--replay`` adds memory replay to any of them.  To add a method,
write its plugin in a new file of this package and add one entry to :data:`METHODS`.
"""

from __future__ import annotations

from ..config import Config, ConfigError
from ..continual import Plugin
from .baseline import Baseline
from .ewc import EWC
from .gpm import GPM
from .hat import HAT
from .hlop import HLOP
from .multitask import Multitask
from .replay import Replay

#: Every method by name (the one list the CLI and the checks use); values build the plugin.
METHODS: dict[str, type[Plugin]] = {
    "hlop": HLOP,
    "baseline": Baseline,
    "ewc": EWC,
    "gpm": GPM,
    "hat": HAT,
    "multitask": Multitask,
}


def method_plugins(cfg: Config) -> list[Plugin]:
    """The plugins of a run: its method (``cfg.method``), then replay if enabled."""
    if cfg.method not in METHODS:
        raise ConfigError(
            f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)} (--method)"
        )
    plugins = [METHODS[cfg.method]()]
    if cfg.replay.enabled:
        plugins.append(Replay())
    return plugins


__all__ = [
    "EWC",
    "GPM",
    "HAT",
    "HLOP",
    "METHODS",
    "Baseline",
    "Multitask",
    "Replay",
    "method_plugins",
]
