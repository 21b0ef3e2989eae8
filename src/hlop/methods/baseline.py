"""Baseline: fine-tuning in the same loop, with no projection and no lateral learning."""

from __future__ import annotations

from hlop.loop.state import Plugin


class Baseline(Plugin):
    """Plain sequential training (every event left as is)."""

    name = "baseline"
