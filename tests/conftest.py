"""Fixtures shared by every test (helpers live in helpers.py)."""

import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``-n N``), each of the N worker processes gets its share of the
    cores as torch threads: N processes of the full count would oversubscribe them.  Tests
    that need a thread count (the pinned matrices: 2) set it themselves."""
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
    """The pinned trainings, the longest tests, first: under ``-n 2`` (pytest-xdist's load
    scheduling hands out the first tests one to each worker) they run side by side from
    the start, and the short tests fill in around them."""
    items.sort(key=lambda item: item.path.name != "test_pinned.py")
