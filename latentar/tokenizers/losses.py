"""Reconstruction losses for the tokenizers: pointwise L1 / L2, and a multi-resolution log-mel term.

Multi-resolution mel loss (as in the HiFi-GAN / EnCodec / DAC family of audio codecs):

    L_mel = (1 / R) sum_r  mean | log(mel_r(x_hat) + eps) - log(mel_r(x) + eps) |

over R STFT resolutions (``n_fft`` in ``n_ffts``, hop ``n_fft / 4``, Hann window), mel filter banks
from ``torchaudio.transforms.MelSpectrogram``. It is computed in float32 outside autocast (an STFT
in bf16 is neither supported nor accurate). ``pad_mode="constant"`` lets clips shorter than a
window through (reflect padding would reject them).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn


class MultiResolutionMelLoss(nn.Module):
    """``forward(x_hat, x)`` with ``(B, C, T)`` waveforms -> scalar mean log-mel L1 over resolutions."""

    def __init__(self, sample_rate: int = 16000, n_ffts: Sequence[int] = (256, 512, 1024),
                 n_mels: Sequence[int] | None = None, eps: float = 1e-5):
        super().__init__()
        n_ffts = [int(n) for n in n_ffts]
        if not n_ffts:
            raise ValueError("MultiResolutionMelLoss needs at least one n_fft")
        # Few mels for small windows, so that no triangular filter falls between two FFT bins.
        n_mels = [min(80, n // 8) for n in n_ffts] if n_mels is None else [int(m) for m in n_mels]
        if len(n_mels) != len(n_ffts):
            raise ValueError(f"n_mels {n_mels} needs one entry per n_fft {n_ffts}")
        self.eps = eps
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=n, hop_length=n // 4, n_mels=m, pad_mode="constant", power=1.0
            )
            for n, m in zip(n_ffts, n_mels)
        )

    def log_mels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, T) -> list over resolutions of log-mel magnitudes (B, C, n_mels, frames), float32."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            return [torch.log(mel(x) + self.eps) for mel in self.mels]

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        terms = [F.l1_loss(a, b) for a, b in zip(self.log_mels(x_hat), self.log_mels(x))]
        return torch.stack(terms).mean()


def pointwise_loss(kind: str, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean L2 (``"mse"``) or L1 (``"l1"``) over every element, computed in float32."""
    x_hat, x = x_hat.float(), x.float()
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "l1":
        return F.l1_loss(x_hat, x)
    raise ValueError(f"unknown reconstruction loss {kind!r}; expected 'mse' or 'l1'")
