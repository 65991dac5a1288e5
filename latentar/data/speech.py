"""A speech corpus synthesized offline with espeak-ng: fixed sentences x voices x speaking rates.

Nothing downloads: each utterance is rendered by the ``espeak-ng`` binary (22,050 Hz, 16-bit),
resampled to ``sample_rate`` with ``torchaudio.functional.resample``, and written as a wav file
into ``cache_dir("speech/<hash of the settings>")`` (or ``root``), where later runs find it.
Synthesis is lazy (an utterance is rendered the first time it is read; ``prepare()`` renders all
of them up front), so constructing the dataset is free. Writes are atomic, so several DataLoader
workers or processes can share a cache folder.

Item ``i`` is the utterance of sentence ``i % S`` by voice/rate pair ``i // S`` (``S`` sentences),
a float32 waveform ``(1, T)``; with ``crop_seconds`` every item is cropped (centre window) or
zero-padded to a fixed length, so items are deterministic per index.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch.utils.data import Dataset

from latentar.data.audio_io import as_generator, crop_samples, fix_length, read_audio
from latentar.data.cache import cache_dir
from latentar.train.checkpoint import atomic_write_text

ESPEAK_RATE = 22050
# Bump when the rendering below changes, so old caches are not re-used.
FORMAT_VERSION = 1

SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A watched pot never boils, but a forgotten one always does.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The rainbow is a division of white light into many beautiful colors.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Seven silver spoons lay on the kitchen table.",
    "It was the best of times, it was the worst of times.",
    "Turn left at the second traffic light, then keep going for two miles.",
    "Numbers like three hundred and forty two are easy to say.",
    "Can you hear the difference between a whisper and a shout?",
    "The meeting has been moved to Thursday afternoon at four o'clock.",
    "Bright stars filled the cold winter sky above the quiet village.",
    "My grandmother kept a garden full of tomatoes, beans and sunflowers.",
    "Why do cats always land on their feet?",
    "The train to Boston leaves from platform nine in ten minutes.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "He read the letter twice before folding it into his pocket.",
    "Good morning! Did you sleep well last night?",
    "The orchestra played softly while the audience found their seats.",
    "Every autumn the leaves turn red, orange and gold.",
    "Careful with that box, it is much heavier than it looks.",
    "A small boat drifted slowly across the calm blue lake.",
    "Learning a new language takes patience and daily practice.",
    "The old clock in the hallway struck midnight.",
    "Would you like tea, coffee, or a glass of cold water?",
    "Thunder rolled over the hills as the storm came closer.",
    "The library closes early on Sundays and public holidays.",
    "Fresh bread smells wonderful when it comes out of the oven.",
    "We measured the distance twice and still got different answers.",
)
VOICES: tuple[str, ...] = ("en-us", "en-us+f3", "en+m3", "en-gb-scotland+f4")
RATES: tuple[int, ...] = (140, 175, 210)  # words per minute

INSTALL_HINT = ("the `espeak-ng` binary is not on PATH; install it with `apt-get install -y espeak-ng` "
                "(Debian/Ubuntu; `brew install espeak-ng` on macOS), or run `make`, which installs it")


def espeak_binary() -> str:
    """Path of ``espeak-ng``, or a ``RuntimeError`` saying how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(f"SpeechCorpus needs espeak-ng to synthesize its utterances: {INSTALL_HINT}")
    return exe


def synthesize(text: str, voice: str = "en-us", rate: int = 175, sample_rate: int = 24000) -> torch.Tensor:
    """Render ``text`` with espeak-ng; return float32 ``(1, T)`` at ``sample_rate``."""
    exe = espeak_binary()
    with tempfile.TemporaryDirectory(prefix="latentar_espeak_") as tmp:
        out = Path(tmp) / "utt.wav"
        proc = subprocess.run([exe, "-v", voice, "-s", str(int(rate)), "-w", str(out), "--", text],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(
                f"espeak-ng failed for voice {voice!r}, rate {rate}: {proc.stderr.strip() or 'no output'}; "
                "`espeak-ng --voices=en` lists the voices (append +f3, +m3, ... for variants)"
            )
        data, sr = sf.read(str(out), dtype="float32", always_2d=True)
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1))).unsqueeze(0)
    if wave.shape[-1] == 0 or wave.abs().max() == 0:
        raise RuntimeError(f"espeak-ng produced silence for voice {voice!r} and text {text!r}")
    if sr != sample_rate:
        wave = AF.resample(wave, orig_freq=int(sr), new_freq=int(sample_rate))
    return wave.clamp(-1.0, 1.0).contiguous()


