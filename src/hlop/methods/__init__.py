"""Continual-learning methods: each one plugin file, registered here by name.

A method is a :class:`hlop.loop.state.Plugin` that reacts to the loop's events; ``--method
NAME`` picks one, and ``--replay`` adds memory replay to any of them.  A method with
settings declares them as a small :class:`hlop.core.settings.Settings` dataclass next to its
plugin, whose constructor takes them as keyword arguments; the run's configuration then has
a section of that name (``--set NAME.KEY=VALUE``).  To add a method, write its file in this
package and add one entry to :data:`METHODS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hlop.core.settings import Settings
from hlop.loop.state import Plugin
from hlop.methods.baseline import Baseline
from hlop.methods.ewc import EWC, EWCSettings
from hlop.methods.gpm import GPM, GPMSettings
from hlop.methods.hat import HAT, HATSettings
from hlop.methods.hlop import HLOPPlugin, HLOPSettings
from hlop.methods.multitask import Multitask
from hlop.methods.replay import Replay, ReplaySettings


@dataclass(frozen=True)
class Method:
    """A registered plugin and the dataclass of its settings (None: it has none)."""

    plugin: type[Plugin]
    settings: type[Settings] | None = None

    def build(self, section: Settings | None = None) -> Plugin:
        """The plugin, with the values of its configuration section (an add-on's
        ``enabled`` switch is the run's, not the plugin's)."""
        if self.settings is None:
            return self.plugin()
        section = self.settings() if section is None else section
        values = {
            f.name: getattr(section, f.name)
            for f in dataclasses.fields(section)
            if f.name != "enabled"
        }
        return self.plugin(**values)


#: Every method by name (the one list the CLI and the checks use).
METHODS: dict[str, Method] = {
    "hlop": Method(HLOPPlugin, HLOPSettings),
    "baseline": Method(Baseline),
    "ewc": Method(EWC, EWCSettings),
    "gpm": Method(GPM, GPMSettings),
    "hat": Method(HAT, HATSettings),
    "multitask": Method(Multitask),
}

#: Plugins that combine with any method, each switched on by its section's ``enabled``.
ADDONS: dict[str, Method] = {"replay": Method(Replay, ReplaySettings)}


__all__ = [
    "ADDONS",
    "EWC",
    "EWCSettings",
    "GPM",
    "GPMSettings",
    "HAT",
    "HATSettings",
    "METHODS",
    "Baseline",
    "HLOPPlugin",
    "HLOPSettings",
    "Method",
    "Multitask",
    "Replay",
    "ReplaySettings",
]
