"""1D strided-convolutional encoder / decoder for waveforms, causal or not.

Shapes: audio ``(B, C, T)`` with ``T`` a multiple of ``hop = prod(strides)`` (the tokenizer pads to
that) -> encoder output ``(B, out_channels, T / hop)``; the decoder maps ``(B, latent_dim, T')`` to
``(B, C, T' * hop)``. With the default preset ``strides=(2, 4, 5, 8)`` (hop 320), 16 kHz audio
becomes 50 latent frames per second and 24 kHz becomes 75 Hz; VibeVoice's acoustic tokenizer uses
``(8, 5, 5, 4, 2, 2)`` = 3200x (24 kHz -> 7.5 Hz).

Layout after SEANet / EnCodec and VibeVoice's tokenizer: stem conv, per stage ``res_blocks``
dilated residual units (dilation 1, 3, 9, ...) then a strided conv with kernel ``2 * stride``; the
decoder mirrors it with transposed convs. Normalisation is an RMSNorm over channels at each time
step, so nothing mixes information across time except the convolutions themselves.

Padding (EnCodec's rule): a conv of kernel k, dilation d and stride s gets ``d * (k - 1) + 1 - s``
padding in total, so an input of length ``n * s`` yields exactly ``n`` frames. Causal convs put all
of it on the left (frame t sees only samples before ``(t + 1) * hop``); non-causal convs split it,
the extra sample on the left. A transposed conv of kernel 2s yields ``(n + 1) * s`` samples; the
surplus ``s`` is trimmed on the right (causal) or split (non-causal).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ChannelRMSNorm(nn.Module):
    """RMSNorm over the channel axis of ``(B, C, T)``, per time step (causal-safe)."""

    def __init__(self, ch: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps) * self.weight


class PaddedConv1d(nn.Module):
    """Conv1d whose output has ``ceil(T / stride)`` frames for length T a multiple of stride."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, causal: bool = False):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation)
        total = dilation * (kernel - 1) + 1 - stride
        if total < 0:
            raise ValueError(f"kernel {kernel} is too small for stride {stride}")
        self.pad = (total, 0) if causal else (total - total // 2, total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class PaddedConvTranspose1d(nn.Module):
    """ConvTranspose1d(kernel 2s, stride s) trimmed so ``(B, C, n) -> (B, C', n * s)``."""

    def __init__(self, cin: int, cout: int, stride: int, causal: bool = False):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)
        self.trim = (0, stride) if causal else (stride - stride // 2, stride // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        left, right = self.trim
        return y[..., left: y.shape[-1] - right]


class ResUnit1d(nn.Module):
    """x + conv1(SiLU(norm(conv_k7,dilated(SiLU(norm(x)))))), last conv zero-initialised."""

    def __init__(self, ch: int, dilation: int, causal: bool):
        super().__init__()
        self.block = nn.Sequential(
            ChannelRMSNorm(ch), nn.SiLU(), PaddedConv1d(ch, ch, 7, dilation=dilation, causal=causal),
            ChannelRMSNorm(ch), nn.SiLU(), nn.Conv1d(ch, ch, 1),
        )
        nn.init.zeros_(self.block[-1].weight)
        nn.init.zeros_(self.block[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _check(channels: Sequence[int], strides: Sequence[int]) -> None:
    if len(channels) != len(strides) or not channels:
        raise ValueError(f"channels {list(channels)} and strides {list(strides)} must be non-empty and of equal length (one entry per stage)")
    if any(int(s) < 1 for s in strides):
        raise ValueError(f"audio strides must be positive integers, got {list(strides)}")


def hop_length(strides: Sequence[int]) -> int:
    """Samples per latent frame: the product of the strides."""
    return math.prod(int(s) for s in strides)


class AudioEncoder(nn.Module):
    """(B, in_channels, T) -> (B, out_channels, T / hop); T must be a multiple of hop."""

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[int],
                 res_blocks: int = 1, causal: bool = False):
        super().__init__()
        _check(channels, strides)
        layers: list[nn.Module] = [PaddedConv1d(in_channels, channels[0], 7, causal=causal)]
        prev = channels[0]
        for ch, s in zip(channels, strides):
            layers += [ResUnit1d(prev, 3 ** j, causal) for j in range(res_blocks)]
            layers.append(PaddedConv1d(prev, ch, 2 * s, stride=s, causal=causal) if s > 1 else PaddedConv1d(prev, ch, 3, causal=causal))
            prev = ch
        layers += [ChannelRMSNorm(prev), nn.SiLU(), PaddedConv1d(prev, out_channels, 3, causal=causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AudioDecoder(nn.Module):
    """(B, latent_dim, T') -> (B, out_channels, T' * hop); no output activation."""

    def __init__(self, latent_dim: int, out_channels: int, channels: Sequence[int], strides: Sequence[int],
                 res_blocks: int = 1, causal: bool = False):
        super().__init__()
        _check(channels, strides)
        prev = channels[-1]
        layers: list[nn.Module] = [PaddedConv1d(latent_dim, prev, 7, causal=causal)]
        outs = [channels[0], *channels[:-1]]
        for ch_out, s in zip(reversed(outs), reversed(strides)):
            layers.append(PaddedConvTranspose1d(prev, ch_out, s, causal=causal) if s > 1 else PaddedConv1d(prev, ch_out, 3, causal=causal))
            layers += [ResUnit1d(ch_out, 3 ** j, causal) for j in range(res_blocks)]
            prev = ch_out
        layers += [ChannelRMSNorm(prev), nn.SiLU(), PaddedConv1d(prev, out_channels, 7, causal=causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
