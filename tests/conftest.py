"""Shared test fixtures."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, and say so, on a machine without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked cuda)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine (as
    OMP_NUM_THREADS=1 does under `make test`; this covers a bare `pytest` too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_bench(name: str):
    """Import ``bench/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
