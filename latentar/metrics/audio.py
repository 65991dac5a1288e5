"""Audio metrics: Frechet distance of log-mel statistics, log-mel distance, and SI-SNR.

* ``log_mel``: ``log(max(MelSpectrogram(x), 1e-5))`` with torchaudio (power 2, HTK mel scale,
  no filter normalisation: torchaudio's defaults), ``(B, n_mels, frames)``.
* ``mel_features``: ``pooling="frame"`` gives one ``n_mels`` vector per frame, pooled over all clips
  (many samples, so the covariance is well estimated from a few clips; frames of digital silence,
  e.g. zero padding, are dropped); ``pooling="clip"`` gives the per-clip mean and standard deviation
  of every mel band, ``2 n_mels`` numbers per clip (needs many more clips than ``2 n_mels``).
* ``mel_fd``: Frechet distance between Gaussians fitted to those features of two sets of waves.
* ``mel_distance``: mean |log-mel(x) - log-mel(x_hat)|, the usual reconstruction score of audio
  tokenizers.
* ``si_snr``: scale-invariant SNR in dB (Le Roux et al. 2019, "SDR - half-baked or well done?"):
  with zero-mean x and x_hat, ``s = <x_hat, x> x / ||x||^2``, ``e = x_hat - s``,
  ``SI-SNR = 10 log10(||s||^2 / ||e||^2)``.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torchaudio

from latentar.metrics.frechet import frechet_distance_from_features

LOG_FLOOR = 1e-5


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """``(T,)``, ``(B, T)`` or ``(B, 1, T)`` -> float32 ``(B, T)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of audio, got {type(x).__name__}")
    if x.ndim == 1:
        x = x.unsqueeze(0)
    elif x.ndim == 3:
        if x.shape[1] != 1:
            raise ValueError(f"{name}: expected mono audio (B, 1, T), got {tuple(x.shape)}; mix channels down first")
        x = x[:, 0]
    elif x.ndim != 2:
        raise ValueError(f"{name}: expected audio of shape (T,), (B, T) or (B, 1, T), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf samples")
    return x.float()


@lru_cache(maxsize=8)
def _mel_transform(sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                                                n_mels=n_mels, power=2.0)


def log_mel(waves: torch.Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 256,
            n_mels: int = 80) -> torch.Tensor:
    """Log-mel spectrogram ``(B, n_mels, frames)`` of ``waves`` ``(B, 1, T)`` / ``(B, T)`` / ``(T,)``."""
    x = _as_batch(waves, "waves")
    if x.shape[-1] < n_fft // 2 + 1:
        raise ValueError(f"audio of {x.shape[-1]} samples is too short for n_fft = {n_fft}")
    mel = _mel_transform(int(sample_rate), n_fft, hop_length, n_mels).to(x.device)(x)
    return mel.clamp_min(LOG_FLOOR).log()


def mel_features(waves: torch.Tensor, sample_rate: int, pooling: str = "frame", n_mels: int = 64,
                 n_fft: int = 1024, hop_length: int = 256) -> torch.Tensor:
    """Features for ``mel_fd``: ``(total_frames, n_mels)`` for ``"frame"``, ``(B, 2 n_mels)`` for ``"clip"``."""
    lm = log_mel(waves, sample_rate, n_fft, hop_length, n_mels)  # (B, M, F)
    if pooling == "frame":
        frames = lm.transpose(1, 2).reshape(-1, n_mels)  # (B * F, M)
        keep = frames.max(dim=1).values > torch.log(torch.tensor(LOG_FLOOR)) + 1e-3  # drop digital silence
        if int(keep.sum()) < 2:
            raise ValueError("fewer than 2 non-silent mel frames: is the audio all zeros?")
        return frames[keep]
    if pooling == "clip":
        return torch.cat([lm.mean(-1), lm.std(-1)], dim=-1)
    raise ValueError(f"pooling must be 'frame' or 'clip', got {pooling!r}")


def mel_fd(waves_a: torch.Tensor, waves_b: torch.Tensor, sample_rate: int, pooling: str = "frame",
           n_mels: int = 64) -> float:
    """Frechet distance between log-mel feature Gaussians of two sets of waves (same rate)."""
    fa = mel_features(waves_a, sample_rate, pooling, n_mels)
    fb = mel_features(waves_b, sample_rate, pooling, n_mels)
    return frechet_distance_from_features(fa.double(), fb.double())


def _pair(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_batch(x, "x"), _as_batch(x_hat, "x_hat")
    if a.shape != b.shape:
        raise ValueError(f"x {tuple(a.shape)} and x_hat {tuple(b.shape)} must have the same shape; "
                         "crop the reconstruction to the input length first")
    return a, b


def mel_distance(x: torch.Tensor, x_hat: torch.Tensor, sample_rate: int = 24000, n_mels: int = 80,
                 n_fft: int = 1024, hop_length: int = 256, reduction: str = "mean") -> float | torch.Tensor:
    """Mean absolute log-mel difference; ``reduction="none"`` gives one value per example ``(B,)``."""
    a, b = _pair(x, x_hat)
    d = (log_mel(a, sample_rate, n_fft, hop_length, n_mels) - log_mel(b, sample_rate, n_fft, hop_length, n_mels)).abs()
    per = d.mean(dim=(1, 2))
    return _reduce(per, reduction)


def si_snr(x: torch.Tensor, x_hat: torch.Tensor, eps: float = 1e-8, reduction: str = "mean") -> float | torch.Tensor:
    """Scale-invariant SNR (dB) of ``x_hat`` against reference ``x``; higher is better."""
    a, b = _pair(x, x_hat)
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    s = (b * a).sum(-1, keepdim=True) / ((a * a).sum(-1, keepdim=True) + eps) * a
    e = b - s
    per = 10 * torch.log10(((s * s).sum(-1) + eps) / ((e * e).sum(-1) + eps))
    return _reduce(per.float(), reduction)


def _reduce(per: torch.Tensor, reduction: str) -> float | torch.Tensor:
    if reduction == "mean":
        return float(per.mean())
    if reduction == "none":
        return per
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