class SpeechCorpus(Dataset):
    """espeak-ng speech: ``len(sentences) * len(voices) * len(rates)`` utterances, ``(1, T)`` each.

    Args:
        root: folder for the wav files; default ``cache_dir("speech/<settings hash>")``.
        sample_rate: output rate (Hz); espeak-ng's 22,050 Hz is resampled to it.
        voices: espeak-ng voice names (``espeak-ng --voices=en``; ``+f3`` etc. pick a variant).
        rates: speaking rates in words per minute.
        sentences: texts to speak; default the 30 built-in ``SENTENCES``.
        crop_seconds: fixed item length (centre crop / zero pad), or None for full utterances.
        generator: ``torch.Generator`` or int seed for random crops instead of centre crops.
    """

    def __init__(self, root: str | os.PathLike | None = None, sample_rate: int = 24000,
                 voices: tuple[str, ...] | list[str] = VOICES, rates: tuple[int, ...] | list[int] = RATES,
                 sentences: tuple[str, ...] | list[str] | None = None, crop_seconds: float | None = None,
                 generator: torch.Generator | int | None = None):
        self.sample_rate = int(sample_rate)
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        self.voices = tuple(str(v) for v in voices)
        self.rates = tuple(int(r) for r in rates)
        self.sentences = tuple(SENTENCES if sentences is None else (str(s) for s in sentences))
        for name, seq in (("voices", self.voices), ("rates", self.rates), ("sentences", self.sentences)):
            if not seq:
                raise ValueError(f"SpeechCorpus: {name} must not be empty")
        if any(not s.strip() for s in self.sentences):
            raise ValueError("SpeechCorpus: sentences must be non-empty strings")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"SpeechCorpus: rates are words per minute and must be positive, got {self.rates}")
        self.crop_length = crop_samples(crop_seconds, self.sample_rate)
        self.generator = as_generator(generator)
        self._root = None if root is None else Path(root).expanduser()

    # -- settings and layout ------------------------------------------------------------------
    def settings(self) -> dict:
        return {"format": FORMAT_VERSION, "sample_rate": self.sample_rate, "voices": list(self.voices),
                "rates": list(self.rates), "sentences": list(self.sentences)}

    def settings_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def root(self) -> Path:
        """The folder holding the wav files (created on first use)."""
        if self._root is None:
            return cache_dir(f"speech/{self.settings_hash()}")
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    def item_info(self, i: int) -> dict:
        """``{"text", "voice", "rate", "sentence_index"}`` of item ``i``."""
        i = self._index(i)
        s, vr = i % len(self.sentences), i // len(self.sentences)
        voice, rate = self.voices[vr // len(self.rates)], self.rates[vr % len(self.rates)]
        return {"text": self.sentences[s], "voice": voice, "rate": rate, "sentence_index": s}

    def path(self, i: int) -> Path:
        info = self.item_info(i)
        voice = "".join(c if c.isalnum() or c in "-_" else "_" for c in info["voice"])
        return self.root / f"{info['sentence_index']:04d}_{voice}_{info['rate']}.wav"

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"SpeechCorpus index {i} out of range for {n} utterances")
        return i % n

    # -- synthesis ----------------------------------------------------------------------------
    def _ensure(self, i: int) -> Path:
        path = self.path(i)
        if path.is_file():
            return path
        info = self.item_info(i)
        wave = synthesize(info["text"], info["voice"], info["rate"], self.sample_rate)  # (1, T)
        meta = path.parent / "settings.json"
        if not meta.is_file():
            atomic_write_text(json.dumps(self.settings(), indent=2), meta)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".wav.tmp")
        os.close(fd)
        try:
            sf.write(tmp, wave[0].numpy(), self.sample_rate, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def prepare(self, num_workers: int | None = None) -> Path:
        """Synthesize every missing utterance now (``num_workers`` threads; default all cores)."""
        espeak_binary()
        workers = num_workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self._ensure, range(len(self))))
        return self.root

    # -- Dataset ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sentences) * len(self.voices) * len(self.rates)

    def __getitem__(self, i: int) -> torch.Tensor:
        path = self._ensure(self._index(i))
        wave = read_audio(path, self.sample_rate)  # (1, T)
        if self.crop_length is not None:
            wave = fix_length(wave, self.crop_length, self.generator)
        return wave
