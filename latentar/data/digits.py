"""sklearn's handwritten digits: 1,797 real 8x8 grey images (values 0..16) with labels 0..9.

Images are scaled to [-1, 1] (``x / 8 - 1``) and shaped ``(N, 1, 8, 8)`` float32; labels are
``(N,)`` int64. The train/test split is fixed forever: stratified 80/20, drawn per class with numpy's legacy
``RandomState(0)`` (whose stream numpy guarantees never to change; sklearn's splitters make no
such promise): for each digit c, permute its indices and send the first ``round(0.2 * n_c)`` to
test. Both splits are returned in ascending order of the original sample index, so every FD and
accuracy number in the project is computed on the same images.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from latentar.data.splits import SPLITS, LabelledImages, check_split, stratified_split  # noqa: F401


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = bunch.images.astype(np.float32)  # (N, 8, 8), 0..16
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(y)
    return x, y, train_idx, test_idx


def split_indices(split: str) -> np.ndarray:
    """Indices into sklearn's 1,797 digits that make up ``split`` (sorted ascending)."""
    check_split(split, "digits")
    x, _, train_idx, test_idx = _raw()
    return {"train": train_idx, "test": test_idx, "all": np.arange(len(x))}[split].copy()


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images (N, 1, 8, 8) float32 in [-1, 1], labels (N,) int64)`` for ``split``.

    ``split``: ``"train"`` (1,438 images), ``"test"`` (359) or ``"all"`` (1,797).
    """
    idx = split_indices(split)
    x, y, _, _ = _raw()
    images = torch.from_numpy(x[idx] / 8.0 - 1.0).unsqueeze(1).contiguous()
    labels = torch.from_numpy(y[idx]).contiguous()
    return images, labels


class DigitsDataset(LabelledImages):
    """Map-style dataset of ``(image (1, 8, 8) float32 in [-1, 1], label int64 scalar)``.

    Construction only validates ``split``; the images are loaded on first use (well under a
    second, nothing downloads). ``images (N, 1, 8, 8)`` and ``labels (N,)`` hold the whole split.
    """

    name = "digits"
    load = staticmethod(load_digits)
