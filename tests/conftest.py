"""Fixtures shared by every test.  The tests mirror the package (``unit/<sub-package>``,
``integration``, ``pinned``); what several tests use lives in ``support/`` (``helpers``,
``formats``, the scripts run as processes), which this file puts on the import path."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))


def pytest_configure(config):
    """Under pytest-xdist (``-n N``), each of the N worker processes gets its share of the
    cores as torch threads: N processes of the full count would oversubscribe them.  Tests
    that need a thread count (the pinned matrices: their table's) set it themselves."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, torch.get_num_threads() // int(workers)))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tests may change torch's thread count; every test leaves it as it found it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """The pinned trainings, the longest tests (about 100 and 70 s), first: under ``-n 2``
    they start at once in the first worker while the other runs the short tests, instead of
    being left for the end (when one worker would run them with the other idle)."""
    items.sort(key=lambda item: item.path.name != "test_pinned.py")
