"""A speech corpus synthesized offline with espeak-ng: fixed sentences x speakers x speaking rates.

Nothing downloads: each utterance is rendered by the ``espeak-ng`` binary (22,050 Hz, 16-bit),
resampled to ``sample_rate`` with ``torchaudio.functional.resample``, and written as a wav file
into ``cache_dir("speech/<hash of the settings>")`` (or ``root``), where later runs find it.
Synthesis is lazy (an utterance is rendered the first time it is read; ``prepare()`` renders all
of them up front), so constructing the dataset is free. Writes are atomic, so several DataLoader
workers or processes can share a cache folder.

Sizes (``size=``): ``"full"`` (default) is 64 sentences x 12 speakers x 2 rates = 1,536 clips of
about 3.3 s (1.4 h of audio; synthesized once, 83 s on 2 cores, see ``prepare``); ``"small"``
is 8 x 3 x 1 = 24 clips for tests and smoke runs. Explicit ``sentences`` / ``voices`` / ``rates``
override the size's. A speaker is an espeak-ng voice, optionally with a variant and a pitch:
``"en-gb-x-rp+f2@65"`` = voice ``en-gb-x-rp``, variant ``f2``, ``-p 65`` (0..99, espeak's default
50). The 12 default speakers span 8 accents (US, NYC, GB, RP, Scottish, Lancaster, West Midlands,
Caribbean), male and female variants and pitches 35..70.

Item ``i`` is speaker ``i % V``, rate ``(i // V) % R``, sentence ``i // (V R)`` (``V`` speakers,
``R`` rates): the speaker varies fastest, so any prefix of the corpus (e.g. a test split of the
first fifth) holds every speaker and rate, and whole sentences unseen by the rest. Each item is a
float32 waveform ``(1, T)``; with ``crop_seconds`` every item is cropped (centre window, or a
random one with ``generator``) or zero-padded to a fixed length.
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
# 2: "voice@pitch" speakers (-p), speaker-fastest item order, 64 sentences.
FORMAT_VERSION = 2

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
    "Open the window before the room gets too warm.",
    "Her brother plays the violin every evening after dinner.",
    "The museum is free on the first Monday of each month.",
    "Do not forget to water the plants while I am away.",
    "A gentle breeze carried the smell of salt from the harbour.",
    "The children built a snowman with a carrot for a nose.",
    "Six thousand people watched the final match of the season.",
    "Which road leads to the lighthouse on the northern cliff?",
    "The recipe calls for two eggs, a cup of flour and some butter.",
    "Our flight was delayed because of heavy fog at the airport.",
    "He painted the fence white and the door a deep shade of green.",
    "Quiet please, the baby has finally fallen asleep.",
    "The price of apples went up again this week.",
    "They walked along the river until the sun went down.",
    "Is it true that octopuses have three hearts?",
    "The doctor said to rest for a few days and drink plenty of fluids.",
    "Mountains on the horizon looked purple in the evening light.",
    "I left my umbrella on the bus this morning.",
    "The committee will announce its decision next Friday.",
    "Jazz musicians often improvise long solos on stage.",
    "Put the heavy books on the bottom shelf, please.",
    "A flock of geese flew south in a perfect line.",
    "The password must contain at least eight characters.",
    "We could see the whole city from the top of the tower.",
    "Fifteen minutes later, the rain stopped as suddenly as it began.",
    "The farmer sold fresh milk and honey at the market.",
    "Why is the sky blue during the day and red at sunset?",
    "She finished the marathon in just under four hours.",
    "The new bridge will open to traffic in the spring.",
    "Keep the receipt in case you need to return the jacket.",
    "An old map was hidden behind the painting in the attic.",
    "The lecture on volcanoes was surprisingly exciting.",
    "Please speak slowly and clearly into the microphone.",
    "Zebras, giraffes and elephants gathered near the water hole.",
)
# Speakers: "voice[+variant][@pitch]" (see the module docstring).
VOICES: tuple[str, ...] = (
    "en-us", "en-us+f3@65", "en-gb+m3@40", "en-gb-scotland+f4@60", "en-gb-x-rp+m1@45", "en-gb-x-rp+f2@70",
    "en-029+m2@50", "en-us-nyc+f1@55", "en-gb-x-gbclan+m4@35", "en-gb-x-gbcwmd+f5@60", "en-us+m7@45",
    "en-gb+f1@65",
)
RATES: tuple[int, ...] = (150, 190)  # words per minute
# size -> (sentences, speakers, rates); explicit arguments override.
SIZES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]] = {
    "full": (SENTENCES, VOICES, RATES),
    "small": (SENTENCES[:8], ("en-us", "en-us+f3@65", "en-gb-scotland+f4@60"), (175,)),
}

INSTALL_HINT = ("the `espeak-ng` binary is not on PATH; install it with `apt-get install -y espeak-ng` "
                "(Debian/Ubuntu; `brew install espeak-ng` on macOS), or run `make`, which installs it")


def espeak_binary() -> str:
    """Path of ``espeak-ng``, or a ``RuntimeError`` saying how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(f"SpeechCorpus needs espeak-ng to synthesize its utterances: {INSTALL_HINT}")
    return exe


