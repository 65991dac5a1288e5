"""``WavFolder``: the user's own audio as a map-style dataset of mono waveforms ``(1, T)``.

Files are found recursively under ``root`` (sorted, so indices are stable), read with soundfile,
mixed down to mono, resampled with ``torchaudio.functional.resample`` and, with ``crop_seconds``,
cropped or zero-padded to a fixed length (random window when a generator or seed is given,
centre window otherwise).

Construction checks every file once (reads it fully when ``validate=True``): a corrupt, empty,
NaN-containing or silent file raises a ``ValueError`` naming it, or, with ``on_error="skip"``, is
dropped with a ``warnings.warn``. A folder left with no usable audio is an error either way.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import soundfile as sf
import torch
from torch.utils.data import Dataset

from latentar.data.audio_io import (SILENCE_THRESHOLD, AudioFileError, as_generator, crop_samples,
                                    fix_length, read_audio)

ON_ERROR = ("raise", "skip")


class WavFolder(Dataset):
    """Audio files under ``root`` -> float32 waveforms ``(1, T)`` at ``sample_rate``.

    Args:
        root: folder searched recursively for files ending in ``extensions`` (case-insensitive).
        sample_rate: output rate in Hz; files at other rates are resampled.
        crop_seconds: if set, every item has exactly ``round(crop_seconds * sample_rate)`` samples.
        on_error: ``"raise"`` (default) or ``"skip"`` (warn and drop unusable files).
        extensions: file suffixes to load.
        generator: ``torch.Generator`` or int seed for random crops; ``None`` -> centre crops.
        silence_threshold: files whose peak |amplitude| is below it count as silent.
        validate: read every file once at construction (catches NaN / silent files up front);
            with ``False`` only headers are checked and content errors surface on access.
    """

    def __init__(self, root: str | os.PathLike, sample_rate: int = 24000, crop_seconds: float | None = None,
                 on_error: str = "raise", extensions: tuple[str, ...] | list[str] = (".wav", ".flac", ".ogg"),
                 generator: torch.Generator | int | None = None, silence_threshold: float = SILENCE_THRESHOLD,
                 validate: bool = True):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise FileNotFoundError(f"WavFolder: audio folder {self.root} {what}; pass root=<folder with your audio files>")
        self.sample_rate = int(sample_rate)
        self.crop_length = crop_samples(crop_seconds, self.sample_rate)
        self.on_error = on_error
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        self.generator = as_generator(generator)
        self.silence_threshold = float(silence_threshold)

        candidates = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in self.extensions)
        if not candidates:
            raise FileNotFoundError(f"WavFolder: no files ending in {self.extensions} under {self.root}")
        self.files: list[Path] = []
        self.skipped: list[tuple[Path, str]] = []
        for path in candidates:
            try:
                self._check(path, validate)
            except AudioFileError as e:
                if on_error == "raise":
                    raise AudioFileError(f"{e} (pass on_error='skip' to leave such files out)") from e
                warnings.warn(f"WavFolder: skipping {path}: {e}", stacklevel=2)
                self.skipped.append((path, str(e)))
                continue
            self.files.append(path)
        if not self.files:
            raise ValueError(
                f"WavFolder: no usable audio under {self.root}: all {len(candidates)} files were skipped "
                f"(first problem: {self.skipped[0][1]})"
            )

    def _check(self, path: Path, full: bool) -> None:
        if full:
            read_audio(path, None, self.silence_threshold)
            return
        try:
            info = sf.info(str(path))
        except Exception as e:
            raise AudioFileError(f"cannot decode audio file {path}: {e}") from e
        if info.frames == 0:
            raise AudioFileError(f"audio file {path} holds no samples (empty)")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        wave = read_audio(self.files[i], self.sample_rate, self.silence_threshold)  # (1, T)
        if self.crop_length is not None:
            wave = fix_length(wave, self.crop_length, self.generator)
        return wave
