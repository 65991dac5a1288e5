"""Reconstruction losses for the tokenizers: pointwise L1 / L2, and a multi-resolution log-mel term.

Multi-resolution mel loss (as in the HiFi-GAN / EnCodec / DAC family of audio codecs):

    L_mel = (1 / R) sum_r  mean | log(mel_r(x_hat) + eps) - log(mel_r(x) + eps) |
    mel_r(x) = |STFT_r(x)| @ F_r

over R STFT resolutions (``n_fft`` in ``n_ffts``, hop ``n_fft / 4``, periodic Hann window, frames
centred on ``t * hop`` with ``n_fft / 2`` zeros of padding each side), ``|.|`` the magnitude and
``F_r`` torchaudio's HTK mel filter bank (``melscale_fbanks``, 0 .. sample_rate / 2, no
normalisation): the same numbers as ``torchaudio.transforms.MelSpectrogram(power=1,
pad_mode="constant")``, with the window and filter banks built once as buffers and the target's
log-mels computed under ``no_grad``. Where the time goes (``bench/audio_tokenizer.py``, one CPU
core): the FFTs and the complex ``abs`` with their backward; ``abs`` on the complex spectrum beat
``sqrt(re^2 + im^2)`` on its real view (1.2x) and ``vector_norm`` (1.6x), so it stays. The cost is
about linear in the number of resolutions.

Computed in float32 outside autocast (an STFT in bf16 is neither supported nor accurate). Constant
(zero) padding lets clips shorter than a window through (reflect padding would reject them).
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
        if any(n < 8 for n in n_ffts):
            raise ValueError(f"MultiResolutionMelLoss: every n_fft must be >= 8, got {n_ffts}")
        # Few mels for small windows, so that no triangular filter falls between two FFT bins.
        n_mels = [min(80, n // 8) for n in n_ffts] if n_mels is None else [int(m) for m in n_mels]
        if len(n_mels) != len(n_ffts):
            raise ValueError(f"n_mels {n_mels} needs one entry per n_fft {n_ffts}")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        self.sample_rate, self.n_ffts, self.n_mels, self.eps = int(sample_rate), n_ffts, n_mels, float(eps)
        for i, (n, m) in enumerate(zip(n_ffts, n_mels)):
            self.register_buffer(f"window{i}", torch.hann_window(n), persistent=False)
            fb = torchaudio.functional.melscale_fbanks(n // 2 + 1, 0.0, self.sample_rate / 2, m, self.sample_rate)
            self.register_buffer(f"fbank{i}", fb.T.contiguous(), persistent=False)  # (n_mels, n_fft/2 + 1)

    def _log_mel(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """(N, T) float32 -> log-mel magnitudes (N, n_mels, frames) at resolution ``i``."""
        n = self.n_ffts[i]
        x = F.pad(x, (n // 2, n // 2))
        spec = torch.stft(x, n, n // 4, window=getattr(self, f"window{i}"), center=False, return_complex=True)
        mag = spec.abs()  # (N, freq, frames); abs' gradient is 0 at a zero bin
        return torch.log(torch.matmul(getattr(self, f"fbank{i}"), mag) + self.eps)

    def log_mels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, T) -> list over resolutions of log-mel magnitudes (B, C, n_mels, frames), float32."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            lead = x.shape[:-1]
            flat = x.float().reshape(-1, x.shape[-1])
            return [m.reshape(*lead, *m.shape[-2:]) for m in (self._log_mel(flat, i) for i in range(len(self.n_ffts)))]

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x_hat.shape != x.shape:
            raise ValueError(f"MultiResolutionMelLoss: x_hat {tuple(x_hat.shape)} and x {tuple(x.shape)} differ in shape")
        with torch.no_grad():
            target = self.log_mels(x.detach())
        terms = [F.l1_loss(a, b) for a, b in zip(self.log_mels(x_hat), target)]
        return torch.stack(terms).mean()


def pointwise_loss(kind: str, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean L2 (``"mse"``) or L1 (``"l1"``) over every element, computed in float32."""
    x_hat, x = x_hat.float(), x.float()
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "l1":
        return F.l1_loss(x_hat, x)
    raise ValueError(f"unknown reconstruction loss {kind!r}; expected 'mse' or 'l1'")
