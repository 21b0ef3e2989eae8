"""Settings as small dataclasses that check their own values.

A part of hlop that takes settings (a method, the neurons, the run itself) declares them as
a dataclass deriving from :class:`Settings` next to the code that uses them, and writes
:meth:`Settings.check`.  The check runs when the settings are built, and again when a run's
whole configuration is validated (``--set`` changes values after construction).  This
module imports nothing of hlop but its errors.
"""

from __future__ import annotations

from collections.abc import Sequence

from hlop.errors import ConfigError


class Settings:
    """Base of the settings dataclasses: :meth:`check` runs after ``__init__``."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`~hlop.errors.ConfigError` for a value out of range (by its key)."""


def require(ok: bool, message: str) -> None:
    """Raise :class:`~hlop.errors.ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def require_choice(key: str, value: object, choices: Sequence[str]) -> None:
    """Raise :class:`~hlop.errors.ConfigError` unless ``value`` is one of ``choices``."""
    require(value in choices, f"{key} must be one of {', '.join(choices)}; got {value!r}")
