"""1D strided-convolutional encoder / decoder for waveforms, causal or not.

Shapes: audio ``(B, C, T)`` with ``T`` a multiple of ``hop = prod(strides)`` (the tokenizer pads to
that) -> encoder output ``(B, out_channels, T / hop)``; the decoder maps ``(B, latent_dim, T')`` to
``(B, C, T' * hop)``. With the default preset ``strides=(4, 4, 4, 4)`` (hop 256), 16 kHz audio
becomes 62.5 latent frames per second (24 kHz: 93.75 Hz); VibeVoice's acoustic tokenizer uses
``(8, 5, 5, 4, 2, 2)`` = 3200x (24 kHz -> 7.5 Hz).

Layout after SEANet / EnCodec and VibeVoice's tokenizer: stem conv, per stage ``res_blocks``
dilated residual units (dilation 1, 3, 9, ...) then a strided conv with kernel ``2 * stride``; the
decoder mirrors it with transposed convs. Normalisation is an RMSNorm over channels at each time
step, so nothing mixes information across time except the convolutions themselves.

**Patched first stage** (``patch=True``, the default): the first stride ``s0`` is a reshape, not a
conv. The encoder folds every ``s0`` consecutive samples into channels, ``(B, C, T) -> (B, C*s0,
T/s0)`` (space-to-depth, as the patch embedding of a ViT), and its stem conv runs at ``T/s0``; the
decoder's last conv emits ``C*s0`` channels that unfold back to ``(B, C, T)``. Nothing then runs at
the full sample rate, where SEANet's first stage (``patch=False``: stem, residual units and a
strided conv over every sample) spent ~70% of a training step on one CPU core (profile in
``bench/audio_tokenizer.py``): element-wise norm / SiLU passes over ``(B, ch0, T)`` tensors are
memory-bound. A patch of ``s0`` samples is a learned linear analysis filterbank (kernel 7 over
patches = ``7 * s0`` samples), like the framing of a learned-frontend codec. Causality holds: patch
``j`` holds samples ``j*s0 .. j*s0 + s0 - 1``.

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
        total = dilation * (kernel - 1) + 1 - stride
        if total < 0:
            raise ValueError(f"kernel {kernel} is too small for stride {stride}")
        self.pad = (total, 0) if causal else (total - total // 2, total // 2)
        # Symmetric padding goes into the conv itself (no padded copy of the input).
        inner = self.pad[0] if self.pad[0] == self.pad[1] else 0
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation, padding=inner)
        if inner:
            self.pad = (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad) if self.pad[0] or self.pad[1] else x)


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


def patchify(x: torch.Tensor, s: int) -> torch.Tensor:
    """Space-to-depth: ``(B, C, T) -> (B, C*s, T/s)``, channel ``c*s + k`` = sample ``t*s + k`` of channel c."""
    B, C, T = x.shape
    if T % s:
        raise ValueError(f"length {T} is not a multiple of the patch size {s}")
    return x.reshape(B, C, T // s, s).transpose(2, 3).reshape(B, C * s, T // s)


def unpatchify(x: torch.Tensor, s: int) -> torch.Tensor:
    """Depth-to-space, the inverse of ``patchify``: ``(B, C*s, n) -> (B, C, n*s)``."""
    B, Cs, n = x.shape
    return x.reshape(B, Cs // s, s, n).transpose(2, 3).reshape(B, Cs // s, n * s)


class AudioEncoder(nn.Module):
    """(B, in_channels, T) -> (B, out_channels, T / hop); T must be a multiple of hop.

    ``patch=True`` folds the first stride into channels (``patchify``) instead of running a stem,
    residual units and a strided conv at the full sample rate (``patch=False``, SEANet's layout).
    """

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[int],
                 res_blocks: int = 1, causal: bool = False, patch: bool = True):
        super().__init__()
        _check(channels, strides)
        self.patch = int(strides[0]) if patch else 1
        stages = list(zip(channels, strides))
        if patch:  # stage 0 becomes the reshape; its output width channels[0] is the stem's
            stages = stages[1:]
        layers: list[nn.Module] = [PaddedConv1d(in_channels * self.patch, channels[0], 7, causal=causal)]
        prev = channels[0]
        for ch, s in stages:
            layers += [ResUnit1d(prev, 3 ** j, causal) for j in range(res_blocks)]
            layers.append(PaddedConv1d(prev, ch, 2 * s, stride=s, causal=causal) if s > 1 else PaddedConv1d(prev, ch, 3, causal=causal))
            prev = ch
        if patch and not stages:  # one stage only: its residual units run on the patches
            layers += [ResUnit1d(prev, 3 ** j, causal) for j in range(res_blocks)]
        layers += [ChannelRMSNorm(prev), nn.SiLU(), PaddedConv1d(prev, out_channels, 3, causal=causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(patchify(x, self.patch) if self.patch > 1 else x)


class AudioDecoder(nn.Module):
    """(B, latent_dim, T') -> (B, out_channels, T' * hop); no output activation.

    ``patch=True`` (mirror of the encoder's): the last conv emits ``out_channels * strides[0]``
    channels at ``T / strides[0]`` and ``unpatchify`` unfolds them, instead of a transposed conv,
    residual units and a conv at the full sample rate.
    """

    def __init__(self, latent_dim: int, out_channels: int, channels: Sequence[int], strides: Sequence[int],
                 res_blocks: int = 1, causal: bool = False, patch: bool = True):
        super().__init__()
        _check(channels, strides)
        self.patch = int(strides[0]) if patch else 1
        prev = channels[-1]
        layers: list[nn.Module] = [PaddedConv1d(latent_dim, prev, 7, causal=causal)]
        outs = [channels[0], *channels[:-1]]
        stages = list(zip(reversed(outs), reversed(strides)))
        if patch:
            stages = stages[:-1]
        for ch_out, s in stages:
            layers.append(PaddedConvTranspose1d(prev, ch_out, s, causal=causal) if s > 1 else PaddedConv1d(prev, ch_out, 3, causal=causal))
            layers += [ResUnit1d(ch_out, 3 ** j, causal) for j in range(res_blocks)]
            prev = ch_out
        if patch and not stages:  # one stage only: its residual units run on the patches
            layers += [ResUnit1d(prev, 3 ** j, causal) for j in range(res_blocks)]
        layers += [ChannelRMSNorm(prev), nn.SiLU(), PaddedConv1d(prev, out_channels * self.patch, 7, causal=causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = self.net(z)
        return unpatchify(y, self.patch) if self.patch > 1 else y
