"""Digits: shapes, scaling, and a split that is fixed, disjoint and stratified."""
import hashlib

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sk_load_digits
from torch.utils.data import DataLoader

from latentar.data import DigitsDataset, load_digits
from latentar.data.digits import split_indices

# sha256 of the int64 test indices; changing the split changes every FD number in the project.
TEST_SPLIT_SHA256 = "3530be80b9605f4c4adc46d0ee3006a356c16968a8efcc58f24463bc820d5ef9"


def test_shapes_dtypes_and_scaling_match_sklearn():
    raw = sk_load_digits()
    for split, n in (("train", 1438), ("test", 359), ("all", 1797)):
        x, y = load_digits(split)
        assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert x.min() == -1.0 and x.max() == 1.0
        idx = split_indices(split)
        np.testing.assert_allclose((x[:, 0].numpy() + 1.0) * 8.0, raw.images[idx], atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), raw.target[idx])


def test_split_is_fixed_disjoint_and_stratified():
    tr, te = split_indices("train"), split_indices("test")
    assert hashlib.sha256(te.astype(np.int64).tobytes()).hexdigest() == TEST_SPLIT_SHA256
    assert len(set(tr) & set(te)) == 0
    assert sorted(set(tr) | set(te)) == list(range(1797))
    y = sk_load_digits().target
    for c in range(10):
        n_c = int((y == c).sum())
        assert int((y[te] == c).sum()) == round(0.2 * n_c)


def test_dataset_is_lazy_and_collates():
    ds = DigitsDataset("test")
    assert ds._data is None  # construction reads nothing
    x, y = next(iter(DataLoader(ds, batch_size=16)))
    assert x.shape == (16, 1, 8, 8) and y.shape == (16,)
    assert len(ds) == 359
    with pytest.raises(ValueError, match="unknown digits split"):
        DigitsDataset("valid")
