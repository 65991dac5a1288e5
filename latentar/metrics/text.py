"""Metrics for discrete sequences: exact match, seq-rep-n, first divergence.

* ``exact_match``: fraction of predictions equal to their targets.
* ``seq_rep_n`` (Welleck et al. 2019, "Neural text generation with unlikelihood training"):
  ``1 - |unique n-grams| / |n-grams|`` of one sequence; 0 for no repetition, near 1 for a loop.
* ``first_divergence``: length of the common prefix of prediction and target, i.e. the first
  position where they differ (``== len(target)`` for an exact match of equal length).

Sequences may be ``str``, ``bytes``, lists of ints or 1-D tensors; a batch is a list of such
sequences or a 2-D tensor. ``eos`` cuts each sequence at its first EOS id; ``pad`` drops that id.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch



def _is_single(x) -> bool:
    if isinstance(x, (str, bytes, bytearray)):
        return True
    if isinstance(x, torch.Tensor):
        if x.ndim > 2:
            raise ValueError(f"expected a sequence (L,) or a batch (B, L), got a tensor of shape {tuple(x.shape)}")
        return x.ndim <= 1
    if isinstance(x, Sequence):
        return len(x) == 0 or not isinstance(x[0], (str, bytes, bytearray, Sequence, torch.Tensor))
    raise TypeError(f"expected str, bytes, a list of ids or a tensor, got {type(x).__name__}")


def _clean(x, eos: int | None, pad: int | None) -> list:
    if isinstance(x, str):
        items = list(x)
    elif isinstance(x, torch.Tensor):
        items = x.reshape(-1).tolist()
    else:
        items = list(x)  # bytes -> ints
    if eos is not None and eos in items:
        items = items[: items.index(eos)]
    if pad is not None:
        items = [t for t in items if t != pad]
    return items


def _batch(x, eos, pad) -> tuple[list[list], bool]:
    single = _is_single(x)
    rows = [x] if single else list(x)
    return [_clean(r, eos, pad) for r in rows], single


def _paired(pred, target, eos, pad):
    p, single_p = _batch(pred, eos, pad)
    t, single_t = _batch(target, eos, pad)
    if single_p != single_t or len(p) != len(t):
        raise ValueError(f"pred and target must both be one sequence or batches of equal size, got "
                         f"{len(p)} vs {len(t)} sequences")
    return p, t, single_p


def exact_match(pred, target, eos: int | None = None, pad: int | None = None) -> float:
    """Fraction of exact matches (1.0 / 0.0 for a single pair)."""
    p, t, _ = _paired(pred, target, eos, pad)
    if not p:
        raise ValueError("exact_match of an empty batch")
    return sum(a == b for a, b in zip(p, t)) / len(p)


def _rep(seq: list, n: int) -> float:
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def seq_rep_n(tokens, n: int = 4, eos: int | None = None, pad: int | None = None) -> float:
    """``1 - |unique n-grams| / |n-grams|``; for a batch, the mean over sequences.

    A sequence shorter than ``n`` has no n-grams and scores 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rows, _ = _batch(tokens, eos, pad)
    if not rows:
        raise ValueError("seq_rep_n of an empty batch")
    return sum(_rep(r, n) for r in rows) / len(rows)


def _common_prefix(a: list, b: list) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def first_divergence(pred, target, eos: int | None = None, pad: int | None = None) -> int | list[int]:
    """First position where ``pred`` and ``target`` differ (the common-prefix length).

    One pair -> int; a batch -> list of ints. Equal to ``len(target)`` when ``pred`` reproduces the
    whole target (check ``exact_match`` to tell an exact match from a longer prediction).
    """
    p, t, single = _paired(pred, target, eos, pad)
    out = [_common_prefix(a, b) for a, b in zip(p, t)]
    return out[0] if single else out
