"""The errors hlop raises for bad input: one base, :class:`HlopError`.

Each says what is wrong and how to fix it; the command line prints it and exits with 2.
This module imports nothing of hlop, so every other module can use it.
"""

from __future__ import annotations


class HlopError(Exception):
    """Bad input given to hlop (a setting, a file, a shape): the message is for the user."""


class ConfigError(HlopError, ValueError):
    """An unknown key or an out-of-range value, reported before training starts."""


class CheckpointError(HlopError, ValueError):
    """A file that is not a readable hlop checkpoint or resume state, or one that does not
    fit the run it is given to."""


class ReportError(HlopError, ValueError):
    """A path that holds neither an hlop run nor a study of runs, or the plotting library
    missing."""


class CircuitError(HlopError, ValueError):
    """Bad input given to a lateral circuit (the circuit is left unchanged)."""


class DataError(HlopError):
    """A dataset file is missing, corrupt or malformed.

    The message says what is wrong, which file is affected and how to fix it.
    """
