"""A shuffling sampler that can start mid-epoch, so resumed training sees exactly the same batches.

Every rank draws the same permutation (seeded by ``seed + epoch``) and takes ``perm[rank::world]``,
as torch's DistributedSampler does; with per-rank batch b, global batch k is then
``perm[k*b*W:(k+1)*b*W]``, identical to a single process with batch b*W.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        if num_samples < batch_size * world_size:
            raise ValueError(f"dataset has {num_samples} examples, fewer than one global batch "
                             f"({batch_size} x {world_size} ranks); lower batch_size")
        self.num_samples, self.batch_size, self.seed, self.shuffle = num_samples, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)  # drop_last

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start_batch = epoch, batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            perm = torch.randperm(self.num_samples, generator=g)
        else:
            perm = torch.arange(self.num_samples)
        per_rank = self.batches_per_epoch * self.batch_size
        mine = perm[: per_rank * self.world_size][self.rank :: self.world_size]
        return iter(mine[self.start_batch * self.batch_size :].tolist())
