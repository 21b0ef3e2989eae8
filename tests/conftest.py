"""Fixtures shared by every test (helpers live in helpers.py)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tests may change torch's thread count; every test leaves it as it found it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
