"""Train an audio tokenizer on random crops of its clips, while the AR model sees whole clips.

A convolutional tokenizer's receptive field is far shorter than a clip and a step's cost grows
linearly with the samples it sees, so training on short windows is the usual economy (EnCodec and
DAC train on ~1 s segments). ``CropTraining(tok, length)`` is the Trainer task: per example a
start s_b ~ U{0, ..., T - length} is drawn from torch's *global* RNG, which the Trainer saves in
its checkpoints, so an interrupted training resumes with exactly the crops it would have drawn,
and the loss is ``tok.loss(x[b, :, s_b : s_b + length])``. Clips no longer than ``length`` are
used whole. The wrapped tokenizer is ``.tokenizer``, trained in place.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from latentar.tokenizers.base import LatentTokenizer, batch_data


def random_crops(x: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, C, length)`` windows of ``x (B, C, T)``, one uniform start per example (global RNG)."""
    B, C, T = x.shape
    if T <= length:
        return x
    start = torch.randint(0, T - length + 1, (B,), device=x.device)
    idx = start[:, None] + torch.arange(length, device=x.device)[None]              # (B, length)
    return x.gather(2, idx[:, None, :].expand(B, C, length))


class CropTraining(nn.Module):
    """Trainer task: ``tokenizer.loss`` on a random ``length``-sample window of each clip (module docstring)."""

    def __init__(self, tokenizer: LatentTokenizer, length: int):
        super().__init__()
        if tokenizer.modality != "audio":
            raise ValueError(f"CropTraining crops audio clips; this tokenizer's modality is {tokenizer.modality!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < tokenizer.hop:
            raise ValueError(f"CropTraining: length must be an int >= the tokenizer's hop ({tokenizer.hop} samples), "
                             f"got {length!r}")
        self.tokenizer, self.length = tokenizer, length

    def training_step(self, batch: Any):
        x = batch_data(batch)
        if x.dim() != 3:
            raise ValueError(f"CropTraining: expected clips (B, C, T), got shape {tuple(x.shape)}")
        return self.tokenizer.loss(random_crops(x, self.length))
