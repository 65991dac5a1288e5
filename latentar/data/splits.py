"""The fixed train/test split and the lazy dataset shared by the labelled image sets (digits, MNIST).

Split: stratified, ``TEST_FRACTION`` of each class to test, drawn per class with numpy's legacy
``RandomState(SPLIT_SEED)`` (a stream numpy guarantees never to change; sklearn's splitters make
no such promise): for each class c, permute its indices and send the first
``round(TEST_FRACTION * n_c)`` to test. Both index arrays are sorted ascending, so every FD and
accuracy number in the project is computed on the same images.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def stratified_split(y: np.ndarray, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)`` of labels ``y``, both sorted (module docstring)."""
    rng = np.random.RandomState(SPLIT_SEED)
    test = []
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        test.append(rng.permutation(members)[: int(round(TEST_FRACTION * len(members)))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)  # sorted
    return train_idx, test_idx


def check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown {name} split {split!r}; expected one of {SPLITS}")



class LabelledImages(Dataset):
    """Map-style dataset of ``(image (1, S, S) float32 in [-1, 1], label int64 scalar)`` over one
    split of ``load(split) -> (images, labels)``; construction only validates ``split``, the data
    is read on first use. ``images (N, 1, S, S)`` and ``labels (N,)`` hold the whole split.
    Subclasses set ``name`` and ``load = staticmethod(<loader>)`` (DigitsDataset, MnistDataset)."""

    name: str
    load: LoadFn

    def __init__(self, split: str = "train"):
        check_split(split, self.name)
        self.split = split
        self._data: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def images(self) -> torch.Tensor:
        return self._load()[0]

    @property
    def labels(self) -> torch.Tensor:
        return self._load()[1]

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            self._data = type(self).load(self.split)
        return self._data

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

