"""Decoding a soft-prompted frozen LM: greedy, sampling, beam search, n-gram blocking, repetition penalty.

Every decoder runs ``[prompt, start, forced prefix]`` once into a KV cache (:meth:`SoftPrompt.prefill`)
and then feeds one token per step (:meth:`SoftPrompt.step`); beam search reorders the same cache
rows as beams are kept (``FrozenLM.reorder``). Nothing is recomputed.

Logit processors, applied to the next-token logits ``(B, V)`` before the choice, with the history
h = forced prefix + tokens generated so far:

* repetition penalty (Keskar et al. 2019, CTRL; as transformers' ``RepetitionPenaltyLogitsProcessor``):
  for every token c in h, ``l_c <- l_c / theta`` if ``l_c > 0`` else ``l_c * theta`` (theta > 1 discourages
  repeats);
* n-gram blocking (Paulus et al. 2018; fairseq / transformers ``no_repeat_ngram_size``): a token c is
  banned (``-inf``) when ``h[-(n-1):] + [c]`` already occurs as an n-gram of h, so the output never holds
  the same n-gram twice.

:func:`greedy_rows` and :func:`sample_rows` decode the B rows of a
:class:`~latentar.softprompt.prompt.PromptRows` at once, each after its own number of forced target
tokens (the batched fit's free runs, exactness checks and REINFORCE samples).

Beam search keeps the ``num_beams`` prefixes of highest total log-probability ``sum_t log softmax(l')_t``
(l' the processed logits) over fixed-length outputs (no EOS, so no length penalty); with one beam it is
greedy decoding.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

METHODS = ("greedy", "beam", "sample")


def _history(prefix: torch.Tensor | None, batch_size: int) -> list[list[int]]:
    if prefix is None or prefix.numel() == 0:
        return [[] for _ in range(batch_size)]
    prefix = prefix if prefix.dim() == 2 else prefix.unsqueeze(0).expand(batch_size, -1)
    return [list(map(int, row)) for row in prefix.tolist()]


def apply_repetition_penalty(logits: torch.Tensor, history: Sequence[Sequence[int]], penalty: float) -> torch.Tensor:
    """CTRL's penalty on every token already in each row's history; ``logits (B, V)`` -> ``(B, V)``."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {penalty}")
    if penalty == 1.0:
        return logits
    out = logits.clone()
    for b, h in enumerate(history):
        if h:
            idx = torch.tensor(sorted(set(h)), device=logits.device)
            vals = out[b, idx]
            out[b, idx] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return out


def banned_ngram_tokens(history: Sequence[int], n: int) -> set[int]:
    """Tokens c for which ``history[-(n-1):] + [c]`` is already an n-gram of ``history``."""
    if n < 1:
        raise ValueError(f"no_repeat_ngram_size must be >= 1 (0 = off), got {n}")
    if len(history) < n - 1:
        return set()
    if n == 1:
        return set(history)
    tail = tuple(history[len(history) - (n - 1):])
    return {history[i + n - 1] for i in range(len(history) - n + 1) if tuple(history[i:i + n - 1]) == tail}


def block_ngrams(logits: torch.Tensor, history: Sequence[Sequence[int]], n: int) -> torch.Tensor:
    """``-inf`` on every token that would repeat an n-gram of its row's history; ``(B, V)``."""
    if not n:
        return logits
    out = logits.clone()
    for b, h in enumerate(history):
        banned = banned_ngram_tokens(h, n)
        if banned:
            out[b, torch.tensor(sorted(banned), device=logits.device)] = float("-inf")
    return out


def process(logits: torch.Tensor, history, no_repeat_ngram_size: int = 0, repetition_penalty: float = 1.0) -> torch.Tensor:
    """Repetition penalty, then n-gram blocking (the order transformers applies them in)."""
    logits = apply_repetition_penalty(logits, history, repetition_penalty)
    return block_ngrams(logits, history, no_repeat_ngram_size)


def _check(length: int, prompt, prefix) -> torch.Tensor | None:
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    k = 0 if prefix is None else int(torch.as_tensor(prefix).shape[-1])
    prompt.lm.check_length(prompt.n_virtual + 1 + k + length)
    return None if prefix is None else torch.as_tensor(prefix, device=prompt.device).long()


