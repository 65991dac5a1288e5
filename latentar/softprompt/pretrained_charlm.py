"""A small byte-level CharLM pretrained on the stdlib text corpus: the fast frozen LM for soft prompts.

What: ``CharLM(vocab_size=256, **preset)`` trained with the shared Trainer on
``TextCorpus(block_size, split="train")`` (teacher-forced next-byte CE), then cached with
``save_pretrained`` under ``cache_dir("softprompt")/charlm-<preset>-<hash of the settings>`` and
re-used. Soft-prompt targets come from the held-out ``"val"`` split, so the LM has not seen them.

Why: SmolLM2-135M is the real target but costs seconds per fit step on a loaded CPU; a CharLM that
knows Python source well enough to make greedy decoding loop and scramble is the same experiment
in milliseconds. Training is kept small (CPU minutes at most); the presets below say how small.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import torch

from latentar.data.cache import build_once, building_context, cache_dir
from latentar.data.text import TextCorpus
from latentar.models.char_lm import CharLM
from latentar.pretrained import is_saved
from latentar.train import Trainer

# preset -> (model arguments, training arguments)
TEXT_CHARLM_PRESETS: dict[str, tuple[dict, dict]] = {
    "test": (dict(d_model=96, depth=3, num_heads=4, max_len=128),
             dict(max_steps=300, batch_size=16, block_size=64, lr=3e-3, max_bytes=1_000_000)),
    "small": (dict(d_model=96, depth=3, num_heads=4, max_len=288),
              dict(max_steps=600, batch_size=16, block_size=128, lr=3e-3, max_bytes=2_000_000)),
}
VERSION = 1


def _key(preset: str) -> str:
    model_kw, train_kw = TEXT_CHARLM_PRESETS[preset]
    blob = json.dumps({"v": VERSION, "model": model_kw, "train": train_kw}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def text_charlm(preset: str = "small", cache: bool = True, refresh: bool = False, progress: bool = True,
                seed: int = 0) -> CharLM:
    """The pretrained CharLM of ``preset`` ("test": seconds to train; "small": the benchmark's LM), in
    eval mode on the CPU; trained with the shared Trainer on first use and cached. ``progress``: the
    first use's training bar on stderr (minutes for "small"; inside a sweep cell only with ``--verbose``)."""
    if preset not in TEXT_CHARLM_PRESETS:
        raise ValueError(f"unknown CharLM preset {preset!r}; expected one of {sorted(TEXT_CHARLM_PRESETS)}")
    path = cache_dir("softprompt") / f"charlm-{preset}-{_key(preset)}"
    if refresh and path.exists():
        shutil.rmtree(path, ignore_errors=True)
    if not cache:
        with building_context():
            return _train_text_charlm(preset, progress, seed)
    build_once(path, lambda tmp: _train_text_charlm(preset, progress, seed).save_pretrained(tmp),
               ready=is_saved)  # either layout: a CharLM cached before the diffusers format still loads
    return CharLM.from_pretrained(path).eval()


def _train_text_charlm(preset: str, progress: bool, seed: int) -> CharLM:
    model_kw, train_kw = TEXT_CHARLM_PRESETS[preset]
    train_kw = dict(train_kw)
    block, max_bytes = train_kw.pop("block_size"), train_kw.pop("max_bytes")
    data = TextCorpus(block_size=block, split="train", max_bytes=max_bytes)
    torch.manual_seed(seed)
    model = CharLM(vocab_size=256, **model_kw)
    trainer = Trainer(**train_kw, warmup_steps=50, weight_decay=0.01, device="cpu", progress=progress,
                      log_every=50, seed=seed, handle_signals=False, desc=f"pretraining CharLM {preset} (once; cached)")
    trainer.fit(model, data)
    return model.eval()
