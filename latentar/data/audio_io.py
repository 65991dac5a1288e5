"""Reading, checking and cropping audio: the helpers shared by ``WavFolder`` and ``SpeechCorpus``.

Every waveform leaves here as float32 ``(1, T)``: soundfile reads it, channels are averaged
(mono mix-down), ``torchaudio.functional.resample`` converts the rate (output length
``ceil(T * new_rate / old_rate)``), and ``fix_length`` crops or zero-pads it to a fixed length.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

# A file whose peak |amplitude| is below this (full scale = 1.0) counts as silent.
SILENCE_THRESHOLD = 1e-4


class AudioFileError(ValueError):
    """A file that cannot serve as training audio (corrupt, empty, NaN/inf, or silent)."""


def read_audio(path: str | os.PathLike, sample_rate: int | None = None,
               silence_threshold: float = SILENCE_THRESHOLD) -> torch.Tensor:
    """Read ``path`` as mono float32 ``(1, T)`` at ``sample_rate`` (the file's own rate if None).

    Raises ``AudioFileError`` naming the file when it cannot be decoded, holds no samples,
    contains NaN/inf, or is silent (peak below ``silence_threshold``).
    """
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
        raise AudioFileError(f"cannot decode audio file {path}: {e}") from e
    if data.size == 0:
        raise AudioFileError(f"audio file {path} holds no samples (empty)")
    if not np.isfinite(data).all():
        raise AudioFileError(f"audio file {path} contains NaN or inf samples")
    mono = data.mean(axis=1)
    peak = float(np.abs(mono).max())
    if peak < silence_threshold:
        raise AudioFileError(
            f"audio file {path} is silent (peak |x| = {peak:.3g} < silence_threshold = {silence_threshold:g})"
        )
    wave = torch.from_numpy(np.ascontiguousarray(mono)).unsqueeze(0)  # (1, T)
    if sample_rate is not None and sr != sample_rate:
        wave = AF.resample(wave, orig_freq=int(sr), new_freq=int(sample_rate))
    return wave.contiguous()


def resampled_length(num_frames: int, orig_rate: int, new_rate: int) -> int:
    """Length of ``torchaudio.functional.resample`` output: ``ceil(T * new / orig)``."""
    g = math.gcd(int(orig_rate), int(new_rate))
    return int(math.ceil(num_frames * (new_rate // g) / (orig_rate // g)))


def fix_length(wave: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop or zero-pad ``wave`` ``(C, T)`` to ``(C, length)``.

    Longer inputs: a uniformly random window when ``generator`` is given, else the centre window
    (deterministic). Shorter inputs are zero-padded at the end.
    """
    if length <= 0:
        raise ValueError(f"crop length must be positive, got {length} samples")
    t = wave.shape[-1]
    if t > length:
        if generator is not None:
            start = int(torch.randint(0, t - length + 1, (1,), generator=generator))
        else:
            start = (t - length) // 2
        return wave[..., start:start + length].contiguous()
    if t < length:
        return torch.nn.functional.pad(wave, (0, length - t))
    return wave


def crop_samples(crop_seconds: float | None, sample_rate: int) -> int | None:
    """``round(crop_seconds * sample_rate)``, validated; ``None`` passes through."""
    if crop_seconds is None:
        return None
    if not crop_seconds > 0:
        raise ValueError(f"crop_seconds must be positive or None, got {crop_seconds}")
    return max(1, int(round(crop_seconds * sample_rate)))


def as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """Accept a ``torch.Generator``, an int seed, or ``None``."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


class RandomCrops(torch.utils.data.Dataset):
    """Random fixed-length windows of a set of clips: item ``i`` is a fresh ``length``-sample crop
    of clip ``i`` (``fix_length`` with a generator: uniform start, zero-padded if shorter).

    For training a tokenizer on short crops (cost per step ~ linear in the crop length; a conv
    tokenizer's receptive field is far shorter than a crop) while the AR model downstream sees
    the full clips' latents. ``data``: a tensor ``(N, C, T)`` or a map-style dataset of ``(C, T)``
    items (or ``(item, ...)`` tuples). ``generator``: ``torch.Generator`` or int seed; the same
    seed and access order give the same crops.
    """

    def __init__(self, data, length: int, generator: torch.Generator | int | None = 0):
        if isinstance(data, torch.Tensor) and data.dim() != 3:
            raise ValueError(f"RandomCrops: expected clips (N, C, T), got a tensor of shape {tuple(data.shape)}")
        if len(data) == 0:
            raise ValueError("RandomCrops: no clips to crop")
        self.data, self.length = data, int(length)
        if self.length <= 0:
            raise ValueError(f"RandomCrops: crop length must be positive, got {length} samples")
        self.generator = as_generator(generator) or torch.Generator().manual_seed(torch.initial_seed() % 2**63)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.data[i]
        wave = item if isinstance(item, torch.Tensor) else item[0]
        return fix_length(wave, self.length, self.generator)
