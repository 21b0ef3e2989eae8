"""Errors raised by the data layer."""

from __future__ import annotations


class DataError(Exception):
    """A dataset file is missing, corrupt or malformed.

    The message is meant for the user: it says what is wrong, which file is affected and how
    to fix it.
    """
