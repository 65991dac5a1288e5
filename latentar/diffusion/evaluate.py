"""Quality against the number of sampling steps: digits FD of a trained diffusion model.

For each step count the model draws ``num_samples`` samples from the same seeded x_T (so step
counts, and models sharing a seed, are compared on the same starting noise), maps them to images
(``DigitsSpace.to_images``) and scores ``digits_fd`` against the fixed digits *test* split (359
images). Two reference points put the numbers on a scale, at the same sample count:

* ``noise``: N(0, I) images (what an untrained sampler returns) against the test split;
* ``data``: ``num_samples`` real train images against the test split (the floor a perfect
  generator would reach with this many samples; FD is biased upwards for small N).
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from latentar.data.digits import load_digits
from latentar.diffusion.digits_space import DigitsSpace
from latentar.diffusion.sampling import check_sampler, check_steps, sample
from latentar.metrics.digits_classifier import digits_fd, load_digits_classifier


def fd_at_steps(model: nn.Module, train_scheduler, space: DigitsSpace, steps: Sequence[int], num_samples: int,
                sampler: str = "ddim", seed: int = 0, eps_scale: float = 1.0, eps_scale_k: float = 0.0,
                batch_size: int = 512, classifier: nn.Module | None = None) -> dict[int, dict[str, float]]:
    """``{num_steps: {"fd": ..., "sample_seconds": ...}}``; samples seeded by ``seed`` (same x_T for every step count)."""
    steps = [check_steps(s, train_scheduler) for s in steps]
    check_sampler(sampler)
    classifier = classifier or load_digits_classifier()
    reference, _ = load_digits("test")
    out = {}
    for s in steps:
        t0 = time.perf_counter()
        x = sample(model, train_scheduler, s, (num_samples, *space.sample_shape), sampler=sampler,
                   generator=torch.Generator().manual_seed(int(seed)), eps_scale=eps_scale,
                   eps_scale_k=eps_scale_k, batch_size=batch_size)
        images = space.to_images(x)
        seconds = time.perf_counter() - t0
        out[s] = {"fd": digits_fd(images, reference, classifier), "sample_seconds": seconds}
    return out


def reference_fds(num_samples: int, seed: int = 0, classifier: nn.Module | None = None) -> dict[str, float]:
    """FD of N(0, I) noise images and of ``num_samples`` real train images, both against the test split."""
    classifier = classifier or load_digits_classifier()
    reference, _ = load_digits("test")
    train, _ = load_digits("train")
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(num_samples, 1, 8, 8, generator=g)
    idx = torch.randperm(len(train), generator=g)[:min(num_samples, len(train))]
    return {"noise": digits_fd(noise, reference, classifier), "data": digits_fd(train[idx], reference, classifier)}
