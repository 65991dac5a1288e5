"""The reconstruction report: did greedy decoding reproduce the target, where did it leave it, did it loop.

For one fitted prompt and one target x (T tokens), decoding the same number of tokens y:

* ``exact``: y == x (``latentar.metrics.exact_match``);
* ``first_divergence``: the common-prefix length of y and x (``latentar.metrics.first_divergence``);
  it equals the first position whose teacher-forced argmax is wrong;
* loops: ``seq_rep_n`` of y (Welleck et al. 2019: 1 - unique n-grams / n-grams) beside that of x, and
  the most repeated n-gram that y holds more often than x does (``loop``: such an n-gram occurs at
  least ``min_repeats`` times in y), so a target that repeats itself is not flagged;
* ``tf_loss`` / ``tf_accuracy``: the teacher-forced CE (nats per token) and argmax accuracy, the
  numbers that look fine while greedy decoding fails.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from latentar.metrics.text import exact_match, first_divergence, seq_rep_n


def excess_ngram(output: Sequence[int], target: Sequence[int], n: int = 4) -> tuple[tuple[int, ...] | None, int]:
    """The n-gram of ``output`` whose count most exceeds its count in ``target``, and its count in output."""
    grams = Counter(tuple(output[i:i + n]) for i in range(len(output) - n + 1))
    ref = Counter(tuple(target[i:i + n]) for i in range(len(target) - n + 1))
    best, best_excess, count = None, 0, 0
    for g, c in grams.items():
        excess = c - ref.get(g, 0)
        if excess > best_excess or (excess == best_excess and best is not None and c > count):
            best, best_excess, count = g, excess, c
    return (best, count) if best_excess > 0 else (None, 0)


def detect_loop(output: Sequence[int], target: Sequence[int], n: int = 4, min_repeats: int = 2) -> bool:
    """True when some n-gram occurs at least ``min_repeats`` times in ``output`` and more often than in ``target``."""
    gram, count = excess_ngram(list(output), list(target), n)
    return gram is not None and count >= min_repeats


@dataclass
class ReconstructionReport:
    """One row of the report (see the module docstring); ``output`` is the decoded text."""

    objective: str
    target_chars: int
    target_tokens: int
    exact: bool
    first_divergence: int
    tf_loss: float
    tf_accuracy: float
    seq_rep_4: float
    target_seq_rep_4: float
    loop: bool
    loop_ngram: str
    steps: int
    seconds: float
    output: str

    def as_row(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "EXACT" if self.exact else f"diverges at token {self.first_divergence}/{self.target_tokens}"
        loop = f", loop on {self.loop_ngram!r}" if self.loop else ""
        return (f"[{self.objective}] teacher-forced loss {self.tf_loss:.4f} nats/token, accuracy "
                f"{self.tf_accuracy:.3f}; greedy: {verdict}{loop} ({self.steps} steps, {self.seconds:.1f} s)")


def reconstruction_report(output: torch.Tensor | Sequence[int], target: torch.Tensor | Sequence[int], *,
                          objective: str = "", tf_loss: float = float("nan"), tf_accuracy: float = float("nan"),
                          steps: int = 0, seconds: float = 0.0, decode=None, target_chars: int | None = None,
                          n: int = 4) -> ReconstructionReport:
    """A :class:`ReconstructionReport` from the decoded ids and the target ids (``decode(ids) -> str``
    renders texts; without it ids are shown)."""
    out = output.tolist() if torch.is_tensor(output) else list(output)
    tgt = target.tolist() if torch.is_tensor(target) else list(target)
    render = decode or (lambda ids: " ".join(map(str, ids)))
    gram, count = excess_ngram(out, tgt, n)
    loop = gram is not None and count >= 2
    return ReconstructionReport(
        objective=objective, target_chars=int(target_chars if target_chars is not None else len(render(tgt))),
        target_tokens=len(tgt), exact=bool(exact_match(out, tgt) == 1.0), first_divergence=int(first_divergence(out, tgt)),
        tf_loss=float(tf_loss), tf_accuracy=float(tf_accuracy), seq_rep_4=float(seq_rep_n(out, n)),
        target_seq_rep_4=float(seq_rep_n(tgt, n)), loop=bool(loop), loop_ngram=render(list(gram)) if loop else "",
        steps=int(steps), seconds=float(seconds), output=render(out))


def report_fit(result, decode=None, target_chars: int | None = None) -> ReconstructionReport:
    """The report of a :class:`latentar.softprompt.fit.FitResult`."""
    return reconstruction_report(result.output, result.target, objective=result.objective, tf_loss=result.tf_loss,
                                 tf_accuracy=result.tf_accuracy, steps=result.steps, seconds=result.seconds,
                                 decode=decode, target_chars=target_chars)
