"""2D convolutional encoder / decoder for small images (digits 8x8 -> a 2x2 or 4x4 latent grid).

Shapes: images ``(B, C, H, W)`` -> encoder output ``(B, out_channels, H / hop, W / hop)`` with
``hop = prod(strides)``; the decoder maps ``(B, latent_dim, h, w)`` back to ``(B, C, h * hop, w * hop)``.

Layout (one stage per entry of ``channels`` / ``strides``), in the manner of the Stable Diffusion
/ LDM autoencoder, scaled down: stem conv, then per stage a residual block and a strided conv
(stride 1 or 2), then norm-SiLU-conv to the latent. The decoder mirrors it with nearest-neighbour
upsampling plus a 3x3 conv (no transposed convs, hence no checkerboard). The residual branches end
in a zero-initialised conv, so every block starts as the identity.

The encoder only says how many channels it emits: the tokenizer decides whether they are a mean
(SigmaVAE, AE: ``latent_dim``) or a mean and a log-variance (VAE: ``2 * latent_dim``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGE_STRIDES = (1, 2)


def _groups(ch: int) -> int:
    """Largest divisor of ``ch`` that is at most 8 (GroupNorm needs ``ch % groups == 0``)."""
    return max(g for g in range(1, 9) if ch % g == 0)


class ResBlock2d(nn.Module):
    """x + conv(SiLU(GN(conv(SiLU(GN(x)))))), second conv zero-initialised. (B, C, H, W) -> same."""

    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
        )
        nn.init.zeros_(self.block[-1].weight)
        nn.init.zeros_(self.block[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _check(channels: Sequence[int], strides: Sequence[int]) -> None:
    if len(channels) != len(strides) or not channels:
        raise ValueError(f"channels {list(channels)} and strides {list(strides)} must be non-empty and of equal length (one entry per stage)")
    bad = [s for s in strides if s not in IMAGE_STRIDES]
    if bad:
        raise ValueError(f"image strides must each be 1 or 2, got {list(strides)}; use more stages for more downsampling")


class ImageEncoder(nn.Module):
    """(B, in_channels, H, W) -> (B, out_channels, H / hop, W / hop)."""

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[int], res_blocks: int = 1):
        super().__init__()
        _check(channels, strides)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        prev = channels[0]
        for ch, s in zip(channels, strides):
            layers += [ResBlock2d(prev) for _ in range(res_blocks)]
            layers.append(nn.Conv2d(prev, ch, 4, stride=2, padding=1) if s == 2 else nn.Conv2d(prev, ch, 3, padding=1))
            prev = ch
        layers += [ResBlock2d(prev) for _ in range(res_blocks)]
        layers += [nn.GroupNorm(_groups(prev), prev), nn.SiLU(), nn.Conv2d(prev, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ImageDecoder(nn.Module):
    """(B, latent_dim, h, w) -> (B, out_channels, h * hop, w * hop); no output activation."""

    def __init__(self, latent_dim: int, out_channels: int, channels: Sequence[int], strides: Sequence[int], res_blocks: int = 1):
        super().__init__()
        _check(channels, strides)
        prev = channels[-1]
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, prev, 3, padding=1)]
        layers += [ResBlock2d(prev) for _ in range(res_blocks)]
        outs = [channels[0], *channels[:-1]]  # stage i maps channels[i] back to channels[i-1]
        for ch_out, s in zip(reversed(outs), reversed(strides)):
            if s == 2:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers.append(nn.Conv2d(prev, ch_out, 3, padding=1))
            layers += [ResBlock2d(ch_out) for _ in range(res_blocks)]
            prev = ch_out
        layers += [nn.GroupNorm(_groups(prev), prev), nn.SiLU(), nn.Conv2d(prev, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