def parse_speaker(speaker: str) -> tuple[str, int | None]:
    """``"en-gb+f2@65"`` -> ``("en-gb+f2", 65)``; ``"en-us"`` -> ``("en-us", None)`` (espeak's pitch)."""
    voice, sep, pitch = str(speaker).partition("@")
    if not voice.strip():
        raise ValueError(f"speaker {speaker!r} names no espeak-ng voice")
    if not sep:
        return voice, None
    try:
        p = int(pitch)
    except ValueError:
        p = -1
    if not 0 <= p <= 99:
        raise ValueError(f"speaker {speaker!r}: the pitch after '@' must be an integer 0..99, got {pitch!r}")
    return voice, p


def synthesize(text: str, voice: str = "en-us", rate: int = 175, sample_rate: int = 24000,
               pitch: int | None = None) -> torch.Tensor:
    """Render ``text`` with espeak-ng (``-v voice -s rate [-p pitch]``); float32 ``(1, T)`` at ``sample_rate``."""
    exe = espeak_binary()
    with tempfile.TemporaryDirectory(prefix="latentar_espeak_") as tmp:
        out = Path(tmp) / "utt.wav"
        cmd = [exe, "-v", voice, "-s", str(int(rate))] + ([] if pitch is None else ["-p", str(int(pitch))])
        proc = subprocess.run(cmd + ["-w", str(out), "--", text], capture_output=True, text=True)
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
        voices: speakers, ``"voice[+variant][@pitch]"`` (``espeak-ng --voices=en`` lists voices,
            ``--voices=variant`` the variants); default the size's.
        rates: speaking rates in words per minute; default the size's.
        sentences: texts to speak; default the size's (``SENTENCES`` or its first 8).
        crop_seconds: fixed item length (centre crop / zero pad), or None for full utterances.
        generator: ``torch.Generator`` or int seed for random crops instead of centre crops.
        size: ``"full"`` (1,536 clips) or ``"small"`` (24 clips): the defaults of the three lists.
    """

    def __init__(self, root: str | os.PathLike | None = None, sample_rate: int = 24000,
                 voices: tuple[str, ...] | list[str] | None = None, rates: tuple[int, ...] | list[int] | None = None,
                 sentences: tuple[str, ...] | list[str] | None = None, crop_seconds: float | None = None,
                 generator: torch.Generator | int | None = None, size: str = "full"):
        self.sample_rate = int(sample_rate)
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        if size not in SIZES:
            raise ValueError(f"SpeechCorpus: size must be one of {sorted(SIZES)}, got {size!r}")
        d_sentences, d_voices, d_rates = SIZES[size]
        self.size = size
        self.voices = tuple(str(v) for v in (d_voices if voices is None else voices))
        self.rates = tuple(int(r) for r in (d_rates if rates is None else rates))
        self.sentences = tuple(d_sentences if sentences is None else (str(s) for s in sentences))
        for name, seq in (("voices", self.voices), ("rates", self.rates), ("sentences", self.sentences)):
            if not seq:
                raise ValueError(f"SpeechCorpus: {name} must not be empty")
        if any(not s.strip() for s in self.sentences):
            raise ValueError("SpeechCorpus: sentences must be non-empty strings")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"SpeechCorpus: rates are words per minute and must be positive, got {self.rates}")
        for v in self.voices:
            parse_speaker(v)
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
        """``{"text", "voice", "rate", "sentence_index"}`` of item ``i``, plus ``"pitch"`` when its
        speaker names one (``"voice@pitch"``; ``"voice"`` is then the part before the ``@``)."""
        i = self._index(i)
        V, R = len(self.voices), len(self.rates)
        v, r, s = i % V, (i // V) % R, i // (V * R)
        voice, pitch = parse_speaker(self.voices[v])
        info = {"text": self.sentences[s], "voice": voice, "rate": self.rates[r], "sentence_index": s}
        if pitch is not None:
            info["pitch"] = pitch
        return info

    def path(self, i: int) -> Path:
        info = self.item_info(i)
        voice = "".join(c if c.isalnum() or c in "-_" else "_" for c in info["voice"])
        pitch = "" if "pitch" not in info else f"_p{info['pitch']}"
        return self.root / f"{info['sentence_index']:04d}_{voice}{pitch}_{info['rate']}.wav"

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
        wave = synthesize(info["text"], info["voice"], info["rate"], self.sample_rate, info.get("pitch"))  # (1, T)
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
        """Synthesize every missing utterance now (``num_workers`` threads; default all cores).

        Measured on 2 shared, loaded cores: the full corpus (1,536 clips, 1.4 h of audio) at 16 kHz in
        83 s, once per cache folder."""
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
