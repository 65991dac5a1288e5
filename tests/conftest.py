"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine (as
    OMP_NUM_THREADS=1 does under `make test`; this covers a bare `pytest` too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