@torch.no_grad()
def greedy(prompt, length: int, prefix: torch.Tensor | None = None, batch_size: int = 1,
           no_repeat_ngram_size: int = 0, repetition_penalty: float = 1.0) -> torch.Tensor:
    """``(B, length)`` tokens, each the argmax of the processed logits, after the forced ``prefix``."""
    prefix = _check(length, prompt, prefix)
    if prefix is not None and prefix.dim() == 2:
        batch_size = prefix.shape[0]
    history = _history(prefix, batch_size)
    logits, cache = prompt.prefill(batch_size, prefix)
    out = torch.empty(batch_size, length, dtype=torch.long, device=prompt.device)
    for t in range(length):
        token = process(logits.float(), history, no_repeat_ngram_size, repetition_penalty).argmax(-1)  # (B,)
        out[:, t] = token
        for b in range(batch_size):
            history[b].append(int(token[b]))
        if t + 1 < length:
            logits, cache = prompt.step(token, cache)
    return out


@torch.no_grad()
def greedy_rows(prompt, x: torch.Tensor, forced: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """``(B, length)`` greedy tokens, row b forced to ``x[b, :forced[b]]`` first (B prompts, one cache).

    ``prompt``: a :class:`~latentar.softprompt.prompt.PromptRows` of B rows (or a SoftPrompt for
    B = 1); ``x (B, >= length)`` target ids; ``forced (B,)`` how many target tokens each row is fed
    before decoding starts (0: plain greedy). Row b equals ``greedy(prompt_b, length - k_b,
    prefix=x[b, :k_b])`` after its forced tokens: the shortest forced prefix is prefilled in one pass,
    the rest are fed one token per step in place of the argmax.
    """
    x = torch.as_tensor(x, device=prompt.device).long()
    length = int(x.shape[1] if length is None else length)
    forced = torch.as_tensor(forced, device=prompt.device).long().view(-1)
    if x.dim() != 2 or forced.shape[0] != x.shape[0] or length > x.shape[1]:
        raise ValueError(f"greedy_rows needs x (B, >= length) and forced (B,); got x {tuple(x.shape)}, "
                         f"forced {tuple(forced.shape)}, length {length}")
    if int(forced.min()) < 0 or int(forced.max()) > length:
        raise ValueError(f"forced prefix lengths must lie in 0..{length}, got {forced.tolist()}")
    B = x.shape[0]
    out = x[:, :length].clone()
    start = int(forced.min())
    if start == length:
        return out
    prompt.lm.check_length(prompt.n_virtual + 1 + length)
    logits, cache = prompt.prefill(B, x[:, :start] if start else None)
    for t in range(start, length):
        token = torch.where(t < forced, x[:, t], logits.float().argmax(-1))  # (B,)
        out[:, t] = token
        if t + 1 < length:
            logits, cache = prompt.step(token, cache)
    return out


@torch.no_grad()
def sample(prompt, length: int, num: int, temperature: float = 1.0, prefix: torch.Tensor | None = None,
           generator: torch.Generator | None = None, with_greedy: bool = False) -> torch.Tensor:
    """``(num, length)`` tokens drawn from softmax(logits / temperature), rows sharing one prefill.

    ``with_greedy``: one more row, last, decoded greedily in the same batch (``(num + 1, length)``;
    the sampled rows are the same as without it, given the generator).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling (use greedy for 0), got {temperature}")
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    prefix = _check(length, prompt, prefix)
    rows = num + int(with_greedy)
    logits, cache = prompt.prefill(1, None if prefix is None else prefix.reshape(1, -1)[:1])
    cache = prompt.lm.reorder(cache, torch.zeros(rows, dtype=torch.long, device=prompt.device))  # one prefill
    logits = logits.expand(rows, -1)
    out = torch.empty(rows, length, dtype=torch.long, device=prompt.device)
    for t in range(length):
        probs = (logits[:num].float() / temperature).softmax(-1)
        dev = generator.device if generator is not None else probs.device
        token = torch.multinomial(probs.to(dev), 1, generator=generator).view(-1).to(probs.device)
        if with_greedy:
            token = torch.cat([token, logits[num:].argmax(-1)])
        out[:, t] = token
        if t + 1 < length:
            logits, cache = prompt.step(token, cache)
    return out


@torch.no_grad()
def sample_rows(prompt, x: torch.Tensor, forced: torch.Tensor, lengths: torch.Tensor, num: int,
                temperature: float, generators, with_greedy: bool = False) -> torch.Tensor:
    """``sample`` for B prompts at once: ``(B * R, T)``, R = ``num`` (+ 1 greedy row, last), row b's R rows
    together; each is ``x[b, :forced[b]]``, then ``lengths[b] - forced[b]`` tokens drawn as
    ``sample(prompt_b, ..., prefix=x[b, :forced[b]], generator=generators[b])`` draws them (one
    ``multinomial`` over the ``num`` rows per token from row b's generator), then ``x``'s padding.

    One prefill of the shortest forced prefix for the B prompts, the cache repeated R times; the
    rest of each forced prefix is fed one token per step.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling (use greedy for 0), got {temperature}")
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    x = torch.as_tensor(x, device=prompt.device).long()
    B, T = x.shape
    forced = torch.as_tensor(forced, device=prompt.device).long().view(-1)
    lengths = torch.as_tensor(lengths, device=prompt.device).long().view(-1)
    if forced.shape[0] != B or lengths.shape[0] != B or len(generators) != B:
        raise ValueError(f"sample_rows needs forced, lengths and generators for each of the {B} rows")
    if bool((forced >= lengths).any()) or bool((lengths > T).any()):
        raise ValueError("every row must sample at least one token: forced < length <= T")
    prompt.lm.check_length(prompt.n_virtual + 1 + T)
    R = num + int(with_greedy)
    rep = torch.arange(B, device=prompt.device).repeat_interleave(R)
    out = x[rep].clone()
    start, end = int(forced.min()), int(lengths.max())
    logits, cache = prompt.prefill(B, x[:, :start] if start else None)
    cache = prompt.lm.reorder(cache, rep)
    logits = logits[rep]
    f, ln = forced.tolist(), lengths.tolist()
    for t in range(start, end):
        token = out[:, t].clone()  # forced (or padding) unless drawn below
        scores = logits.float().view(B, R, -1)
        for b in range(B):
            if f[b] <= t < ln[b]:
                probs = (scores[b, :num] / temperature).softmax(-1)
                g = generators[b]
                dev = g.device if g is not None else probs.device
                drawn = torch.multinomial(probs.to(dev), 1, generator=g).view(-1).to(probs.device)
                if with_greedy:
                    drawn = torch.cat([drawn, scores[b, num:].argmax(-1)])
                token[b * R:(b + 1) * R] = drawn
        out[:, t] = token
        if t + 1 < end:
            logits, cache = prompt.step(token, cache)
    return out


@torch.no_grad()
def beam_search(prompt, length: int, num_beams: int = 4, prefix: torch.Tensor | None = None,
                no_repeat_ngram_size: int = 0, repetition_penalty: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``(length,)`` continuation of one prefix, and the ``(num_beams,)`` final beam scores.

    Beams start as one row (score 0); each step every beam proposes its ``num_beams`` best tokens and
    the ``num_beams`` best (score + log p) survive; the cache rows follow their beams.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    prefix = _check(length, prompt, prefix)
    if prefix is not None and prefix.dim() == 2:
        if prefix.shape[0] != 1:
            raise ValueError("beam_search decodes one sequence; pass a single prefix")
        prefix = prefix[0]
    base = _history(prefix, 1)[0]
    logits, cache = prompt.prefill(1, prefix)
    dev = prompt.device
    scores = torch.zeros(1, device=dev)
    seqs = torch.empty(1, 0, dtype=torch.long, device=dev)
    for t in range(length):
        history = [base + row for row in seqs.tolist()]
        logp = process(logits.float(), history, no_repeat_ngram_size, repetition_penalty).log_softmax(-1)  # (W, V)
        total = (scores[:, None] + logp).view(-1)  # (W * V,)
        k = min(num_beams, int(torch.isfinite(total).sum()))
        if k == 0:
            raise RuntimeError("every continuation is blocked; lower no_repeat_ngram_size")
        scores, flat = total.topk(k)
        beam, token = flat // logp.shape[-1], flat % logp.shape[-1]
        seqs = torch.cat([seqs[beam], token[:, None]], dim=1)
        if t + 1 < length:
            cache = prompt.lm.reorder(cache, beam)
            logits, cache = prompt.step(token, cache)
    return seqs[0], scores


def decode(prompt, length: int, method: str = "greedy", prefix: torch.Tensor | None = None, num_beams: int = 4,
           no_repeat_ngram_size: int = 0, repetition_penalty: float = 1.0, temperature: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``(length,)`` tokens of one continuation by ``method`` ("greedy", "beam" or "sample")."""
    if method == "greedy":
        return greedy(prompt, length, prefix, 1, no_repeat_ngram_size, repetition_penalty)[0]
    if method == "beam":
        return beam_search(prompt, length, num_beams, prefix, no_repeat_ngram_size, repetition_penalty)[0]
    if method == "sample":
        return sample(prompt, length, 1, temperature, prefix, generator)[0]
    raise ValueError(f"unknown decoding method {method!r}; expected one of {METHODS}")
