"""A real text corpus that every Python install carries: the standard library's own sources.

The ``.py`` files under ``sysconfig.get_paths()["stdlib"]`` (skipping ``test``/``tests``,
``site-packages``, ``dist-packages``, ``idlelib``, ``lib2to3``, ``encodings`` (codec tables) and
``__pycache__``), visited in sorted path order and concatenated as raw bytes, each file followed by
a blank line, up to ``max_bytes``.
The first ``1 - val_fraction`` of the bytes is ``"train"``, the rest ``"val"`` (a contiguous cut,
so no file straddles both sides except the one at the boundary). The content depends on the Python
version, never on the run.
"""
from __future__ import annotations

import os
import random
import sysconfig
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.data import Dataset

DEFAULT_MAX_BYTES = 4_000_000
VAL_FRACTION = 0.1
SPLITS = ("train", "val")
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3", "encodings", "__pycache__"}


def stdlib_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The ``.py`` files of the standard library, sorted by relative path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"the Python standard library folder {root} is missing; pass root=<folder of .py files>")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@lru_cache(maxsize=4)
def stdlib_corpus(max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The concatenated standard-library sources, at most ``max_bytes`` bytes."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    chunks, total = [], 0
    for path in stdlib_files():
        try:
            data = path.read_bytes()
        except OSError:
            continue
        chunks.append(data + b"\n\n")
        total += len(data) + 2
        if total >= max_bytes:
            break
    corpus = b"".join(chunks)[:max_bytes]
    if not corpus:
        raise RuntimeError("found no standard-library .py sources to build the text corpus from")
    return corpus


def corpus_split(split: str = "train", max_bytes: int = DEFAULT_MAX_BYTES, val_fraction: float = VAL_FRACTION) -> bytes:
    """The ``"train"`` (first part) or ``"val"`` (last ``val_fraction``) bytes of the corpus."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    data = stdlib_corpus(max_bytes)
    cut = int(len(data) * (1 - val_fraction))
    return data[:cut] if split == "train" else data[cut:]


class TextCorpus(Dataset):
    """Byte blocks for a character LM: item ``i`` is ``(input (block_size,), target (block_size,))``
    int64, with ``target = input`` shifted by one byte; blocks start every ``stride`` bytes
    (default ``block_size``: non-overlapping). ``vocab_size = 256``.
    """

    vocab_size = 256

    def __init__(self, block_size: int = 128, split: str = "train", max_bytes: int = DEFAULT_MAX_BYTES,
                 stride: int | None = None, val_fraction: float = VAL_FRACTION):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size, self.split = int(block_size), split
        self.stride = int(stride or block_size)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        data = corpus_split(split, max_bytes, val_fraction)
        if len(data) < block_size + 1:
            raise ValueError(f"the {split} text ({len(data)} bytes) is shorter than block_size + 1 = {block_size + 1}; "
                             "raise max_bytes or lower block_size")
        self.data = torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def __len__(self) -> int:
        return (len(self.data) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} blocks")
        start = (i % len(self)) * self.stride
        chunk = self.data[start:start + self.block_size + 1].long()
        return chunk[:-1], chunk[1:]


def text_snippets(num: int, length: int, split: str = "val", seed: int = 0, max_bytes: int = DEFAULT_MAX_BYTES,
                  ascii_only: bool = True, line_start: bool = True) -> list[bytes]:
    """``num`` distinct snippets of exactly ``length`` bytes from ``split`` (held-out by default).

    Each starts at the beginning of a line (``line_start``), and with ``ascii_only`` holds only
    printable ASCII plus newline (so it decodes cleanly). Deterministic given ``seed``.
    """
    data = corpus_split(split, max_bytes)
    if length < 1 or length >= len(data):
        raise ValueError(f"length must lie in [1, {len(data) - 1}] for the {split} text, got {length}")
    ok = set(range(32, 127)) | {10}
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(1000 * num + 1000):
        if len(out) == num:
            break
        start = rng.randrange(0, len(data) - length)
        if line_start and start > 0:
            nl = data.find(b"\n", start - 1)  # start itself when data[start - 1] is a newline
            if nl < 0:
                continue
            start = nl + 1
        snippet = data[start:start + length]
        if len(snippet) < length or snippet in seen:
            continue
        if ascii_only and not set(snippet) <= ok:
            continue
        seen.add(snippet)
        out.append(snippet)
    if len(out) < num:
        raise ValueError(f"found only {len(out)} of {num} distinct {length}-byte snippets in the {split} text; "
                         "lower num or length, or pass ascii_only=False")
    return out
